"""Small real architectures, built with torch and exported to ONNX, for onnxprune's tests,
examples and benchmarks.

    >>> import models
    >>> models.NAMES
    ['resnet', 'mobile', 'yolo', 'mlp', 'mlp3d']
    >>> path = models.build("yolo", "dynamo", "out/yolo.onnx")   # needs torch (+ onnxscript)
    >>> feeds = models.example_inputs("yolo")                     # {"input": float32 array}

Every model is deterministic (seeded init, BatchNorm with randomized affine parameters and
calibrated-then-perturbed running statistics, outputs O(1); see ``_common``), in eval mode,
with dim 0 of its input and outputs named ``batch``. Builds are byte-for-byte reproducible
with the same torch/onnxscript versions. Both exporters fold BatchNorm into the Conv before
it; ``build(..., fold_bn=False)`` keeps BatchNormalization nodes. ``import models`` imports
neither torch nor numpy; ``build`` and ``torch_module`` import torch. ``python -m models
--help`` for the command line. ``ZOO`` holds the prebuilt ``yolo_tiny.onnx``.
"""

from __future__ import annotations

import functools
import importlib
import os
import pathlib
from dataclasses import dataclass

__all__ = [
    "EXPORTERS",
    "NAMES",
    "OPSETS",
    "SPECS",
    "ZOO",
    "build",
    "default_filename",
    "example_inputs",
    "torch_module",
]

EXPORTERS = ("torchscript", "dynamo")
# Default opset per exporter. dynamo: 18, the opset its translation library (onnxscript's
# torchlib) is written for; torch 2.13's own default is 20 (works too: build(opset=20)).
OPSETS = {"torchscript": 17, "dynamo": 18}
ZOO = pathlib.Path(__file__).resolve().parent / "zoo"


@dataclass(frozen=True)
class Spec:
    name: str
    module: str  # submodule of models
    factory: str  # function in it returning the (un-finalized) torch module
    input_shape: tuple[int, ...]  # shape of example_inputs; dim 0 is the batch
    output_names: tuple[str, ...]
    description: str
    # layers rescaled for O(1) outputs, in stages of independent layers (_common.finalize)
    readouts: tuple[tuple[str, ...], ...] = ()
    readout_std: float = 1.0  # their output std on the calibration batch
    input_name: str = "input"


SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("resnet", "resnet", "make", (1, 3, 64, 64), ("logits",),
         "ResNet-style CNN: BasicBlocks, stride-2 1x1 conv+BN shortcut, MaxPool, GAP, Linear",
         (("fc",),)),
    Spec("mobile", "mobile", "make", (1, 3, 64, 64), ("logits",),
         "MobileNetV3-style: inverted residuals, depthwise conv, SE, Hardswish, grouped conv",
         (("classifier.0",), ("classifier.2",))),
    Spec("yolo", "yolo", "make", (1, 3, 64, 64), ("p3", "p4", "p5"),
         "YOLOv8-style detector: C2f (chunk/cat), SPPF, Upsample+cat neck, 3 conv heads",
         (tuple(f"detect.{br}.{i}.2" for i in range(3) for br in ("cv2", "cv3")),)),
    Spec("mlp", "mlp", "make_mlp", (1, 64), ("output",),
         "MLP on [batch, 64]: Linear-ReLU-Linear-GELU-Linear-Tanh (Gemm)", (("4",),)),
    Spec("mlp3d", "mlp", "make_mlp3d", (1, 8, 32), ("output",),
         "MLP on [batch, 8, 32]: Linear-ReLU-Linear-GELU-Linear-Sigmoid (MatMul + Add)",
         (("4",),)),
)}
NAMES: list[str] = list(SPECS)

_CALIB_BATCH = 256  # BatchNorm / readout calibration batch (see _common.finalize)
_EXPORT_BATCH = 2  # example batch used for tracing (torch.export specializes a batch of 1)


def _spec(name: str) -> Spec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(NAMES)}") from None


def example_inputs(name: str, batch: int | None = None, seed: int = 0) -> dict:
    """Seeded standard-normal float32 inputs ``{input_name: numpy array}`` for ``name``.

    ``batch`` overrides dim 0 of the default shape (batch 1)."""
    from ._common import seeded_input

    spec = _spec(name)
    shape = spec.input_shape if batch is None else (batch, *spec.input_shape[1:])
    return {spec.input_name: seeded_input(shape, seed)}


def torch_module(name: str):
    """The torch.nn.Module behind ``name``: seeded, BN calibrated and randomized, eval mode,
    parameters with requires_grad=False. The same weights every call; each call returns a
    new copy, free to modify."""
    import copy

    return copy.deepcopy(_reference_module(_spec(name).name))


@functools.cache
def _reference_module(name: str):
    import torch

    from ._common import SEED, finalize

    spec = _spec(name)
    factory = getattr(importlib.import_module(f"{__name__}.{spec.module}"), spec.factory)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
        torch.manual_seed(SEED)
        module = factory()
        return finalize(module, (_CALIB_BATCH, *spec.input_shape[1:]), spec.readouts,
                        spec.readout_std, SEED)


def default_filename(name: str, exporter: str, *, dynamic_batch: bool = True,
                     fold_bn: bool = True) -> str:
    """``{name}_{exporter}[_b1][_bn].onnx``: _b1 for a static batch, _bn when BN is kept."""
    return f"{name}_{exporter}{'' if dynamic_batch else '_b1'}{'' if fold_bn else '_bn'}.onnx"


def build(name: str, exporter: str, path: str | os.PathLike, *, dynamic_batch: bool = True,
          opset: int | None = None, fold_bn: bool = True) -> pathlib.Path:
    """Export model ``name`` with ``exporter`` ("torchscript" or "dynamo") to ``path``, one
    self-contained .onnx file (no external data), and return its path. If ``path`` is an
    existing directory the file is ``path/default_filename(...)``.

    opset defaults to 17 (torchscript) / 18 (dynamo). With ``dynamic_batch`` (default) dim 0
    of the input and of every output is the symbolic dim "batch"; otherwise it is 1.
    Both exporters fold BatchNorm into the preceding Conv; ``fold_bn=False`` keeps
    BatchNormalization nodes in the graph (see ``_export.export``).
    """
    import torch

    from ._export import export

    spec = _spec(name)
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / default_filename(name, exporter, dynamic_batch=dynamic_batch,
                                       fold_bn=fold_bn)
    module = torch_module(name)
    batch = _EXPORT_BATCH if dynamic_batch else 1
    example = (torch.from_numpy(example_inputs(name, batch=batch)[spec.input_name]),)
    return export(module, example, (spec.input_name,), spec.output_names, exporter, path,
                  dynamic_batch=dynamic_batch, opset=opset, fold_bn=fold_bn)
