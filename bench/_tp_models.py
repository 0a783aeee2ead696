"""The models bench.torch_pruning compares on, each as a Case: the torch module for Torch-Pruning, its ONNX
export for onnxprune, calibration and evaluation data, and what Torch-Pruning must leave alone."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CNNS = ("resnet", "mobile", "yolo")
CLASSIFIERS = ("resnet", "mobile")
CNN_SHAPE = (1, 3, 64, 64)
TEXT_SEQ = 64  # sequence length of the FLOPs count for MiniLM (latency uses real sentences)
LATENCY_BATCH = {"minilm": 8, "resnet": 32, "mobile": 64, "yolo": 32}
CALIB_SAMPLES = 128
EVAL_SAMPLES = {"minilm": 128, "cnn": 64}
TAYLOR_BATCH = 32
TAYLOR_LOSS = {
    "minilm": "in-batch retrieval cross-entropy against the dense embeddings: logits = 20 * "
              "E_model @ E_dense^T over a batch of 32 calibration sentences, target = the same "
              "sentence (MultipleNegativesRanking-style self-distillation)",
    "resnet": "cross-entropy of the logits against the dense model's own top-1 class (pseudo-labels)",
    "mobile": "cross-entropy of the logits against the dense model's own top-1 class (pseudo-labels)",
    "yolo": "output energy: 0.5 * mean over the three head outputs of the squared activations",
}
def _requires_grad(model):
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model.eval()


def _split_c2f(model):
    """Torch-Pruning cannot prune the `cv1(x).chunk(2, 1)` of YOLOv8's C2f (its issue #147; an
    IndexError in the importance): its own YOLOv8 example swaps C2f for C2f_v2, where the two
    halves are two convolutions. The same rewrite here, weights copied, outputs unchanged."""
    import torch
    from torch import nn

    class C2fV2(nn.Module):
        def __init__(self, c2f):
            super().__init__()
            c = c2f.c
            self.cv0, self.cv1 = copy.deepcopy(c2f.cv1), copy.deepcopy(c2f.cv1)
            for conv, part in ((self.cv0, slice(0, c)), (self.cv1, slice(c, 2 * c))):
                conv.conv.weight = nn.Parameter(conv.conv.weight.data[part].clone())
                conv.conv.out_channels = c
                bn = conv.bn
                bn.weight = nn.Parameter(bn.weight.data[part].clone())
                bn.bias = nn.Parameter(bn.bias.data[part].clone())
                bn.running_mean = bn.running_mean[part].clone()
                bn.running_var = bn.running_var[part].clone()
                bn.num_features = c
            self.cv2, self.m = c2f.cv2, c2f.m

        def forward(self, x):
            y = [self.cv0(x), self.cv1(x)]
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    for name, module in list(model.named_modules()):
        if type(module).__name__ == "C2f":
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, C2fV2(module))
    return model


@dataclass
class Case:
    """One model: the dense ONNX file, data, and how to prune / export / score its torch module."""

    label: str
    dense_path: Path
    feed: dict  # held-out evaluation inputs
    latency_feed: dict
    calib: Path  # .npz for onnxprune --calib (the same data drives the Taylor gradients)
    shapes: dict  # input shapes of the FLOPs count
    base: Any  # the dense torch module, parameters requiring grad
    example: Any  # Torch-Pruning's tracing input
    ignored: Callable  # model -> layers Torch-Pruning leaves alone
    roots: list  # Torch-Pruning's root_module_types
    export: Callable  # (model, path) -> None, torchscript ONNX export like models.build
    taylor_loss: Callable  # model -> None, backward() of the Taylor loss over the calibration data
    classifier: bool = False


def minilm_case(work: Path) -> tuple[Case, dict]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    import models
    from models import _export
    from models import minilm as mini

    dense_path = models.build("minilm", "torchscript", work / "minilm.onnx")
    feed = mini.tokenize(mini.sample_sentences(EVAL_SAMPLES["minilm"], seed=0))
    calib_feed = mini.tokenize(mini.sample_sentences(CALIB_SAMPLES, seed=1))
    calib = work / "minilm_calib.npz"
    np.savez(calib, **calib_feed)
    base = _requires_grad(models.torch_module("minilm"))
    example = tuple(torch.from_numpy(feed[n][:4]) for n in mini.INPUT_NAMES)
    export_example = tuple(torch.from_numpy(v) for v in models.example_inputs("minilm", batch=2).values())

    def ignored(model):
        """Everything but the FFN up-projections: attention, embeddings, LayerNorms, output.dense
        (whose outputs are the residual width), the pooler. Only the FFN groups remain."""
        ffn = {id(layer.intermediate.dense) for layer in model.bert.encoder.layer}
        return [m for m in model.modules()
                if isinstance(m, (nn.Linear, nn.Embedding, nn.LayerNorm)) and id(m) not in ffn]

    def export(model, path):
        _export.export(model, export_example, mini.INPUT_NAMES, mini.OUTPUT_NAMES, "torchscript", path,
                       axes={n: {1: _export.SEQ} for n in mini.INPUT_NAMES})

    batches = [tuple(torch.from_numpy(calib_feed[n][i:i + TAYLOR_BATCH]) for n in mini.INPUT_NAMES)
               for i in range(0, CALIB_SAMPLES, TAYLOR_BATCH)]
    with torch.no_grad():
        targets = [base(*batch) for batch in batches]

    def taylor_loss(model):
        for batch, target in zip(batches, targets):
            emb = model(*batch)
            loss = F.cross_entropy(20.0 * emb @ target.T, torch.arange(len(emb)), reduction="sum")
            (loss / CALIB_SAMPLES).backward()

    latency_feed = {n: feed[n][:LATENCY_BATCH["minilm"]] for n in mini.INPUT_NAMES}
    shapes = {n: (1, TEXT_SEQ) for n in mini.INPUT_NAMES}
    case = Case("minilm", dense_path, feed, latency_feed, calib, shapes, base, example, ignored,
                [nn.Linear], export, taylor_loss)
    info = {"taylor_loss": TAYLOR_LOSS["minilm"], "flops_shape": shapes,
            "eval": f"{EVAL_SAMPLES['minilm']} sentences, sample_sentences(seed=0)",
            "calibration": f"{CALIB_SAMPLES} sentences, sample_sentences(seed=1)",
            "latency_batch": LATENCY_BATCH["minilm"], "notes": []}
    return case, info


def _cnn_ignored(name: str, model) -> list:
    """The output layers, whose channels are the model's outputs (onnxprune pins them)."""
    if name == "resnet":
        return [model.fc]
    if name == "mobile":
        return [model.classifier[2]]
    return [head[2] for branch in (model.detect.cv2, model.detect.cv3) for head in branch]


