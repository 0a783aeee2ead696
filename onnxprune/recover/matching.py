"""Where inside the graphs the pruned model is compared with the dense one.

Two kinds of tensors, both computed by the two graphs under the same name:
- cut tensors: activations that lost channels; the dense model's values, restricted to the channels
  the pruned model kept (cuts.py), are the target of the pruned model's;
- layer outputs of the same shape: the output of a layer that lost input channels only (a projection
  back into a residual stream, a classifier head), compared whole.
Both are checked on data (the same shape after restriction) before they count.
"""

from __future__ import annotations

import torch

from ..io.model import Model
from .cuts import Cuts
from .interpreter import GraphModule

MAX_MATCHED = 32  # intermediate tensors compared; more costs memory and time for little gain


def matching_points(teacher: Model, student: Model, cuts: Cuts | None = None) -> list[str]:
    """Candidate tensors in graph order, thinned evenly to MAX_MATCHED."""
    produced = {name for node in teacher.graph.node for name in node.output}
    outputs = set(student.output_names)
    cut = cuts.kept if cuts is not None else {}
    points = []
    for node in student.graph.node:
        changed = any(student.is_weight(name) and (not teacher.is_weight(name) or
                                                   teacher.weights[name].shape != student.weights[name].shape)
                      for name in node.input if name)
        points += [name for name in node.output
                   if name in produced and name not in outputs and (changed or name in cut)]
    if len(points) > MAX_MATCHED:
        points = [points[int(i * len(points) / MAX_MATCHED)] for i in range(MAX_MATCHED)]
    return points


class Teacher:
    """The dense model's interpreter, with its cut tensors restricted to the channels kept."""

    def __init__(self, net: GraphModule, cuts: Cuts | None, device: torch.device):
        self.net = net
        self.output_names = net.output_names
        self.select = {name: [(axis, torch.as_tensor(kept, dtype=torch.int64, device=device))
                              for axis, kept in axes.items()]
                       for name, axes in (cuts.kept.items() if cuts is not None else ())}

    def __call__(self, feed: dict, keep=()) -> dict[str, torch.Tensor]:
        values = self.net(feed, keep=keep)
        for name in keep:
            for axis, kept in self.select.get(name, ()):
                values[name] = values[name].index_select(axis, kept)
        return values
