"""Run the pass pipeline from Python: L2 scores, a global budget rounded to multiples of 8,
one layer excluded by name, then the rewrite.

    python examples/04_pipeline.py [OUT]
"""

import sys
from pathlib import Path

from onnxprune.passes import ChannelBudget, Magnitude, RemoveChannels

from onnxprune import Model
from onnxprune.io.saving import save_model
from onnxprune.pipeline import Context, run_pipeline
from onnxprune.plan import Budget

ROOT = Path(__file__).resolve().parent.parent
model = Model.load(ROOT / "models" / "zoo" / "yolo_tiny.onnx")
first_conv = model.graph.node[0].name
context = Context(model, options={"exclude": [first_conv]})
budget = Budget(ratio=0.3, global_ranking=True, round_to=8)
run_pipeline([Magnitude(p=2), ChannelBudget(budget), RemoveChannels()], context)
print(f"removed {context.report['channels_removed']} channels; '{first_conv}' left alone")
save_model(model, sys.argv[1] if len(sys.argv) > 1 else "yolo_tiny_pipeline.onnx")
