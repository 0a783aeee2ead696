"""Calibration-aware pruning from Python: activation scores, least-squares compensation, and a
FLOPs target reached with per-space ratios from sensitivity curves.

    python examples/05_calibrate.py [OUT]

Real deployments pass real inputs (an .npz of input name -> [N, ...], or a loader script); here
seeded noise stands in for images so the example runs anywhere.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

from onnxprune import PruneOptions, prune

ROOT = Path(__file__).resolve().parent.parent
source = ROOT / "models" / "zoo" / "yolo_tiny.onnx"
target = Path(sys.argv[1] if len(sys.argv) > 1 else "yolo_tiny_calibrated.onnx")

with tempfile.TemporaryDirectory() as folder:
    calib = Path(folder) / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((16, 3, 64, 64)).astype(np.float32))
    report = prune(source, target, PruneOptions(target_flops=0.6, calib=str(calib), validate=False))

print(f"criterion {report['criterion']}, FLOPs kept {report['after']['flops'] / report['before']['flops']:.2f}")
print(f"layers refit by compensation: {report['compensation']['layers_refit']}")
ratios = sorted(set(report["budget"]["ratios"].values()))
print(f"per-space ratios chosen from sensitivity: {ratios}; wrote {target}")
