"""List the channel spaces of a model: which channels are coupled, which are pinned and why.

    python examples/02_inspect.py [MODEL]
"""

import sys
from pathlib import Path

from onnxprune import Model, build_channel_graph

ROOT = Path(__file__).resolve().parent.parent
path = sys.argv[1] if len(sys.argv) > 1 else ROOT / "models" / "zoo" / "yolo_tiny.onnx"

graph = build_channel_graph(Model.load(path))
for space in graph.spaces:
    status = "prunable" if space.prunable else f"pinned: {space.pins[0]}"
    tensors = sorted({member.tensor for member in space.weight_members})
    print(f"[{space.id:3}] {space.size:4} channels, {len(tensors)} weights  {space.label}  ({status})")
