"""The real-model corpus through every prune mode, as a user runs it: first contact, validity, task metric.

    python -m bench.real_models [--quick] [--models a,b,c] [--modes "structured 0.4,sparse 2:4"]
                                [--timeout 600] [--out real_models.json]

For every corpus model (`models.real.names(unique=True)`: byte-identical copies once) and every mode
(`--structured 0.4`, `--structured 0.2`, `--heads 0.25` where the model has attention-head spaces,
`--drop-layers 1` where it has residual blocks, `--sparse 2:4`, `--target-flops 0.7`), each once
data-free and once with `--calib` (a loader script replaying `real_inputs(name, "calib", n=8)`), the
bench runs `python -m onnxprune IN OUT ARGS --json R.json` in a subprocess, as a user does, and
records: the exit code and, on failure, the line that says why (and whether a traceback leaked);
whether the written model passes `onnx.checker` full check and runs in ONNX Runtime on the real eval
feeds (`real_inputs(name, "eval", n=16)`); the parameter and FLOPs ratios from the JSON report; the
task metric of the pruned model against the dense one on those feeds (`models.real.task_metric`:
1.0 = the same strings, boxes, classes, tags as dense); the report's warnings and notes. One more
run per model, `--structured 0.4 --no-validate`, checks that skipping validation never writes a
model ONNX Runtime cannot run.

Pruned models go to a temporary folder (deleted at the end; one model on disk at a time). Results
are written to bench/results/real_models.json after every model, so a long run that is stopped
keeps what finished. `--quick` runs 5 representative models x 3 modes (~10 min on 2 cores).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import machine_facts, table, write_results
from ._real_runs import MODES, NO_VALIDATE_MODE, ROOT, prepare, run_mode

# A CNN classifier with weights in Constant nodes (PP-LCNet), an OCR recognizer with attention
# blocks (SVTR), a BERT encoder (weights in Constant nodes, heads), a transformer tagger with
# external data, an int8 BiLSTM diacritizer fed unpadded sequences of varying length. The
# detectors (YOLOX, PicoDet) are left to the full run: one calibrated run of theirs takes minutes.
QUICK_MODELS = ("ppocrv5_cls", "ppocrv6_tiny_rec", "minilm_l3_paraphrase", "khmersm", "tashkeel_rawi")
QUICK_MODES = ("structured 0.4", "heads 0.25", "sparse 2:4")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"models {','.join(QUICK_MODELS)}; modes "
                                                             f"{', '.join(QUICK_MODES)}")
    parser.add_argument("--models", help="comma-separated corpus names (default: every unique model)")
    parser.add_argument("--modes", help=f"comma-separated, of: {', '.join(MODES)}")
    parser.add_argument("--no-calib", action="store_true", help="data-free runs only")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per prune run (default 600)")
    parser.add_argument("--calib-samples", type=int, default=8)
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--out", default=None, help="result file name in bench/results "
                                                    "(default real_models.json; real_models_quick.json with --quick)")
    args = parser.parse_args(argv)

    import models.real as real

    names = _pick(args.models, QUICK_MODELS if args.quick else real.names(unique=True), real.CATALOGUE, "model")
    modes = _pick(args.modes, QUICK_MODES if args.quick else tuple(MODES), MODES, "mode")
    out_name = args.out or ("real_models_quick.json" if args.quick else "real_models.json")
    payload: dict[str, Any] = {
        "machine": machine_facts(), "tree": tree_state(),
        "command": "python -m bench.real_models " + " ".join(sys.argv[1:] if argv is None else argv),
        "models": {}, "runs": [],
    }
    started = time.perf_counter()
    # A stopped background run (kill PID) still deletes its pruned models: SIGTERM unwinds like ^C,
    # and subprocess.run kills the prune child on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="onnxprune_real_bench_") as folder:
        for name in names:
            rows, info = bench_model(name, modes, not args.no_calib, Path(folder), args)
            payload["models"][name], payload["runs"] = info, payload["runs"] + rows
            payload["summary"] = summarize(payload["runs"])
            payload["seconds"] = round(time.perf_counter() - started, 1)
            write_results(out_name, payload)
    print()
    print(table(*table_rows(payload["runs"], payload["models"], modes)))
    print()
    print(summary_text(payload["summary"]))
    print(f"wrote bench/results/{out_name} ({payload['seconds']:.0f} s)")
    return 0


def _pick(given: str | None, default, known, what: str) -> list[str]:
    chosen = [x.strip() for x in given.split(",") if x.strip()] if given else list(default)
    unknown = [x for x in chosen if x not in known]
    if unknown:
        raise SystemExit(f"unknown {what}(s): {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def tree_state() -> dict[str, Any]:
    """The commit, and the files of the package that differ from it: the CLI runs on the working tree."""
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "onnxprune", "passes").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted_package_files": [c[3:] for c in changed]}


def bench_model(name: str, modes: list[str], calib: bool, work: Path,
                args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    started = time.perf_counter()
    try:
        prep = prepare(name, work, args.calib_samples, args.eval_samples)
    except Exception as exc:  # a model that cannot be prepared is reported, the rest still run
        print(f"{name}: not prepared: {type(exc).__name__}: {exc}", flush=True)
        return [], {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    info: dict[str, Any] = {"path": str(prep.path), "probe": prep.probe}
    print(f"{name}: {prep.probe}", flush=True)
    rows = []
    for mode in modes:
        needs = MODES[mode][1]
        if needs and prep.applies.get(needs) is False:
            rows.append({"model": name, "mode": mode, "skipped": f"no {needs}"})
            continue
        for calibrated in (False, True) if calib else (False,):
            rows.append(_announce(run_mode(prep, mode, calibrated, True, work, args.timeout)))
    if NO_VALIDATE_MODE in modes or args.quick or not args.modes:
        rows.append(_announce(run_mode(prep, NO_VALIDATE_MODE, False, False, work, args.timeout)))
    info["seconds"] = round(time.perf_counter() - started, 1)
    return rows, info


def _announce(row: dict[str, Any]) -> dict[str, Any]:
    task = (row.get("task") or {}).get("value")
    print(f"  {row['mode']:<16} {'cal' if row['calibrated'] else 'df ':<3} {'' if row['validate'] else 'no-val'} "
          f"exit={row['exit']} valid={row.get('valid', '-')} params={row.get('params_ratio', '-')} "
          f"task={'-' if task is None else f'{task:.3f}'} {row['seconds']:.0f}s"
          + (f" sparse share={row['sparse_share']}" if "sparse_share" in row else "")
          + (f"  | {row['error']}" if row.get("error") else ""), flush=True)
    return row


def _cell(row: dict[str, Any] | None, key: str) -> Any:
    if row is None:
        return "-"
    if key == "exit":
        return row["exit"]
    if key == "valid":
        return "-" if "valid" not in row else ("yes" if row["valid"] else "NO")
    if key == "task":
        value = (row.get("task") or {}).get("value")
        return "-" if value is None else f"{value:.3f}"
    value = row.get(key)
    return "-" if value is None else f"{value:.3f}"


def table_rows(runs: list[dict[str, Any]], models: dict[str, Any], modes: list[str]) -> tuple[list[str], list]:
    """model x mode: exit, valid, params ratio and task metric, data-free / calibrated."""
    headers = ["model", "mode", "exit df/cal", "valid df/cal", "params df/cal", "flops df/cal", "task df", "task cal"]
    rows = []
    for name in models:
        mine = [r for r in runs if r["model"] == name]
        if "error" in models[name]:
            rows.append([name, "not prepared", "-", "-", "-", "-", "-", "-"])
        for mode in [*modes, f"{NO_VALIDATE_MODE} --no-validate"]:
            if mode.endswith("--no-validate"):
                df = next((r for r in mine if r["mode"] == NO_VALIDATE_MODE and not r.get("validate", True)), None)
                cal = None
                if df is None:
                    continue
            else:
                skipped = next((r for r in mine if r["mode"] == mode and "skipped" in r), None)
                if skipped:
                    rows.append([name, mode, f"n/a ({skipped['skipped']})", "", "", "", "", ""])
                    continue
                both = [r for r in mine if r["mode"] == mode and r.get("validate")]
                df = next((r for r in both if not r["calibrated"]), None)
                cal = next((r for r in both if r["calibrated"]), None)
                if df is None and cal is None:
                    continue
            rows.append([name, mode] + [f"{_cell(df, k)}/{_cell(cal, k)}" for k in ("exit", "valid", "params_ratio",
                                                                                  "flops_ratio")]
                        + [_cell(df, "task"), _cell(cal, "task")])
    return headers, rows


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in runs if "exit" in r]
    ok = [r for r in done if r["exit"] == 0]
    tasks = [r["task"]["value"] for r in ok if isinstance(r.get("task"), dict) and r["task"].get("value") is not None]
    return {
        "runs": len(done), "skipped": len(runs) - len(done),
        "exit_0": len(ok), "exit_2": sum(r["exit"] == 2 for r in done),
        "exit_other": sorted({str(r["exit"]) for r in done if r["exit"] not in (0, 2)}),
        "exit_other_count": sum(r["exit"] not in (0, 2) for r in done),
        "tracebacks": sum(bool(r.get("traceback")) for r in done),
        "written_but_invalid": sum(r.get("valid") is False for r in done),
        "exit_0_valid": sum(r.get("valid") is True for r in ok),
        "no_validate_invalid": sum(r.get("valid") is False for r in done if not r["validate"]),
        "task_mean_exit_0": round(sum(tasks) / len(tasks), 4) if tasks else None,
        "task_exact_exit_0": sum(v >= 1.0 for v in tasks),
    }


def summary_text(summary: dict[str, Any]) -> str:
    s = summary
    return (f"{s['runs']} runs ({s['skipped']} not applicable): exit 0 {s['exit_0']} (valid {s['exit_0_valid']}), "
            f"exit 2 {s['exit_2']}, other exits {s['exit_other_count']} {s['exit_other']}, "
            f"tracebacks {s['tracebacks']}; written but invalid {s['written_but_invalid']} "
            f"(--no-validate: {s['no_validate_invalid']}); task metric on exit-0 runs: mean {s['task_mean_exit_0']}, "
            f"{s['task_exact_exit_0']} exactly as dense")


if __name__ == "__main__":
    sys.exit(main())
