"""Physically remove planned channels from every member of their space."""

from __future__ import annotations

import numpy as np

from onnxprune.pipeline import Context


def plan_summary(context: Context) -> list[dict]:
    """One entry per space, pinned ones included, for the report."""
    entries = []
    for space in context.channel_graph().spaces:
        removed = context.plan.get(space.id, np.zeros(0, np.int64))
        scores = context.scores.get(space.id)
        entry = space.to_dict()
        entry.update(
            kept=space.size - len(removed),
            removed=[int(i) for i in removed],
            scores=None if scores is None else [round(float(s), 6) for s in scores],
        )
        entries.append(entry)
    return entries


class RemoveChannels:
    name = "remove-channels"

    def run(self, context: Context) -> None:
        model, graph = context.model, context.channel_graph()
        context.report["spaces"] = plan_summary(context)
        removal = graph.removal({space: list(indices) for space, indices in context.plan.items()})
        for (tensor, axis), indices in removal.items():
            if model.is_weight(tensor):
                model.set_weight(tensor, np.delete(model.weight(tensor), indices, axis=axis))
        for fixup in graph.builder.fixups:
            fixup(removal)
        graph.builder.freeze_params()
        model.remove_unused()
        model.refresh_value_info()
        context.report["channels_removed"] = int(sum(len(v) for v in context.plan.values()))
        context.invalidate()
