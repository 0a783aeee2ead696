"""One table of `bench/llm.py` results: every mode against every SmolLM2 form, from several result files.

    python -m bench.llm_matrix llm.json llm_optimum.json ...     # file names under bench/results/

A later file's row replaces an earlier one for the same form, tool and mode. A cell is the perplexity
over the dense model's on the same windows, then the calibration windows it was pruned with, the eval
windows it was judged on, and `invalid`/`exit N`/`timeout` where the run did not give a valid model.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import RESULTS
from .llm import MODES

FORMS = ("plain", "dynamo", "optimum", "ort-optimized", "genai")


def merged(files: list[str]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(form, tool, mode) -> the run, with the file's calibration and eval windows attached."""
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    for name in files:
        results = json.loads((RESULTS / name).read_text())
        windows = {"calib": results.get("calib_windows"), "eval": results.get("eval_windows") or "all"}
        for form, entry in results.get("forms", {}).items():
            for tool, runs in (("onnxprune", entry.get("runs", {})), ("onnxsim", entry.get("onnxsim", {}))):
                for mode, run in runs.items():
                    cells[(form, tool, mode)] = {**run, "windows": windows, "file": name}
    return cells


def cell(run: dict[str, Any] | None) -> str:
    if run is None:
        return "-"
    if run.get("timed_out"):
        return "timeout"
    if run.get("exit") not in (0, None):
        return f"exit {run['exit']}"
    if not run.get("valid"):
        return "invalid"
    ratio = run["x_dense"]  # three decimals near the goals: x1.403 must not print as a met x1.40
    windows, parts = run["windows"], [f"x{ratio:.3f}" if ratio < 10 else f"x{ratio:.1f}"]
    calibrated = "--calib" in run.get("args", []) or "calibration_data" in run.get("call", "")
    if calibrated and windows["calib"] is not None:
        parts.append(f"c{windows['calib']}")
    if windows["eval"] != "all":
        parts.append(f"e{windows['eval']}")
    return " ".join(parts)


def matrix(files: list[str], tool: str = "onnxprune") -> str:
    cells = merged(files)
    forms = [form for form in FORMS if any(key[0] == form for key in cells)]
    lines = ["| mode | goal | " + " | ".join(forms) + " |", "|---|---|" + "---|" * len(forms)]
    for mode, (_, goal, _) in MODES.items():
        row = [cell(cells.get((form, tool, mode))) for form in forms]
        if set(row) != {"-"}:
            lines.append(f"| {mode} | {'<= ' + str(goal) if goal else ''} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="result files under bench/results/, later ones win")
    parser.add_argument("--tool", default="onnxprune", choices=("onnxprune", "onnxsim"))
    args = parser.parse_args(argv)
    print(matrix(args.files, args.tool))


if __name__ == "__main__":
    main()
