"""Data and measurements of `bench.suite`: the models' evaluation / calibration / latency inputs,
validity (onnx.checker full_check + ONNX Runtime), parameters and FLOPs, fidelity, and latency of
every result interleaved in one process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CNNS = ("resnet", "mobile", "yolo", "mlp")
TEXT = ("minilm", "tinylm")
CLASSIFIERS = ("resnet", "mobile")
# Batches of the latency runs, large enough that compute, not per-node overhead, decides the time
# on these small nets (see bench/speedup.py); text models: 8 sequences
CALIB_SAMPLES = {"mlp": 512}  # default 64; least-squares compensation of 128-wide layers needs more rows
LATENCY_BATCH = {"resnet": 32, "mobile": 64, "yolo": 32, "mlp": 16384, "minilm": 8, "tinylm": 8}
TINYLM_SEQ = 128  # the context tinylm was trained and is evaluated at


@dataclass
class Bench:
    """One model: its dense ONNX file and the data every tool and measurement uses."""

    name: str
    dense: Path
    shapes: dict  # input shapes of the parameter / FLOPs count (batch 1)
    eval_feed: dict
    calib: Path  # .npz, onnxprune --calib; the same data feeds onnxsim's and Torch-Pruning's calibration
    latency_feed: dict
    info: dict = field(default_factory=dict)
    state: str | None = None  # the torch module's state_dict (CNNs, MLP), for Torch-Pruning's children
    sparse_calib: Path | None = None  # the first samples of `calib`, for the (costly) calibrated 2:4 rows


def subset_calibration(bench: Bench, samples: int) -> Path:
    """The first `samples` of the calibration set, for the calibrated 2:4 rows (SparseGPT's cost
    grows with the data; every tool of the 2:4 group gets this same subset)."""
    path = bench.calib.with_name(bench.calib.stem + f"_{samples}.npz")
    with np.load(bench.calib) as data:
        np.savez(path, **{name: data[name][:samples] for name in data.files})
    bench.sparse_calib = path
    bench.info["calibration_2_4"] = f"the first {samples} samples of the calibration set"
    return path


def prepare(name: str, work: Path, eval_samples: int, calib_samples: int) -> Bench:
    """Export `name` (torchscript, like models.build's tests) and draw its data."""
    import models

    dense = models.build(name, "torchscript", work / f"{name}.onnx")
    calib = work / f"{name}_calib.npz"
    if name == "minilm":
        from models import minilm

        eval_feed = minilm.tokenize(minilm.sample_sentences(eval_samples, seed=0))
        np.savez(calib, **minilm.tokenize(minilm.sample_sentences(calib_samples, seed=1)))
        latency_feed = {k: v[:LATENCY_BATCH[name]] for k, v in eval_feed.items()}
        shapes = {n: (1, 64) for n in minilm.INPUT_NAMES}
        info = {"eval": f"{eval_samples} held-out sentences (sample_sentences seed 0)",
                "calibration": f"{calib_samples} other sentences (seed 1)", "fidelity": "mean cosine of embeddings"}
    elif name == "tinylm":
        from models import tinylm

        train, heldout = tinylm.dataset("train"), tinylm.dataset("heldout")
        starts = np.random.default_rng(0).integers(0, len(train) - TINYLM_SEQ, size=calib_samples)
        np.savez(calib, input_ids=np.stack([train[i:i + TINYLM_SEQ] for i in starts]).astype(np.int64))
        eval_feed = {}  # perplexity_onnx reads the held-out split itself
        starts = np.arange(LATENCY_BATCH[name]) * TINYLM_SEQ
        latency_feed = {"input_ids": np.stack([heldout[i:i + TINYLM_SEQ] for i in starts]).astype(np.int64)}
        shapes = {"input_ids": (1, TINYLM_SEQ)}
        info = {"eval": f"held-out perplexity (next byte, {len(heldout):,} bytes, windows of {TINYLM_SEQ})",
                "calibration": f"{calib_samples} windows of {TINYLM_SEQ} bytes of the training text",
                "fidelity": "held-out perplexity (lower is better)"}
    else:
        spec = models.SPECS[name]
        eval_feed = models.example_inputs(name, batch=eval_samples, seed=5)
        np.savez(calib, **models.example_inputs(name, batch=calib_samples, seed=1))
        latency_feed = models.example_inputs(name, batch=LATENCY_BATCH[name], seed=7)
        shapes = {spec.input_name: spec.input_shape}
        info = {"eval": f"{eval_samples} random inputs (seed 5)",
                "calibration": f"{calib_samples} random inputs (seed 1)",
                "fidelity": "mean cosine of all outputs" + (" and top-1 agreement" if name in CLASSIFIERS else ""),
                "caveat": "seeded random weights, not trained: agreement with the dense model says little "
                          "about a trained model's accuracy"}
    info["latency_batch"] = LATENCY_BATCH[name]
    info["flops_shapes"] = shapes
    state = None
    if name in CNNS:
        import torch

        state = str(work / f"{name}_state.pt")
        torch.save(models.torch_module(name).state_dict(), state)
    return Bench(name, dense, shapes, eval_feed, calib, latency_feed, info, state)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def validity(path: Path, bench: Bench) -> dict:
    """onnx.checker with full_check (shape inference strict) and one ONNX Runtime run."""
    import onnx
    import onnxruntime as ort

    result: dict[str, Any] = {}
    try:
        onnx.checker.check_model(str(path), full_check=True)
        result["checker"] = "ok"
    except Exception as exc:  # any checker complaint is the result
        result["checker"] = first_line(exc)
    try:
        feed = bench.latency_feed
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxsim's outputs can carry unused initializers: one warning each
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feed)
        result["ort"] = "ok"
    except Exception as exc:
        result["ort"] = first_line(exc)
    result["valid"] = result["checker"] == "ok" and result["ort"] == "ok"
    return result


