"""The channel dependency graph: which channels of which tensors must be removed together."""

from __future__ import annotations

import fnmatch

from ..errors import InvalidOptionError
from ..io.model import Model
from .attention import settle_head_splits
from .builder import SpaceBuilder
from .kv_cache import settle_cache_outputs
from .rules import apply_rule
from .sharing import settle_readers
from .space import ChannelSpace, Member, Pin, Removal

__all__ = ["ChannelGraph", "ChannelSpace", "Member", "Pin", "Removal", "build_channel_graph"]


class ChannelGraph:
    """Channel spaces of a model, plus what the rewrite needs to apply a plan to them."""

    def __init__(self, model: Model, builder: SpaceBuilder, spaces: list[ChannelSpace]):
        self.model = model
        self.builder = builder
        self.spaces = spaces

    @property
    def prunable(self) -> list[ChannelSpace]:
        return [space for space in self.spaces if space.prunable]

    def space(self, space_id: int) -> ChannelSpace:
        return self.spaces[space_id]

    def exclude(self, patterns: list[str]) -> None:
        """Pin every space touching a node whose name matches one of the fnmatch patterns."""
        names = [node.name for node in self.model.graph.node]
        for pattern in patterns:
            matched = {name for name in names if fnmatch.fnmatchcase(name, pattern)}
            if not matched:
                raise InvalidOptionError(f"--exclude '{pattern}' matches no node name in the model")
            for space in self.spaces:
                if matched.intersection(space.nodes):
                    space.pins.append(Pin(f"excluded by --exclude '{pattern}'"))

    def removal(self, plan: dict[int, list[int]]) -> Removal:
        return self.builder.removal(plan, self.spaces)


def build_channel_graph(model: Model) -> ChannelGraph:
    builder = SpaceBuilder(model, model.infer_shapes())
    for node in model.graph.node:
        if not builder.is_derived(node) and not builder.is_claimed(node):
            builder.layouts.reader = node.output[0] if node.output else node.name
            try:
                apply_rule(builder, node)
            finally:
                builder.layouts.reader = None
    settle_head_splits(builder)
    builder.pin_shape_leaks()
    resizable = settle_cache_outputs(builder, builder.cache_pairs)
    for name in model.output_names:
        if name not in resizable:
            builder.pin(name, None, f"graph output '{name}'")
            continue
        head_axis = builder.cache_pairs[name].head_axis
        for axis in builder.tracked(name):
            if axis != head_axis:
                builder.pin(name, axis, f"graph output '{name}' (only a KV cache's head axis follows pruning)")
    for value in model.graph.input:
        if model.is_weight(value.name):
            builder.pin(value.name, None, f"initializer '{value.name}' is also a graph input (replaceable at run time)")
    settle_readers(builder, {root for root, pins in builder.pins_by_root().items() if pins})
    return ChannelGraph(model, builder, builder.spaces())
