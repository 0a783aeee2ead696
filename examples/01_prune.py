"""Prune 40% of the channels of the shipped YOLO-style model and print what changed.

    python examples/01_prune.py [OUT]
"""

import sys
from pathlib import Path

from onnxprune import PruneOptions, prune

ROOT = Path(__file__).resolve().parent.parent
source = ROOT / "models" / "zoo" / "yolo_tiny.onnx"
target = Path(sys.argv[1] if len(sys.argv) > 1 else "yolo_tiny_pruned.onnx")

report = prune(source, target, PruneOptions(structured=0.4, shapes={"input": (1, 3, 64, 64)}))
before, after = report["before"], report["after"]
print(f"params {before['params']} -> {after['params']}, FLOPs {before['flops']} -> {after['flops']}")
for output in report["validation"]["outputs"]:
    print(f"output {output['name']}: cosine to the original {output['cosine']:.4f}")
print(f"ORT CPU speedup {report['validation']['speedup']:.2f}x; wrote {target}")
