"""Start-up: the onnxprune CLI on the shipped 1 MB model against onnxsim's CLI, side by side.

    python -m bench.startup [--runs 7] [--warmup 1] [--model models/zoo/yolo_tiny.onnx]

Each command runs in a fresh subprocess, as a user would type it; the commands alternate (one run of
each, then the next round), so a busy machine slows all of them alike. Figures are medians over
--runs rounds after --warmup discarded ones: wall time and the child's CPU time (user + system,
which a second process on the machine disturbs less).

  onnxprune           onnxprune MODEL out.onnx --structured 0.4 (validation on, the default)
  onnxprune-no-val    the same with --no-validate
  onnxsim             onnxsim MODEL out.onnx (the `bench` extra installs it)
  onnxsim-no-torch    onnxsim with `import torch` made to fail: its start-up on a box without torch
                      (this onnxsim imports torch whenever it is installed)
  floor               python -c "import onnx, onnxruntime": what every ONNX tool in Python pays first

Target: onnxprune's median wall time at most 1.5x that of onnxsim-no-torch (the stricter of the
two onnxsim figures). It also records whether the onnxprune run imported torch (it must not).
Results go to bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import machine_facts, table, write_results

_REPO = Path(__file__).resolve().parent.parent
MODEL = _REPO / "models" / "zoo" / "yolo_tiny.onnx"
TARGET = 1.5  # onnxprune wall time / onnxsim's (without torch)

_NO_TORCH_ONNXSIM = ("import sys; sys.modules['torch'] = None; from onnxsim import main; "
                     "sys.argv = ['onnxsim', *sys.argv[1:]]; sys.exit(main())")
_TORCH_CHECK = """
import runpy, sys
sys.argv = ["onnxprune", *sys.argv[1:]]
try:
    runpy.run_module("onnxprune", run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
print("TORCH-IMPORTED", "torch" in sys.modules)
"""


def _script(name: str) -> str | None:
    """The console script installed beside this Python (what a user's shell runs), else None."""
    return shutil.which(name, path=str(Path(sys.executable).parent))


def commands(model: Path, folder: Path) -> dict[str, list[str]]:
    prune = _script("onnxprune")
    prune = [prune] if prune else [sys.executable, "-m", "onnxprune"]
    found = {
        "onnxprune": [*prune, str(model), str(folder / "pruned.onnx"), "--structured", "0.4", "--quiet"],
        "onnxprune-no-val": [*prune, str(model), str(folder / "pruned_nv.onnx"), "--structured", "0.4",
                             "--no-validate", "--quiet"],
        "floor": [sys.executable, "-c", "import onnx, onnxruntime"],
    }
    onnxsim = _script("onnxsim")
    if onnxsim:
        found["onnxsim"] = [onnxsim, str(model), str(folder / "simplified.onnx")]
        found["onnxsim-no-torch"] = [sys.executable, "-c", _NO_TORCH_ONNXSIM, str(model),
                                     str(folder / "simplified_nt.onnx")]
    return found


def _run(command: list[str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run; raises with its stderr when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=_REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 3), "min": round(ordered[0], 3),
            "max": round(ordered[-1], 3)}


def torch_imported(model: Path, folder: Path) -> bool:
    done = subprocess.run([sys.executable, "-c", _TORCH_CHECK, str(model), str(folder / "check.onnx"),
                           "--structured", "0.4", "--quiet"], cwd=_REPO, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("TORCH-IMPORTED")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"the torch check failed:\n{done.stderr[-2000:]}")
    return line.split()[1] == "True"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="measured rounds (one run of every command each)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds first (file cache, .pyc files)")
    parser.add_argument("--model", type=Path, default=MODEL)
    args = parser.parse_args(argv)

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="onnxprune-startup-") as name:
        folder = Path(name)
        runs = commands(args.model, folder)
        walls: dict[str, list[float]] = {label: [] for label in runs}
        cpus: dict[str, list[float]] = {label: [] for label in runs}
        for round_number in range(args.warmup + args.runs):
            for label, command in runs.items():
                wall, cpu = _run(command)
                if round_number >= args.warmup:
                    walls[label].append(wall)
                    cpus[label].append(cpu)
            print(f"round {round_number + 1}/{args.warmup + args.runs}"
                  f"{' (warm-up)' if round_number < args.warmup else ''}", file=sys.stderr)
        imports_torch = torch_imported(args.model, folder)

    results = {label: {"command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(command))
                       .replace(str(folder), "$TMP").replace(str(_REPO) + "/", ""),
                       "wall_s": _summary(walls[label]), "cpu_s": _summary(cpus[label]),
                       "runs_wall_s": [round(v, 3) for v in walls[label]]}
               for label, command in runs.items()}
    ratios: dict[str, Any] = {}
    if "onnxsim" in results:
        for reference in ("onnxsim", "onnxsim-no-torch"):
            ratios[f"onnxprune/{reference}"] = {
                kind: round(results["onnxprune"][kind]["median"] / results[reference][kind]["median"], 3)
                for kind in ("wall_s", "cpu_s")}
    passed = bool(ratios) and ratios["onnxprune/onnxsim-no-torch"]["wall_s"] <= TARGET and not imports_torch
    payload = {
        "benchmark": "startup",
        "model": str(args.model.relative_to(_REPO) if args.model.is_relative_to(_REPO) else args.model),
        "model_bytes": args.model.stat().st_size,
        "runs": args.runs, "warmup": args.warmup,
        "target": f"onnxprune wall median <= {TARGET}x onnxsim-no-torch's; onnxprune does not import torch",
        "onnxprune_imports_torch": imports_torch,
        "results": results,
        "ratios": ratios,
        "passed": passed,
        "onnxsim": "installed" if "onnxsim" in results else "not installed (pip install -e '.[bench]')",
        # Other work on the machine slows every command alike (they alternate), but inflates wall times.
        "load_average_1m": {"before": load_before and round(load_before[0], 2),
                            "after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
        "machine": machine_facts(),
    }
    path = write_results("startup.json", payload)
    rows = [[label, item["wall_s"]["median"], item["cpu_s"]["median"], item["wall_s"]["min"]]
            for label, item in results.items()]
    print(table(["command", "wall s (median)", "cpu s (median)", "wall s (min)"], rows))
    for name, ratio in ratios.items():
        print(f"{name}: wall x{ratio['wall_s']}, cpu x{ratio['cpu_s']}")
    print(f"onnxprune imports torch: {imports_torch}; target met: {passed}; wrote {path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
