"""Prune time and peak memory against a plain `onnx.load` + `onnx.save` of the same model.

    python -m bench.prune_time [--gb 1.0] [--dtypes float32,float16] [--external-data] [--validate]
                               [--skip-synthetic] [--runs 3] [--synthetic-runs 3] [--warmup-runs 1] [--profile]

Models: the largest net in models/ (yolo, torchscript export) and a synthetic conv + matmul stack
of about --gb GB per --dtypes entry (bench/synthetic.py; external data above 1.9 GB or with
--external-data), all written to a temporary folder that is deleted at the end.

Every measurement runs in a fresh Python subprocess, so its peak RSS (the child's own high-water
mark, VmHWM, printed back as JSON; ru_maxrss on systems without /proc) is that one operation's:
  save   onnx.load(model) + onnx.save(copy)                                 (the reference)
         (external-data models: onnx.load loads the data, onnx.save(..., save_as_external_data=True))
  prune  onnxprune.prune(model, out, PruneOptions(structured=0.4, validate=False)), load and save included
After --warmup-runs discarded runs of each, the two alternate (save, prune, then prune, save, ...)
and each is repeated --runs times; figures are medians. Targets: prune wall time <= 2x the
reference, prune peak RSS <= 2x the model's size (file plus external data).
The last pruned synthetic output is checked: onnx.checker full check by path, one ONNX Runtime
run (finite outputs of the right shape). --validate adds one run of the prune with validation on
(validate=True, what `onnxprune in out --structured 0.4` does), to show what validation costs.
Results go to bench/results/prune_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._prune_time_child import STRUCTURED

TIME_TARGET = 2.0  # prune wall time / (onnx.load + onnx.save)
RSS_TARGET = 2.0  # prune peak RSS / model file size
_REPO = Path(__file__).resolve().parent.parent
_MB = 1e6



# ---------------------------------------------------------------- parent side


def _run_child(mode: str, source: Path, target: Path, keep: bool = False) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.prune_time", "--child", mode, str(source), str(target)]
    # Flush dirty pages (earlier outputs, deleted or not) first, so no run pays for another's writeback.
    if hasattr(os, "sync"):
        os.sync()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=_REPO, capture_output=True, text=True)
    process_s = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} on {source.name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("BENCH-RESULT "))
    result = json.loads(line[len("BENCH-RESULT "):])
    result["process_s"] = process_s
    if target.exists():
        result["output_bytes"] = _file_bytes(target)
    if not keep:
        _remove(target)
    return result


def _remove(target: Path) -> None:
    for leftover in (target, Path(f"{target}.data")):
        if leftover.exists():
            leftover.unlink()


def _check_call(command: list[str]) -> str:
    done = subprocess.run(command, cwd=_REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def _file_bytes(path: Path) -> int:
    data = Path(f"{path}.data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    phases = {key: _median([r["phases_s"].get(key, 0.0) for r in runs]) for key in runs[0]["phases_s"]}
    marks = {key: int(_median([r["maxrss_after_phase"].get(key, 0) for r in runs]))
             for key in runs[0]["maxrss_after_phase"]}
    split = {key: {kind: int(_median([r["rss_now_after_phase"].get(key, {}).get(kind, 0) for r in runs]))
                   for kind in ("anon", "file")}
             for key in runs[0]["rss_now_after_phase"]}
    return {
        "wall_s": _median([r["wall_s"] for r in runs]),
        "wall_s_runs": [round(r["wall_s"], 4) for r in runs],
        "process_s": _median([r["process_s"] for r in runs]),
        "peak_rss": int(_median([r["peak_rss"] for r in runs])),
        "peak_rss_runs": [r["peak_rss"] for r in runs],
        "ru_maxrss": int(_median([r["ru_maxrss"] for r in runs])),
        "baseline_rss": int(_median([r["baseline_rss"] for r in runs])),
        "phases_s": phases,
        "maxrss_after_phase": marks,
        "rss_now_after_phase": split,
        "output_bytes": runs[0]["output_bytes"],
    }


def measure(name: str, source: Path, runs: int, work: Path, log, warmup_runs: int = 1, *,
            external: bool = False, verify: bool = False, validate: bool = False) -> dict[str, Any]:
    size = _file_bytes(source)
    results: dict[str, list[dict[str, Any]]] = {"save": [], "prune": []}
    save_mode = "save-external" if external else "save"
    for index in range(warmup_runs):
        # Discarded: the first runs after writing a big model pay for page cache and, on a VM, for
        # guest memory the host has not backed yet (the first load+save of 1 GB took 3x the third).
        for mode in ("save", "prune"):
            result = _run_child(save_mode if mode == "save" else mode, source, work / f"{name}.{mode}.onnx")
            log(f"  {name} warmup {index + 1}/{warmup_runs} {mode:5s}: {result['wall_s']:.3f} s (discarded)")
    pruned = work / f"{name}.prune.onnx"
    for index in range(runs):
        order = ("save", "prune") if index % 2 == 0 else ("prune", "save")
        for mode in order:
            last_prune = verify and mode == "prune" and index == runs - 1
            result = _run_child(save_mode if mode == "save" else mode, source, work / f"{name}.{mode}.onnx",
                                keep=last_prune)
            results[mode].append(result)
            log(f"  {name} run {index + 1}/{runs} {mode:5s}: {result['wall_s']:.3f} s, "
                f"peak RSS {result['peak_rss'] / _MB:,.0f} MB")
    save, prune = _summarize(results["save"]), _summarize(results["prune"])
    net = prune["peak_rss"] - prune["baseline_rss"]
    extra: dict[str, Any] = {}
    last = results["prune"][-1]
    extra["weights_held_in_memory_at_save"] = last.get("weights_held_in_memory_at_save")
    extra["weights_spilled_to_disk"] = last.get("weights_spilled_to_disk")
    if verify:
        check = _run_child("verify", source, pruned)
        extra["output_check"] = {key: check[key] for key in ("checker_full_check", "checker_s", "ort_run_s",
                                                             "output_shapes", "outputs_finite")}
        log(f"  {name} output check: {extra['output_check']}")
    if validate:
        with_validation = _run_child("prune-validate", source, work / f"{name}.validate.onnx")
        extra["with_validation"] = {
            "wall_s": with_validation["wall_s"],
            "phases_s": with_validation["phases_s"],
            "peak_rss": with_validation["peak_rss"],
            "peak_rss_per_file": with_validation["peak_rss"] / size,
            "maxrss_after_phase": with_validation["maxrss_after_phase"],
            "rss_now_after_phase": with_validation["rss_now_after_phase"],
            "validation": with_validation["validation"],
        }
        log(f"  {name} with validation: {with_validation['wall_s']:.1f} s, "
            f"peak RSS {with_validation['peak_rss'] / _MB:,.0f} MB "
            f"({with_validation['validation']['latency_mode']} latency)")
    return {
        "model": name,
        "external_data": external,
        **extra,
        "file_bytes": size,
        "runs": runs,
        "warmup_runs": warmup_runs,
        "reference": save,
        "prune": prune,
        "time_ratio": prune["wall_s"] / save["wall_s"],
        # Ratio of the fastest runs: less sensitive to a noisy machine than the medians.
        "time_ratio_min": min(r["wall_s"] for r in results["prune"]) / min(r["wall_s"] for r in results["save"]),
        "prune_peak_rss_per_file": prune["peak_rss"] / size,
        "prune_net_peak_rss_per_file": net / size,
        "reference_peak_rss_per_file": save["peak_rss"] / size,
        "params_before": results["prune"][0]["params_before"],
        "params_after": results["prune"][0]["params_after"],
        "channels_removed": results["prune"][0]["channels_removed"],
        "time_target_met": prune["wall_s"] / save["wall_s"] <= TIME_TARGET,
        "rss_target_met": prune["peak_rss"] / size <= RSS_TARGET,
    }


def _print_tables(cases: list[dict[str, Any]]) -> None:
    from bench._common import table

    rows = []
    for case in cases:
        ref, pr = case["reference"], case["prune"]
        rows.append([
            case["model"], case["file_bytes"] / _MB, ref["wall_s"], pr["wall_s"], case["time_ratio"],
            case["time_ratio_min"],
            ref["peak_rss"] / _MB, pr["peak_rss"] / _MB, case["reference_peak_rss_per_file"],
            case["prune_peak_rss_per_file"], case["prune_net_peak_rss_per_file"],
        ])
    print(table(["model", "file MB", "load+save s", "prune s", "time ratio", "ratio of mins", "load+save peak MB",
                 "prune peak MB", "load+save RSS/file", "prune RSS/file", "prune net RSS/file"], rows))
    print(f"targets: time ratio <= {TIME_TARGET}, prune RSS/file <= {RSS_TARGET} "
          "(net = peak minus the RSS after imports; medians of the runs)")
    for case in cases:
        notes = []
        if case.get("weights_spilled_to_disk") is not None:
            notes.append(f"changed weights spilled to disk {case['weights_spilled_to_disk'] / _MB:,.0f} MB, "
                         f"held in memory at save {case['weights_held_in_memory_at_save'] / _MB:,.0f} MB")
        if "output_check" in case:
            check = case["output_check"]
            notes.append(f"output: checker full_check ok, ORT outputs {check['output_shapes']} "
                         f"finite={check['outputs_finite']}")
        if "with_validation" in case:
            extra = case["with_validation"]
            notes.append(f"with validation ({extra['validation']['latency_mode']} latency): {extra['wall_s']:.1f} s, "
                         f"peak RSS {extra['peak_rss'] / _MB:,.0f} MB = {extra['peak_rss_per_file']:.2f}x the model")
        for note in notes:
            print(f"{case['model']}: {note}")
    for case in cases:
        print(f"\n{case['model']}: where the time goes (median s) and the peak RSS after each phase (MB)")
        for label, key in (("onnx.load + onnx.save", "reference"), ("onnxprune.prune", "prune")):
            part = case[key]
            def now(phase, kind, part=part):
                value = part["rss_now_after_phase"].get(phase, {}).get(kind)
                return value / _MB if value else None

            rows = [[phase, seconds, part["maxrss_after_phase"].get(phase, 0) / _MB or None,
                     now(phase, "anon"), now(phase, "file")]
                    for phase, seconds in part["phases_s"].items()]
            rows.insert(0, ["(imports)", None, part["baseline_rss"] / _MB, now("imports", "anon"),
                            now("imports", "file")])
            rows.append(["total", part["wall_s"], part["peak_rss"] / _MB, None, None])
            print(f"  {label}")
            print("    " + table(["phase", "seconds", "peak RSS MB so far", "anon MB after", "file-backed MB after"],
                                 rows).replace("\n", "\n    "))


def _print_profile(name: str, rows: list[dict[str, Any]]) -> None:
    from bench._common import table

    print(f"\n{name}: onnxprune.prune under cProfile, top functions by own time")
    print(table(["function", "calls", "own s", "cumulative s"],
                [[r["function"][-90:], r["calls"], r["tottime_s"], r["cumtime_s"]] for r in rows]))


def _measure_logged(name: str, source: Path, runs: int, work: Path, log, warmup_runs: int,
                    **kwargs) -> dict[str, Any]:
    log(f"measuring {name} ({runs} runs each)")
    return measure(name, source, runs, work, log, warmup_runs, **kwargs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        from bench._prune_time_child import child_main

        return child_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.prune_time", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0, help="synthetic model size in GB (default 1.0)")
    parser.add_argument("--dtypes", default="float32",
                        help="comma-separated weight types of the synthetic models: float32, float16 (default float32)")
    parser.add_argument("--external-data", action="store_true",
                        help="synthetic weights in a .data file even below 1.9 GB")
    parser.add_argument("--validate", action="store_true",
                        help="also time one prune of each synthetic model with validation on")
    parser.add_argument("--skip-synthetic", action="store_true", help="only the models/ net")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--synthetic-runs", type=int, default=None,
                        help="runs for the synthetic model (default --runs)")
    parser.add_argument("--warmup-runs", type=int, default=1, help="discarded runs of each first (default 1)")
    parser.add_argument("--profile", action="store_true", help="also profile one prune of each model (cProfile)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results/")
    args = parser.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not dtypes or any(d not in ("float32", "float16") for d in dtypes):
        parser.error(f"--dtypes takes float32 and/or float16, got {args.dtypes!r}")
    if args.runs < 1 or (args.synthetic_runs is not None and args.synthetic_runs < 1):
        parser.error("--runs and --synthetic-runs must be at least 1")

    from bench._common import machine_facts, write_results

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    cases = []
    synthetic_info: dict[str, Any] = {}
    profiles = {}
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as temp:
        work = Path(temp)
        # Both models are made in subprocesses: this process stays small (stdlib only) so that it
        # lends nothing to its children's memory figures.
        log("building yolo (torchscript export)")
        yolo = work / "yolo.onnx"
        _check_call([sys.executable, "-m", "models", "build", "yolo", "--exporter", "torchscript", "--out", str(yolo)])
        cases.append(_measure_logged("yolo", yolo, args.runs, work, log, args.warmup_runs))
        if args.profile:
            profiles["yolo"] = _run_child("prune-profile", yolo, work / "yolo.profile.onnx")["profile"]
        for dtype in [] if args.skip_synthetic else dtypes:
            # One synthetic model on disk at a time: 2 x 2.2 GB plus outputs would crowd a small /tmp.
            name = f"synthetic-{args.gb:g}GB" + ("" if dtype == "float32" else f"-{dtype}")
            log(f"writing the synthetic stack ({args.gb:g} GB, {dtype})")
            synthetic = work / f"{name}.onnx"
            command = [sys.executable, "-m", "bench.synthetic", str(synthetic), "--gb", repr(args.gb), "--json",
                       "--dtype", dtype] + (["--external-data"] if args.external_data else [])
            info = json.loads(_check_call(command).strip().splitlines()[-1])
            info.pop("path")
            synthetic_info[name] = info
            log(f"  {info['file_bytes'] / _MB:,.0f} MB{' + external data' if info['external_data'] else ''}: "
                f"{info['n_conv']} convs {info['channels']} ch, {info['n_matmul']} matmuls {info['hidden']} "
                f"wide, {info['seconds']:.1f} s")
            cases.append(_measure_logged(name, synthetic, args.synthetic_runs or args.runs, work, log,
                                         args.warmup_runs, external=info["external_data"], verify=True,
                                         validate=args.validate))
            if args.profile:
                profiles[name] = _run_child("prune-profile", synthetic, work / f"{name}.profile.onnx")["profile"]
            _remove(synthetic)

    print()
    _print_tables(cases)
    for name, rows in profiles.items():
        _print_profile(name, rows)
    payload = {
        "benchmark": "prune_time",
        "structured": STRUCTURED,
        "targets": {"time_ratio_max": TIME_TARGET, "prune_peak_rss_per_file_max": RSS_TARGET},
        "machine": machine_facts(),
        "synthetic": synthetic_info,
        "cases": cases,
    }
    if profiles:
        payload["profiles"] = profiles
    if not args.no_write:
        path = write_results("prune_time.json", payload)
        print(f"\nwrote {path.relative_to(_REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
