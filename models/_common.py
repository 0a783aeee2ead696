"""Shared helpers for the architecture modules: deterministic init and non-trivial BatchNorm.

Every model is built the same way (see :func:`finalize`):

1. ``torch.manual_seed(seed)`` before the module is constructed (default PyTorch init);
2. BN affine parameters are randomized (weight U(0.6, 1.4), bias N(0.5, 0.2); the positive
   bias keeps ReLU/SiLU units mostly active, which makes the random nets far less chaotic:
   float32 rounding noise is amplified ~20x instead of ~100x in yolo);
3. BN running statistics are *calibrated* on a fixed random batch (one forward in train
   mode with a cumulative average), so activations stay O(1) through the network, then
   perturbed a little (mean += N(0, 0.05) * std, var *= U(0.8, 1.25)) so they are not exact;
   no BN is an identity, and folding/pruning code cannot get away with ignoring it;
4. the module is put in eval mode with ``requires_grad`` off;
5. optional *readout* layers (classifier Linears, detection-head output convs, the last
   Linear of an MLP) are rescaled so that on the calibration batch each output channel has
   std ``readout_std`` (1 for all models) and a small random mean (N(0, 0.3) * readout_std).
   Random deep nets otherwise give logits that barely depend on the input (global pooling
   averages the variation away); after this the outputs are O(1), input-dependent and not
   saturated.

The calibration batch is standard normal, seed ``seed + 1`` (``example_inputs`` uses seed 0).
"""

from __future__ import annotations

import numpy as np

SEED = 0
BN_WEIGHT = (0.6, 1.4)  # uniform range of the randomized BN gamma
BN_BIAS_MEAN = 0.5  # mean of the randomized BN beta (> 0: see the module docstring)
BN_BIAS_STD = 0.2  # its std


def seeded_input(shape: tuple[int, ...], seed: int = SEED) -> np.ndarray:
    """Standard-normal float32 array, reproducible from ``seed``."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def finalize(module, calib_shape: tuple[int, ...], readouts: tuple[tuple[str, ...], ...] = (),
             readout_std: float = 1.0, seed: int = SEED):
    """Randomize and calibrate BatchNorm layers, switch to eval mode, calibrate the
    ``readouts`` (stages of names of Linear / Conv2d submodules, calibrated stage after
    stage, the layers of one stage from one forward pass); see the module docstring."""
    import torch
    from torch import nn

    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    gen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for bn in bns:  # random affine first, so the calibration below sees it
            c = bn.num_features
            bn.weight.copy_(torch.empty(c).uniform_(*BN_WEIGHT, generator=gen))
            bn.bias.copy_(torch.randn(c, generator=gen) * BN_BIAS_STD + BN_BIAS_MEAN)
        batch = torch.from_numpy(seeded_input(calib_shape, seed + 1))
        if bns:
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average: one batch gives its exact stats
            module.train()
            module(batch)
        for bn in bns:  # then move the running stats off the calibrated values a little
            c = bn.num_features
            bn.momentum = 0.1
            bn.running_mean.add_(torch.randn(c, generator=gen) * 0.05 * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty(c).uniform_(0.8, 1.25, generator=gen))
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    for stage in readouts:
        _calibrate_readouts(module, [module.get_submodule(n) for n in stage], batch, gen,
                            readout_std)
    return module


def _calibrate_readouts(module, layers, batch, gen, target_std: float) -> None:
    """Rescale each of ``layers`` (Linear: channels last; Conv2d: channels dim 1), from one
    forward pass on ``batch``, so that its output has per-channel std ``target_std`` and mean
    N(0, 0.3) * target_std. The layers must not feed one another."""
    import torch
    from torch import nn

    seen = {}
    handles = [layer.register_forward_hook(lambda m, _i, out: seen.__setitem__(m, out))
               for layer in layers]
    with torch.no_grad():
        module(batch)
    for h in handles:
        h.remove()
    for layer in layers:
        out = seen[layer]
        cdim = 1 if isinstance(layer, nn.Conv2d) else out.dim() - 1
        dims = [d for d in range(out.dim()) if d != cdim]
        mean, std = out.mean(dims), out.std(dims).clamp_min(1e-6) / target_std
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        with torch.no_grad():
            layer.weight.div_(std.view(shape))
            offset = torch.randn(mean.shape, generator=gen) * 0.3 * target_std
            layer.bias.copy_((layer.bias - mean) / std + offset)
