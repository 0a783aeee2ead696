"""The zero-oracle, by hand: zero every weight touching some channels, prune exactly those, and
check that the outputs do not move. This is how onnxprune's tests prove a rewrite is exact.

    python examples/03_zero_oracle.py
"""

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxprune import Model, PruneOptions, build_channel_graph, prune
from onnxprune.io.saving import save_model

ROOT = Path(__file__).resolve().parent.parent
model = Model.load(ROOT / "models" / "zoo" / "yolo_tiny.onnx")
graph = build_channel_graph(model)
rng = np.random.default_rng(0)
plan = {space.id: np.sort(rng.choice(space.size, int(0.4 * space.size), replace=False))
        for space in graph.prunable if int(0.4 * space.size)}

for (tensor, axis), indices in graph.removal(plan).items():
    if model.is_weight(tensor):
        weight = np.array(model.weight(tensor))
        np.moveaxis(weight, axis, 0)[indices] = 0
        model.set_weight(tensor, weight)

with tempfile.TemporaryDirectory() as folder:
    zeroed, pruned = Path(folder) / "zeroed.onnx", Path(folder) / "pruned.onnx"
    save_model(model, zeroed)
    # round_to=1: exactly the zeroed channels (the default aligns counts to the runtime's kernels)
    prune(zeroed, pruned, PruneOptions(structured=0.4, validate=False, round_to=1))
    feed = {"input": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)}
    expected = ort.InferenceSession(str(zeroed)).run(None, feed)
    got = ort.InferenceSession(str(pruned)).run(None, feed)
    worst = max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(expected, got))
    print(f"largest error relative to the output scale: {worst:.2e}")
    assert worst < 1e-5
