"""``mlp`` and ``mlp3d``: plain multilayer perceptrons.

``mlp``:   input ``input`` [batch, 64]:
           Linear(64,128)-ReLU-Linear(128,128)-GELU-Linear(128,16)-Tanh -> ``output`` [batch, 16].
           2-D Linears: the exporters emit Gemm.
``mlp3d``: input ``input`` [batch, 8, 32] (batch, seq, features):
           Linear(32,64)-ReLU-Linear(64,64)-GELU-Linear(64,16)-Sigmoid -> ``output`` [batch, 8, 16].
           3-D Linears: the exporters emit MatMul(+Add) with a transposed weight.
"""

from __future__ import annotations

MLP_INPUT_SHAPE = (1, 64)
MLP3D_INPUT_SHAPE = (1, 8, 32)
OUTPUT_NAMES = ("output",)


def _mlp(d_in: int, hidden: int, d_out: int, last_act: str):
    from torch import nn

    layers = [nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.GELU(),
              nn.Linear(hidden, d_out), nn.Tanh() if last_act == "tanh" else nn.Sigmoid()]
    net = nn.Sequential(*layers)
    # No BN to calibrate: scale weights so pre-activations stay O(1) for a N(0, 1) input.
    import torch

    with torch.no_grad():
        for i, m in enumerate(layers):
            if isinstance(m, nn.Linear):
                gain = 2.0 if isinstance(layers[i + 1], nn.ReLU) else 1.5
                m.weight.normal_(0.0, (gain / m.in_features) ** 0.5)
                m.bias.normal_(0.0, 0.1)
    return net


def make_mlp():
    return _mlp(64, 128, 16, "tanh")


def make_mlp3d():
    return _mlp(32, 64, 16, "sigmoid")
