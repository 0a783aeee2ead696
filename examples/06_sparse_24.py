"""2:4 sparse weights for TensorRT's sparse tensor cores, then the pipeline gate before the engine build:
check the pattern, validate the outputs, and print the build command.

    python examples/06_sparse_24.py [OUT]

With real calibration data (`calib=` an .npz or loader script) the default criterion is SparseGPT;
without it, magnitude. The checker agrees with Polygraphy's `inspect sparsity`.
"""

import sys
from pathlib import Path

from onnxprune import Model, PruneOptions, prune
from onnxprune.sparsity.check import check_model
from onnxprune.sparsity.pattern import Pattern

ROOT = Path(__file__).resolve().parent.parent
source = ROOT / "models" / "zoo" / "yolo_tiny.onnx"
target = Path(sys.argv[1] if len(sys.argv) > 1 else "yolo_tiny_24.onnx")

# Structured first (channels gone for real), then 2:4 on what is left.
report = prune(source, target, PruneOptions(structured=0.25, round_to=8, sparse="2:4"))
sparsity = report["sparsity"]
print(f"{sparsity['sparse_weights']} weights made 2:4 ({sparsity['criterion']}), "
      f"{sparsity['ineligible_weights']} left dense:")
for weight in sparsity["weights"]:
    if not weight["eligible"]:
        print(f"  {weight['name']}: {weight['reason']}")

# Weights too small for TensorRT's sparse tiles stay dense by default (their reasons are listed above);
# every weight made sparse must follow the pattern as TensorRT reads it.
check = check_model(Model.load(target), Pattern.parse("2:4"))
assert check["sparse"] == sparsity["sparse_weights"], "every weight made sparse follows 2:4"
cosines = [output["cosine"] for output in report["validation"]["outputs"]]
print(f"check-sparsity: {check['sparse']} of {check['eligible']} eligible weights are 2:4; "
      f"output cosine to the original: {min(cosines):.3f}")
print(f"TensorRT here: {report['tensorrt'].get('reason', 'available')}")
print(f"build: {sparsity['build']['trtexec']}")