def cnn_case(name: str, work: Path) -> tuple[Case, dict]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    import models
    from models import _export

    spec = models.SPECS[name]
    classifier = name in CLASSIFIERS
    dense_path = models.build(name, "torchscript", work / f"{name}.onnx")
    feed = models.example_inputs(name, batch=EVAL_SAMPLES["cnn"], seed=5)
    calib_array = models.example_inputs(name, batch=CALIB_SAMPLES, seed=1)[spec.input_name]
    calib = work / f"{name}_calib.npz"
    np.savez(calib, **{spec.input_name: calib_array})
    base = _requires_grad(models.torch_module(name))
    notes = []
    if name == "yolo":
        x = torch.from_numpy(feed[spec.input_name][:4])
        with torch.no_grad():
            before = base(x)
            base = _split_c2f(base)
            after = base(x)
        diff = max(float((a - b).abs().max()) for a, b in zip(before, after))
        notes.append(f"Torch-Pruning prunes a rewritten copy: C2f -> C2f_v2 (cv1 split into two convs, "
                     f"no chunk), outputs unchanged (max abs diff {diff:.1e})")
    example = torch.from_numpy(models.example_inputs(name, batch=2)[spec.input_name])

    def export(model, path):
        _export.export(model, (example,), spec.inputs, spec.output_names, "torchscript", path)

    batches = [torch.from_numpy(calib_array[i:i + TAYLOR_BATCH]) for i in range(0, CALIB_SAMPLES, TAYLOR_BATCH)]
    with torch.no_grad():
        labels = [base(x).argmax(1) for x in batches] if classifier else None

    def taylor_loss(model):
        for index, x in enumerate(batches):
            out = model(x)
            if classifier:
                loss = F.cross_entropy(out, labels[index], reduction="sum")
            else:
                loss = sum(0.5 * o.pow(2).flatten(1).mean(1).sum() for o in out) / len(out)
            (loss / CALIB_SAMPLES).backward()

    latency_feed = {spec.input_name: models.example_inputs(name, batch=LATENCY_BATCH[name], seed=7)[spec.input_name]}
    shapes = {spec.input_name: CNN_SHAPE}
    case = Case(name, dense_path, feed, latency_feed, calib, shapes, base, example,
                lambda model: _cnn_ignored(name, model), [nn.Conv2d, nn.Linear], export, taylor_loss, classifier)
    info = {"taylor_loss": TAYLOR_LOSS[name], "flops_shape": shapes, "notes": notes,
            "eval": f"{EVAL_SAMPLES['cnn']} inputs, example_inputs(seed=5)",
            "calibration": f"{CALIB_SAMPLES} inputs, example_inputs(seed=1)",
            "latency_batch": LATENCY_BATCH[name]}
    return case, info
