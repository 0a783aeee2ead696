"""Realized ONNX Runtime CPU speedup of pruned models against their FLOPs reduction.

    python -m bench.speedup [--models resnet,yolo,...] [--skip-synthetic] [--min-runs 50] [--seconds 8]
                            [--batch NAME=B ...] [--round-to 1,8,16] [--spinning]

For every net in models/ (torchscript export) and a mid-size synthetic conv stack (bench/synthetic.py,
about 64 MB, 256 channels at 28x28, so convolution compute dominates), prune at --structured 0.4 with
--round-to 1 and --round-to 8, then in one process:
  * FLOPs of the original and both pruned models (onnxprune.check.stats.model_stats at the benchmark's
    input shape; the models' batch dim is symbolic, so the batch is chosen here);
  * latency of the three in ONNX Runtime (CPU, default threads), interleaved run by run
    (onnxprune.measure.latency.measure_interleaved) after warmups, at least --min-runs timed runs each,
    with intra-op spinning off (--spinning leaves it on).
Reported: FLOPs reduction = before / after, speedup = median latency before / after, and
efficiency = speedup / FLOPs reduction (target >= 0.9). Results go to bench/results/speedup.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STRUCTURED = 0.4
ROUND_TO = (1, 8, 16)
EFFICIENCY_TARGET = 0.9
# Batches at which compute, not per-node overhead, dominates each net's run (about 5-15 ms for the
# original on a 2-core AVX-512 machine; the nets are small, 64x64 inputs or 64 features).
DEFAULT_BATCH = {"resnet": 32, "mobile": 128, "yolo": 64, "mlp": 16384, "mlp3d": 4096, "synthetic": 1}
SYNTHETIC = {"target_bytes": 64_000_000, "channels": 256, "hidden": 512, "spatial": 28, "conv_share": 0.95}
_REPO = Path(__file__).resolve().parent.parent


def _prune(source: Path, target: Path, round_to: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    import onnxprune

    options = onnxprune.PruneOptions(structured=STRUCTURED, round_to=round_to, validate=False, shapes=shapes)
    report = onnxprune.prune(source, target, options)
    return {"channels_removed": report.get("channels_removed"), "prune_seconds": report.get("prune_seconds")}


def _stats(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    from onnxprune.check.stats import model_stats
    from onnxprune.io.model import Model

    stats = model_stats(Model.load(path), shapes)
    return {"params": stats["params"], "flops": stats["flops"], "weight_bytes": stats["weight_bytes"],
            "flops_by_op": stats["flops_by_op"], "flops_unknown_nodes": stats["flops_unknown_nodes"]}


def _session(path: Path, spinning: bool, threads: int | None = None):
    """An ONNX Runtime CPU session (default threads unless `threads`); intra-op spinning off unless `spinning`.

    Spinning (ORT's default) keeps a session's pool threads busy-waiting for a while after each run.
    With three sessions run in alternation on a few cores, one session's spinning threads steal the
    cores of the next one and the latencies measure that contention, not the models (on 2 cores it
    made resnet 3-6x slower, unevenly across the three models).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _runs_for(sessions, feeds, seconds: float, min_runs: int, max_runs: int) -> tuple[int, float]:
    """Timed runs that fill about `seconds`: one untimed round to warm up, one to estimate."""
    from onnxprune.check import runtime

    for name, session in sessions.items():
        runtime.run(session, feeds[name], label=name)
    started = time.perf_counter()
    for name, session in sessions.items():
        runtime.run(session, feeds[name], label=name)
    round_s = time.perf_counter() - started
    return max(min_runs, min(max_runs, int(seconds / max(round_s, 1e-9)))), round_s


def measure(name: str, source: Path, input_name: str, feed, work: Path, args, log) -> dict[str, Any]:
    from onnxprune.measure import latency

    shapes = {input_name: tuple(feed.shape)}
    variants: dict[str, Path] = {"original": source}
    prune_info = {}
    for round_to in args.round_to:
        label = f"round_to={round_to}"
        target = work / f"{name}.r{round_to}.onnx"
        prune_info[label] = _prune(source, target, round_to, shapes)
        variants[label] = target
    stats = {label: _stats(path, shapes) for label, path in variants.items()}
    sessions = {label: _session(path, args.spinning, args.threads) for label, path in variants.items()}
    feeds = {label: {input_name: feed} for label in sessions}
    runs, round_s = _runs_for(sessions, feeds, args.seconds, args.min_runs, args.max_runs)
    warmup = max(args.warmup, min(50, runs // 10))
    log(f"  {name}: batch {feed.shape[0]}, one round {round_s * 1e3:.1f} ms, {warmup} warmups + {runs} runs each")
    timing = latency.measure_interleaved(sessions, feeds, warmup=warmup, runs=runs)

    before = stats["original"]
    variants_out = {}
    for label in variants:
        if label == "original":
            continue
        flops_reduction = before["flops"] / stats[label]["flops"] if stats[label]["flops"] else None
        speedup = latency.speedup(timing["original"], timing[label])
        efficiency = speedup / flops_reduction if flops_reduction else None
        variants_out[label] = {
            **prune_info[label],
            "params": stats[label]["params"],
            "flops": stats[label]["flops"],
            "flops_by_op": stats[label]["flops_by_op"],
            "latency_ms": timing[label].to_dict(),
            "flops_reduction": flops_reduction,
            "params_reduction": before["params"] / stats[label]["params"] if stats[label]["params"] else None,
            "speedup": speedup,
            "efficiency": efficiency,
            "target_met": efficiency is not None and efficiency >= EFFICIENCY_TARGET,
        }
    return {
        "model": name,
        "input_shape": list(feed.shape),
        "file_bytes": source.stat().st_size,
        "runs": runs,
        "warmup": warmup,
        "original": {"params": before["params"], "flops": before["flops"], "flops_by_op": before["flops_by_op"],
                     "flops_unknown_nodes": before["flops_unknown_nodes"],
                     "latency_ms": timing["original"].to_dict()},
        "pruned": variants_out,
    }


def _print_table(cases: list[dict[str, Any]]) -> None:
    from bench._common import table

    rows = []
    for case in cases:
        original = case["original"]
        for label, variant in case["pruned"].items():
            rows.append([
                case["model"], "x".join(map(str, case["input_shape"])), label.split("=")[1],
                original["flops"] / 1e6, variant["flops"] / 1e6, variant["flops_reduction"],
                original["latency_ms"]["median_ms"], variant["latency_ms"]["median_ms"], variant["speedup"],
                variant["efficiency"], case["runs"],
            ])
    print(table(["model", "input", "round", "MFLOPs before", "MFLOPs after", "FLOPs red.", "ms before",
                 "ms after", "speedup", "speedup/red.", "runs"], rows))
    print(f"target: speedup / FLOPs reduction >= {EFFICIENCY_TARGET} (median latencies, ONNX Runtime CPU, "
          f"pruned at --structured {STRUCTURED})")


def _round_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _parse_batches(items: list[str]) -> dict[str, int]:
    batches = dict(DEFAULT_BATCH)
    for item in items:
        name, _, value = item.partition("=")
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--batch {item!r}: expected NAME=POSITIVE_INT")
        batches[name] = int(value)
    return batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speedup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="comma-separated models/ nets (default: all)")
    parser.add_argument("--skip-synthetic", action="store_true", help="leave out the synthetic conv stack")
    parser.add_argument("--batch", action="append", default=[], metavar="NAME=B",
                        help=f"batch for a net (defaults: {DEFAULT_BATCH})")
    parser.add_argument("--min-runs", type=int, default=50, help="fewest timed runs per model (default 50)")
    parser.add_argument("--max-runs", type=int, default=1000, help="most timed runs per model (default 1000)")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="aim for about this much timed time per net (default 8; --min-runs wins)")
    parser.add_argument("--warmup", type=int, default=10, help="fewest untimed runs per model (default 10)")
    parser.add_argument("--spinning", action="store_true",
                        help="leave ONNX Runtime's intra-op spinning on (its default; off here, see README)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads (default: ORT's, one per physical core)")
    parser.add_argument("--round-to", type=_round_list, default=ROUND_TO, metavar="N,N",
                        help="--round-to values to prune with (default 1,8,16)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results/")
    args = parser.parse_args(argv)
    if args.min_runs < 1 or args.max_runs < args.min_runs or args.warmup < 0:
        parser.error("need 1 <= --min-runs <= --max-runs and --warmup >= 0")

    import models
    from bench._common import machine_facts, write_results
    from bench.synthetic import make_stack

    names = models.NAMES if args.models is None else [n.strip() for n in args.models.split(",") if n.strip()]
    batches = _parse_batches(args.batch)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    cases = []
    synthetic_info = None
    with tempfile.TemporaryDirectory(prefix="onnxprune-speedup-") as temp:
        work = Path(temp)
        for name in names:
            log(f"{name}: export (torchscript), prune, measure")
            source = models.build(name, "torchscript", work / f"{name}.onnx")
            spec = models.SPECS[name]
            feed = models.example_inputs(name, batch=batches.get(name, 8))[spec.input_name]
            cases.append(measure(name, source, spec.input_name, feed, work, args, log))
        if not args.skip_synthetic:
            import numpy as np

            log("synthetic: write, prune, measure")
            info = make_stack(work / "synthetic.onnx", SYNTHETIC["target_bytes"], seed=0,
                              channels=SYNTHETIC["channels"], hidden=SYNTHETIC["hidden"],
                              spatial=SYNTHETIC["spatial"], conv_share=SYNTHETIC["conv_share"])
            synthetic_info = info.to_dict()
            synthetic_info.pop("path")
            feed = np.random.default_rng(0).standard_normal(info.input_shape(batches["synthetic"]), dtype=np.float32)
            label = f"synthetic-{info.file_bytes / 1e6:.0f}MB"
            cases.append(measure(label, Path(info.path), info.input_name, feed, work, args, log))

    print()
    _print_table(cases)
    efficiencies = [v["efficiency"] for c in cases for v in c["pruned"].values() if v["efficiency"] is not None]
    payload = {
        "benchmark": "speedup",
        "structured": STRUCTURED,
        "round_to": list(args.round_to),
        "targets": {"efficiency_min": EFFICIENCY_TARGET},
        "machine": machine_facts(),
        "session": {"provider": "CPUExecutionProvider", "intra_op_num_threads": args.threads or "default (0)",
                    "allow_spinning": args.spinning, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "batches": {case["model"]: case["input_shape"][0] for case in cases},
        "synthetic": synthetic_info,
        "cases": cases,
        "summary": {
            "min_efficiency": min(efficiencies) if efficiencies else None,
            "all_targets_met": all(e >= EFFICIENCY_TARGET for e in efficiencies),
        },
    }
    if not args.no_write:
        path = write_results("speedup.json", payload)
        print(f"\nwrote {path.relative_to(_REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
