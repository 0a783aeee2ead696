"""The Torch-Pruning side of `bench.suite`: the torch module behind each `models/` net, what
Torch-Pruning may prune in it, the Taylor loss, and the export of the result.

Budgets are matched channel for channel with onnxprune (`bench.torch_pruning.tp_ratio_dict`):
Torch-Pruning removes exactly onnxprune's `floor(r * size)` channels from every group, so the
two tools' results have the same parameter and FLOP counts. Run inside `bench._suite_child`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._tp_models import _cnn_ignored, _requires_grad, _split_c2f
from .torch_pruning import _map_groups, _tp_kept, _tp_prune, tp_groups

TAYLOR_BATCH = 32
TAYLOR_LOSS = {
    "minilm": "in-batch retrieval cross-entropy of the embeddings against the dense embeddings (logits 20 * E @ "
              "E_dense^T, target the sentence itself), as in bench.torch_pruning",
    "tinylm": "next-byte cross-entropy on the calibration windows (the model's own training loss)",
    "resnet": "cross-entropy of the logits against the dense model's own top-1 class",
    "mobile": "cross-entropy of the logits against the dense model's own top-1 class",
    "yolo": "output energy 0.5 * mean(y^2) over the three heads",
    "mlp": "output energy 0.5 * mean(y^2)",
}
SCOPE = {
    "minilm": "FFN intermediate channels only (every other Linear, Embedding and LayerNorm ignored)",
    "tinylm": "SwiGLU FFN channels only (gate_proj/up_proj outputs = down_proj inputs)",
    "mlp": "both hidden layers (the output Linear ignored)",
}


@dataclass
class TPCase:
    name: str
    model: Any  # torch module, parameters requiring grad (Torch-Pruning traces through autograd)
    example: tuple  # tracing input
    ignored: Callable  # model -> layers Torch-Pruning leaves alone
    roots: list
    taylor_loss: Callable  # model -> None: backward() over the calibration data
    export_inputs: tuple  # torch tensors of the ONNX export, as models.build exports
    axes: dict | None = None


def _calibration(path: str | None) -> dict[str, np.ndarray]:
    if not path:
        return {}
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def torch_module(name: str, state: str | None = None):
    """`models.torch_module(name)`; with `state` (its state_dict, saved by the parent, which has
    the module at hand) the same module without re-running the seeded BatchNorm calibration of
    `models._common.finalize`, which only sets parameters and buffers and costs seconds."""
    import importlib

    import torch

    import models

    if state is None:
        return models.torch_module(name)
    spec = models.SPECS[name]
    module = getattr(importlib.import_module(f"models.{spec.module}"), spec.factory)()
    module.load_state_dict(torch.load(state))
    return module.eval()


def tp_case(name: str, calib: str | None, state: str | None = None) -> TPCase:
    """The torch module `models.torch_module(name)` ready for Torch-Pruning."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import models
    from models import _export

    spec = models.SPECS[name]
    model = _requires_grad(torch_module(name, state))
    if name == "yolo":
        model = _split_c2f(model)  # Torch-Pruning cannot prune C2f's chunk (see bench.torch_pruning)
    data = _calibration(calib)
    feeds = models.example_inputs(name, batch=2)
    export_inputs = tuple(torch.from_numpy(feeds[n]) for n in spec.inputs)
    axes = {n: {1: _export.SEQ} for n in (*spec.inputs, *spec.seq_outputs)} if spec.token_style else None
    batches = [tuple(torch.from_numpy(data[n][i:i + TAYLOR_BATCH]) for n in spec.inputs)
               for i in range(0, len(data[spec.inputs[0]]), TAYLOR_BATCH)] if data else []
    count = sum(len(b[0]) for b in batches) or 1

    if name == "minilm":
        def ignored(m):
            ffn = {id(layer.intermediate.dense) for layer in m.bert.encoder.layer}
            kinds = (nn.Linear, nn.Embedding, nn.LayerNorm)
            return [x for x in m.modules() if isinstance(x, kinds) and id(x) not in ffn]

        def loss(m, batch, target):
            emb = m(*batch)
            return F.cross_entropy(20.0 * emb @ target.T, torch.arange(len(emb)), reduction="sum")
    elif name == "tinylm":
        def ignored(m):
            ffn = {id(x) for layer in m.layers for x in (layer.mlp.gate_proj, layer.mlp.up_proj)}
            return [x for x in m.modules() if isinstance(x, (nn.Linear, nn.Embedding)) and id(x) not in ffn]

        def loss(m, batch, target):
            logits = m(batch[0][:, :-1])
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[0][:, 1:].reshape(-1),
                                   reduction="sum") / (batch[0].shape[1] - 1)
    elif name == "mlp":
        def ignored(m):
            return [m[4]]

        def loss(m, batch, target):
            return 0.5 * m(*batch).pow(2).flatten(1).mean(1).sum()
    else:
        def ignored(m):
            return _cnn_ignored(name, m)

        def loss(m, batch, target):
            out = m(*batch)
            if name in ("resnet", "mobile"):
                return F.cross_entropy(out, target.argmax(1), reduction="sum")
            return sum(0.5 * o.pow(2).flatten(1).mean(1).sum() for o in out) / len(out)

    def taylor_loss(m):
        with torch.no_grad():  # m is still the dense model: Taylor scores are taken before pruning
            targets = [m(*batch) for batch in batches]
        for batch, target in zip(batches, targets):
            (loss(m, batch, target) / count).backward()

    example = tuple(torch.from_numpy(feeds[n]) for n in spec.inputs)
    return TPCase(name, model, example, ignored, [nn.Linear] if spec.token_style or name == "mlp"
                  else [nn.Conv2d, nn.Linear], taylor_loss, export_inputs, axes)


def prune(case: TPCase, method: str, ratio: float, round_to: int = 1) -> dict:
    """Prune `case.model` in place with MetaPruner (local ranking), onnxprune's channel counts."""
    probe = copy.deepcopy(case.model)
    groups = tp_groups(probe, case.example, case.ignored(probe), case.roots)
    del probe
    mine = _map_groups(groups, case.model)
    _tp_prune(case.model, case.example, method, ratio, case.ignored(case.model), case.roots, mine,
              case.taylor_loss, round_to)
    return _tp_kept(case.model, mine)


def export(case: TPCase, path: Path) -> float:
    """Export the pruned module like `models.build` (torchscript, BN folded); return the max abs
    difference between torch and ONNX Runtime on the export inputs (the export is faithful)."""
    import onnxruntime as ort
    import torch

    import models
    from models import _export

    spec = models.SPECS[case.name]
    case.model.eval()
    _export.export(case.model, case.export_inputs, spec.inputs, spec.output_names, "torchscript", path,
                   axes=case.axes)
    with torch.no_grad():
        out = case.model(*case.export_inputs)
    out = [out] if isinstance(out, torch.Tensor) else list(out)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(spec.inputs, case.export_inputs)})
    return max(float(np.max(np.abs(a.numpy() - b))) for a, b in zip(out, got))
