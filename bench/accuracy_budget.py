"""Accuracy at a budget on real models (issue 15): refit only, budget by quality, and recovery, side by side.

    python -m bench.accuracy_budget [--models ppocrv5_det,ppocrv5_rec,...] [--calib 10] [--eval 16]
                                    [--structured 0.2] [--recover-time 120] [--timeout 1200]
                                    [--modes refit,...] [--out accuracy_budget.json]

For each corpus model, with `--calib N` real calibration samples (images, words, sentences; default
10, the issue's "about 10") and the task metric on `--eval` other real samples against the dense model
(models.real.task_metric: detection F1, prob-map IoU, exact strings, embedding cosine), these runs of
`python -m onnxprune IN OUT ... --calib CALIB.py` as a user types them:

- `refit`:        `--structured R` (uniform ratio, `--structured`, default 0.2; least-squares refit of what stays);
- `sensitivity`:  `--target-params 0.75` (per-space ratios from sensitivity curves at the issue's budget);
- `max-error E`:  `--max-error E` for each E of `--errors` (the deepest cut within E on held-out data);
- `recover`:      `--structured R --recover --recover-time T` (distillation from the dense model).

Every row records the parameter and FLOPs ratios, the task metric, validity (onnx full check, ORT on the
eval feeds) and wall time. The prune runs in a child process (bench/_real_runs.py). Results go to
bench/results/accuracy_budget.json after every model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _real_runs
from ._common import machine_facts, table, write_results

MODELS = ("ppocrv5_det", "ppocrv5_rec", "ddddocr_det", "minilm_l3_paraphrase")
ERRORS = (0.01, 0.03)


def modes(errors: tuple[float, ...], recover_time: float, ratio: float = 0.2) -> dict[str, list[str]]:
    runs = {"refit": ["--structured", f"{ratio:g}"], "sensitivity": ["--target-params", "0.75"]}
    runs.update({f"max-error {e:g}": ["--max-error", f"{e:g}"] for e in errors})
    runs["recover"] = ["--structured", f"{ratio:g}", "--recover", "--recover-time", f"{recover_time:g}"]
    return runs


def run_model(name: str, runs: dict[str, list[str]], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    prep = _real_runs.prepare(name, work, args.calib, args.eval)
    rows = []
    for mode, argv in runs.items():
        _real_runs.MODES[mode] = (argv, None)  # run_mode looks its arguments up by name
        row = _real_runs.run_mode(prep, mode, calibrated=True, validate=True, work=work, timeout=args.timeout)
        rows.append(row)
        task = row.get("task") or {}
        print(f"  {name:22} {mode:16} exit {row['exit']}  params {row.get('params_ratio')}  "
              f"flops {row.get('flops_ratio')}  {task.get('metric')} {task.get('value')}  {row['seconds']} s",
              flush=True)
    return {"rows": rows, "calib_samples": args.calib, "eval_samples": args.eval}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--modes", default=None, help="comma-separated subset of the run names")
    parser.add_argument("--errors", default=",".join(f"{e:g}" for e in ERRORS))
    parser.add_argument("--calib", type=int, default=10)
    parser.add_argument("--eval", type=int, default=16)
    parser.add_argument("--recover-time", type=float, default=120.0)
    parser.add_argument("--structured", type=float, default=0.2, help="ratio of the refit and recover runs")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--out", default="accuracy_budget.json")
    args = parser.parse_args(argv)
    runs = modes(tuple(float(e) for e in args.errors.split(",") if e), args.recover_time, args.structured)
    if args.modes:
        runs = {key: value for key, value in runs.items() if key in args.modes.split(",")}
    results: dict[str, Any] = {"machine": machine_facts(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "command": "python -m bench.accuracy_budget " + " ".join(argv or []), "models": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            print(name, flush=True)
            results["models"][name] = run_model(name, runs, args, Path(folder))
            write_results(args.out, results)
    lines = []
    for name, result in results["models"].items():
        for row in result["rows"]:
            task = row.get("task") or {}
            lines.append([name, row["mode"], row["exit"], row.get("params_ratio"), row.get("flops_ratio"),
                          f"{task.get('metric')} {task.get('value')}", row["seconds"]])
    print(table(["model", "run", "exit", "params", "flops", "task vs dense", "s"], lines))


if __name__ == "__main__":
    main()
