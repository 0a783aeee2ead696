"""The same input, flags and seed give byte-identical output files, in every mode, across processes.

Each side runs every mode in one fresh interpreter with a different PYTHONHASHSEED, so an order that
leaks from set or dict iteration over strings, from the clock or from an unseeded generator shows up
as differing bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# name -> (zoo model, options); every option set of `onnxprune.PruneOptions` the CLI exposes as a mode.
MODES = {
    "structured": ("resnet", {"structured": 0.4}),
    "global-round": ("mobile", {"structured": 0.3, "global_ranking": True, "round_to": 4}),
    "calibrated": ("yolo", {"structured": 0.3, "criterion": "wanda", "compensate": True}),
    "target-flops": ("resnet", {"target_flops": 0.6}),
    "heads": ("bert", {"heads": 0.5}),
    "drop-layers": ("gpt", {"drop_layers": 1}),
    "heads-ffn-calibrated": ("gpt", {"heads": 0.25, "structured": 0.25, "criterion": "wanda"}),
    "sparse": ("mlp", {"sparse": "2:4"}),
    "sparse-sparsegpt": ("mlp", {"sparse": "2:4", "criterion": "sparsegpt"}),
    "structured-then-sparse": ("resnet", {"structured": 0.3, "sparse": "2:4"}),
}

_CHILD = r"""
import json, sys
from pathlib import Path
from onnxprune import PruneOptions, prune

jobs, out = json.loads(sys.argv[1]), Path(sys.argv[2])
for name, (source, options) in jobs.items():
    # Without --calib the activation criteria run on seeded random batches: seed 3 here.
    prune(source, out / f"{name}.onnx", PruneOptions(**options, validate=False, seed=3))
"""


def _run_all(jobs: dict, folder: Path, hash_seed: str) -> dict[str, bytes]:
    folder.mkdir()
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(jobs), str(folder)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_every_mode_is_byte_identical_across_processes(zoo, tmp_path):
    jobs = {name: (str(zoo(model)), options) for name, (model, options) in MODES.items()}
    first = _run_all(jobs, tmp_path / "a", "1")
    second = _run_all(jobs, tmp_path / "b", "2")
    assert sorted(first) == sorted(f"{name}.onnx" for name in MODES)
    differing = [name for name in first if first[name] != second[name]]
    assert not differing, differing