def stats(path: Path, shapes: dict) -> dict:
    from onnxprune.check.stats import model_stats
    from onnxprune.io.model import Model

    counted = model_stats(Model.load(path), shapes)
    return {"params": int(counted["params"]), "flops": int(counted["flops"])}


def zero_fraction(path: Path) -> float:
    """Zeros among the weights of rank >= 2 (matmul and conv weights) that some node reads: the
    realized sparsity (onnxsim's 2:4 functions leave the dense originals behind, unused)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    used = {name for node in model.graph.node for name in node.input}
    zeros = total = 0
    for tensor in model.graph.initializer:
        if tensor.name in used and len(tensor.dims) >= 2 and tensor.data_type in (onnx.TensorProto.FLOAT,
                                                                                  onnx.TensorProto.FLOAT16):
            array = numpy_helper.to_array(tensor)
            zeros += int(np.count_nonzero(array == 0))
            total += array.size
    return zeros / total if total else 0.0


def session(path: Path, threads: int):
    """ORT CPU session with fixed intra-op threads and spinning off (see bench/README.md, speedup)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def outputs(path: Path, feed: dict, threads: int) -> list[np.ndarray]:
    return session(path, threads).run(None, feed)


def fidelity(bench: Bench, path: Path, reference: Any, threads: int) -> dict:
    """Agreement with the dense model (`reference`: `reference_outputs` of the dense file)."""
    if bench.name == "tinylm":
        from models import tinylm

        return {"perplexity": tinylm.perplexity_onnx(path, "heldout", seq=TINYLM_SEQ)}
    got = outputs(path, bench.eval_feed, threads)
    ref = np.concatenate([a.reshape(a.shape[0], -1) for a in reference], axis=1).astype(np.float64)
    out = np.concatenate([a.reshape(a.shape[0], -1) for a in got], axis=1).astype(np.float64)
    cosine = np.sum(ref * out, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1) + 1e-30)
    result = {"mean_cosine": float(np.mean(cosine)), "min_cosine": float(np.min(cosine))}
    if bench.name in CLASSIFIERS:
        result["top1_agreement"] = float(np.mean(reference[0].argmax(1) == got[0].argmax(1)))
    return result


def reference_outputs(bench: Bench, threads: int) -> Any:
    if bench.name == "tinylm":
        return None
    return outputs(bench.dense, bench.eval_feed, threads)


def latency(paths: dict[str, Path], feed: dict, runs: int, threads: int) -> dict[str, dict]:
    """Median latency of every model, interleaved run by run in one process (first key: dense)."""
    from onnxprune.measure import latency as lat

    sessions = {label: session(path, threads) for label, path in paths.items()}
    timing = lat.measure_interleaved(sessions, {label: feed for label in sessions}, warmup=3, runs=runs)
    dense = timing[next(iter(paths))]
    return {label: {"median_ms": t.median_ms, "p90_ms": t.p90_ms, "speedup": lat.speedup(dense, t)}
            for label, t in timing.items()}
