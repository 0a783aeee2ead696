"""Transformer pruning quality and speed: all-MiniLM-L6-v2 sentence embeddings and the tiny LM.

    python -m bench.transformers [--sentences 128] [--skip-tinylm] [--skip-minilm]

For each mode (heads, FFN channels, whole residual blocks, combined) it prunes with onnxprune, with
magnitude scores and, for the modes marked "calib", with calibration data (Wanda-style activation
scores, or head contributions, plus least-squares compensation), then measures in one process:
- MiniLM: mean cosine similarity between the dense and pruned sentence embeddings of real English
  sentences, and ONNX Runtime CPU latency of both (interleaved);
- tinylm: held-out perplexity (next byte) of the dense and pruned model.
Results go to bench/results/transformers.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import onnxprune
from onnxprune.check import runtime
from onnxprune.measure import latency

from ._common import machine_facts, table, write_results

CALIB = "CALIB"  # replaced by the calibration file of the model at hand
SAME_FLOPS_AS = "SAME_FLOPS_AS"  # a sensitivity allocation with the FLOPs budget of another mode


def _modes() -> dict[str, dict]:
    modes: dict[str, dict] = {}
    for ratio in (0.2, 0.3, 0.4):
        modes[f"ffn {ratio} magnitude"] = {"structured": ratio}
        modes[f"ffn {ratio} activation"] = {"structured": ratio, "calib": CALIB, "compensate": False}
        modes[f"ffn {ratio} activation+comp"] = {"structured": ratio, "calib": CALIB}
        modes[f"ffn {ratio} sensitivity"] = {SAME_FLOPS_AS: f"ffn {ratio} magnitude", "calib": CALIB}
    modes.update({
        "heads 0.25": {"heads": 0.25},
        "heads 0.25 calib": {"heads": 0.25, "calib": CALIB, "criterion": "contribution"},
        "heads 0.5": {"heads": 0.5},
        "heads 0.5 calib": {"heads": 0.5, "calib": CALIB, "criterion": "contribution"},
        "drop-layers 1": {"drop_layers": 1},
        "drop-layers 1 calib": {"drop_layers": 1, "calib": CALIB},
        "heads 0.25 + ffn 0.3": {"heads": 0.25, "structured": 0.3},
        "heads 0.25 + ffn 0.3 calib": {"heads": 0.25, "structured": 0.3, "calib": CALIB},
    })
    return modes


MODES = _modes()


def _prune(source: Path, target: Path, mode: dict, calib: Path, reports: dict[str, dict]) -> dict:
    mode = {key: (str(calib) if value == CALIB else value) for key, value in mode.items()}
    if SAME_FLOPS_AS in mode:
        other = reports[mode.pop(SAME_FLOPS_AS)]
        mode["target_flops"] = other["after"]["flops"] / other["before"]["flops"]
    options = onnxprune.PruneOptions(validate=False, **mode)
    return onnxprune.prune(source, target, options)


def minilm(work: Path, sentences: int) -> list[dict]:
    import models
    from models import minilm as mini

    dense = models.build("minilm", "torchscript", work / "minilm.onnx")
    feed = mini.tokenize(mini.sample_sentences(sentences, seed=0))
    calib = work / "minilm_calib.npz"  # other sentences than the evaluation ones
    np.savez(calib, **mini.tokenize(mini.sample_sentences(128, seed=1)))
    reference = runtime.run(runtime.create_session(dense), feed)["sentence_embedding"]
    rows, reports = [], {}
    for label, mode in MODES.items():
        pruned = work / f"minilm_{label.replace(' ', '_')}.onnx"
        report = reports[label] = _prune(dense, pruned, mode, calib, reports)
        sessions = {"dense": runtime.create_session(dense), "pruned": runtime.create_session(pruned)}
        got = runtime.run(sessions["pruned"], feed)["sentence_embedding"]
        cosine = np.sum(reference * got, axis=1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1))
        small = {name: value[:8] for name, value in feed.items()}
        timing = latency.measure_interleaved(sessions, {"dense": small, "pruned": small}, warmup=3, runs=30)
        rows.append({
            "mode": label,
            "params_before": report["before"]["params"],
            "params_after": report["after"]["params"],
            "mean_cosine": float(np.mean(cosine)),
            "min_cosine": float(np.min(cosine)),
            "latency_ms_dense": timing["dense"].median_ms,
            "latency_ms_pruned": timing["pruned"].median_ms,
            "speedup": latency.speedup(timing["dense"], timing["pruned"]),
        })
    return rows


def tinylm(work: Path) -> list[dict]:
    import models
    from models import tinylm as lm

    dense = models.build("tinylm", "torchscript", work / "tinylm.onnx")
    base = lm.perplexity_onnx(dense, "heldout")
    train = lm.dataset("train")
    windows = np.random.default_rng(0).integers(0, len(train) - 128, size=64)
    calib = work / "tinylm_calib.npz"  # 64 windows of 128 bytes of the training text
    np.savez(calib, input_ids=np.stack([train[i:i + 128] for i in windows]).astype(np.int64))
    rows, reports = [{"mode": "dense", "heldout_perplexity": base, "params": None}], {}
    for label, mode in MODES.items():
        pruned = work / f"tinylm_{label.replace(' ', '_')}.onnx"
        report = reports[label] = _prune(dense, pruned, mode, calib, reports)
        rows.append({"mode": label, "heldout_perplexity": lm.perplexity_onnx(pruned, "heldout"),
                     "params": report["after"]["params"], "params_before": report["before"]["params"]})
    rows[0]["params"] = rows[1]["params_before"]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-tinylm", action="store_true")
    args = parser.parse_args(argv)
    results: dict = {"machine": machine_facts(), "criterion": "l1 magnitude, no calibration data"}
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as folder:
        work = Path(folder)
        if not args.skip_minilm:
            rows = minilm(work, args.sentences)
            results["minilm"] = rows
            print("all-MiniLM-L6-v2: sentence embeddings of", args.sentences, "sentences, ORT CPU batch 8")
            print(table(["mode", "params", "mean cos", "min cos", "ms dense", "ms pruned", "speedup"],
                        [[r["mode"], r["params_after"], r["mean_cosine"], r["min_cosine"], r["latency_ms_dense"],
                          r["latency_ms_pruned"], r["speedup"]] for r in rows]))
        if not args.skip_tinylm:
            rows = tinylm(work)
            results["tinylm"] = rows
            print("\ntinylm: held-out perplexity (next byte)")
            print(table(["mode", "params", "perplexity"], [[r["mode"], r["params"], r["heldout_perplexity"]]
                                                          for r in rows]))
    print(f"\nwrote {write_results('transformers.json', results)}")


if __name__ == "__main__":
    main()
