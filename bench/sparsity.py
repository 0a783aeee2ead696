"""2:4 sparsity quality: magnitude vs Wanda vs SparseGPT on real weights.

    python -m bench.sparsity [--sentences 128] [--pattern 2:4] [--skip-minilm] [--skip-tinylm]

Each model is sparsified with `onnxprune prune --sparse PATTERN --criterion C` (Wanda and SparseGPT
with calibration data; magnitude without), every eligible Conv/MatMul/Gemm weight in TensorRT's
pattern, nothing removed. Measured in one process:
- all-MiniLM-L6-v2: mean and min cosine similarity between the dense and sparse sentence embeddings
  of real English sentences (calibration: 128 other sentences), plus the share of weights eligible
  and of parameters made sparse;
- tinylm: held-out perplexity (next byte; calibration: 64 windows of 128 bytes of the training text).
Results go to bench/results/sparsity.json. No TensorRT here: this measures accuracy, not speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import onnxprune
from onnxprune.check import runtime
from onnxprune.io.model import Model

from ._common import machine_facts, table, write_results

CRITERIA = ("magnitude", "wanda", "sparsegpt")


def _sparsify(source: Path, target: Path, pattern: str, criterion: str, calib: Path) -> dict:
    options = onnxprune.PruneOptions(validate=False, sparse=pattern, criterion=criterion,
                                     calib=None if criterion == "magnitude" else str(calib))
    started = time.perf_counter()
    report = onnxprune.prune(source, target, options)
    sparsity = report["sparsity"]
    weights = sparsity["sparse_weights"] + sparsity["ineligible_weights"]
    zeros = sum(int(w.numpy().size - np.count_nonzero(w.numpy())) for w in Model.load(target).weights.values())
    return {
        "criterion": criterion,
        "seconds": round(time.perf_counter() - started, 1),
        "sparse_weights": sparsity["sparse_weights"],
        "candidate_weights": weights,
        "eligible_fraction": sparsity["sparse_weights"] / max(weights, 1),
        "sparse_params": sparsity["sparse_params"],
        "total_params": sparsity["total_params"],
        "sparse_param_fraction": sparsity["sparse_params"] / max(sparsity["total_params"], 1),
        "zero_fraction": zeros / max(sparsity["total_params"], 1),
        "fallbacks": sorted({w.get("note", "") for w in sparsity["weights"] if w.get("note")}),
    }


def minilm(work: Path, sentences: int, pattern: str) -> list[dict]:
    import models
    from models import minilm as mini

    dense = models.build("minilm", "torchscript", work / "minilm.onnx")
    feed = mini.tokenize(mini.sample_sentences(sentences, seed=0))
    calib = work / "minilm_calib.npz"  # other sentences than the evaluation ones
    np.savez(calib, **mini.tokenize(mini.sample_sentences(128, seed=1)))
    reference = runtime.run(runtime.create_session(dense), feed)["sentence_embedding"]
    rows = [{"criterion": "dense", "mean_cosine": 1.0, "min_cosine": 1.0}]
    for criterion in CRITERIA:
        target = work / f"minilm_{criterion}.onnx"
        row = _sparsify(dense, target, pattern, criterion, calib)
        got = runtime.run(runtime.create_session(target), feed)["sentence_embedding"]
        cosine = np.sum(reference * got, axis=1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1))
        rows.append({**row, "mean_cosine": float(np.mean(cosine)), "min_cosine": float(np.min(cosine))})
        print(f"  minilm {criterion}: mean cosine {rows[-1]['mean_cosine']:.4f} ({row['seconds']} s)", flush=True)
    return rows


def tinylm(work: Path, pattern: str) -> list[dict]:
    import models
    from models import tinylm as lm

    dense = models.build("tinylm", "torchscript", work / "tinylm.onnx")
    train = lm.dataset("train")
    windows = np.random.default_rng(0).integers(0, len(train) - 128, size=64)
    calib = work / "tinylm_calib.npz"
    np.savez(calib, input_ids=np.stack([train[i:i + 128] for i in windows]).astype(np.int64))
    rows = [{"criterion": "dense", "heldout_perplexity": lm.perplexity_onnx(dense, "heldout")}]
    for criterion in CRITERIA:
        target = work / f"tinylm_{criterion}.onnx"
        row = _sparsify(dense, target, pattern, criterion, calib)
        rows.append({**row, "heldout_perplexity": lm.perplexity_onnx(target, "heldout")})
        print(f"  tinylm {criterion}: perplexity {rows[-1]['heldout_perplexity']:.3f} ({row['seconds']} s)",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--pattern", default="2:4", help="N:M or a fraction of zeros (default 2:4)")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-tinylm", action="store_true")
    args = parser.parse_args(argv)
    results: dict = {"machine": machine_facts(), "pattern": args.pattern,
                     "note": "every eligible weight sparsified, nothing removed; accuracy only (no TensorRT)"}
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as folder:
        work = Path(folder)
        if not args.skip_minilm:
            rows = results["minilm"] = minilm(work, args.sentences, args.pattern)
            print(f"\nall-MiniLM-L6-v2, {args.pattern}: sentence embeddings of {args.sentences} sentences")
            print(table(["criterion", "mean cos", "min cos", "eligible weights", "params sparse", "zeros", "s"],
                        [[r["criterion"], r["mean_cosine"], r["min_cosine"],
                          f"{r['sparse_weights']}/{r['candidate_weights']}" if "sparse_weights" in r else None,
                          r.get("sparse_param_fraction"), r.get("zero_fraction"), r.get("seconds")] for r in rows]))
        if not args.skip_tinylm:
            rows = results["tinylm"] = tinylm(work, args.pattern)
            print(f"\ntinylm, {args.pattern}: held-out perplexity (next byte)")
            print(table(["criterion", "perplexity", "eligible weights", "params sparse", "zeros", "s"],
                        [[r["criterion"], r["heldout_perplexity"],
                          f"{r['sparse_weights']}/{r['candidate_weights']}" if "sparse_weights" in r else None,
                          r.get("sparse_param_fraction"), r.get("zero_fraction"), r.get("seconds")] for r in rows]))
    print(f"\nwrote {write_results('sparsity.json', results)}")


if __name__ == "__main__":
    main()
