"""Propagation of channel layouts through the graph: the facts and operations rules work with (the
resulting channel spaces are assembled in assembly.py)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx

from ..io.model import Model, TensorInfo, subgraph_outer_inputs
from ..io.protoio import np_dtype
from . import assembly
from .atoms import AtomTable, Layout
from .kv_cache import CachePair, cache_head_axes, find_cache_pairs
from .layouts import LayoutTable
from .quantized import Dequantized, find_dequantized, subgraph_definitions
from .shape_values import ShapeValues
from .sharing import find_views, pull_view
from .space import ChannelSpace, Fixup, Pin, Removal


def _key(node: onnx.NodeProto) -> str:
    """A node's identity that survives protobuf handing out new Python wrappers: its first output."""
    return node.output[0] if node.output else node.name


class SpaceBuilder:
    """The context propagation rules work on: layouts per (tensor, axis), pins and fixups."""

    def __init__(self, model: Model, shapes: dict[str, TensorInfo]):
        self.model = model
        self.shapes = shapes
        self.shape_values = ShapeValues(model, shapes)
        self.atoms = AtomTable()
        self.layouts = LayoutTable()
        self._pins: list[tuple[str, int | None, Pin]] = []
        self.fixups: list[Fixup] = []
        # Parameter inputs computed from shapes that the rewrite turns into constants.
        self._frozen: dict[tuple[str, int], tuple[onnx.NodeProto, str, np.ndarray]] = {}
        self._size_slots: dict[tuple[str, int, int], tuple[str, int]] = {}
        self.head_axes: set[tuple[str, int]] = set()  # axes a Reshape split off as attention heads
        # Head layouts that fused attention ops (GroupQueryAttention, MultiHeadAttention...) read as heads.
        self.attention_heads: list[Layout] = []
        # Reshape splits of a channel axis into [H, D] blocks: heads only where attention reads them.
        self.head_splits: list[tuple[str, int, Layout, onnx.NodeProto]] = []
        # DequantizeLinear outputs of constant int weights (QDQ models): rules treat them as weights.
        self.dequantized: dict[str, Dequantized] = find_dequantized(model)
        # Float tensors computed from constants only (Identity, Cast, scale Mul...): weights to the rules.
        self.views: dict[str, onnx.NodeProto] = find_views(model, shapes, self.dequantized)
        # KV-cache inputs (past_key_values.N.key) whose head axis may follow the heads removed.
        self.cache_pairs: dict[str, CachePair] = find_cache_pairs(model.graph, model.weights)
        self._cache_axes = cache_head_axes(self.cache_pairs)
        self.claimed: set[str] = set()  # nodes a pattern rule handled together with an earlier node
        self._pin_shadowed_names()


    # ------------------------------------------------------------ facts rules need

    def rank(self, tensor: str) -> int | None:
        info = self.shapes.get(tensor)
        return None if info is None else info.rank

    def dim(self, tensor: str, axis: int) -> int | None:
        info = self.shapes.get(tensor)
        return None if info is None else info.static_dim(axis)

    def dims(self, tensor: str) -> tuple | None:
        info = self.shapes.get(tensor)
        return None if info is None else info.shape

    def const(self, tensor: str) -> np.ndarray | None:
        """Value of an initializer input ('' or activation: None)."""
        if tensor and self.model.is_weight(tensor):
            return self.model.weight(tensor)
        return None

    def param(self, node: onnx.NodeProto, index: int) -> list[int] | None:
        """An integer parameter input (split sizes, slice bounds, shape...) if known before run time.

        A value computed from shapes is frozen: the rewrite replaces it with a constant, so that
        removing channels cannot change it behind the rule's back.
        """
        values = self.partial_param(node, index)
        if values is None or any(v is None for v in values):
            return None
        name = node.input[index]
        if not self.model.is_weight(name):
            self._frozen[(_key(node), index)] = (node, name, np.array(values, np.int64))
        return values

    def partial_param(self, node: onnx.NodeProto, index: int) -> list[int | None] | None:
        """Like param, with None for entries only known at run time; nothing is frozen."""
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            return None
        if self.model.is_weight(name):
            value = self.model.weight(name)
            return [int(v) for v in np.asarray(value).reshape(-1)] if value.dtype.kind in "iu" else None
        derived = self.shape_values.get(name)
        if derived is None or derived.value.dtype.kind not in "iu":
            return None
        return [int(v) if known else None
                for v, known in zip(derived.value.reshape(-1), derived.known.reshape(-1))]

    def write_param(self, node: onnx.NodeProto, index: int, values, hint: str) -> None:
        """Set an integer parameter input to constant `values`, in the element type it had (int32 or int64)."""
        name = node.input[index] if index < len(node.input) else ""
        info = self.shapes.get(name) if name else None
        dtype = onnx.helper.tensor_dtype_to_np_dtype(info.elem_type) if info and info.elem_type else np.int64
        self.model.set_node_input_constant(node, index, np.asarray(values).astype(dtype), hint)

    def is_derived(self, node: onnx.NodeProto) -> bool:
        """True for nodes no rule runs on: those that only compute shape values (ShapeValues) and
        views of weights (their layouts are pulled from their sources when asked for)."""
        outputs = [name for name in node.output if name]
        return bool(outputs) and (all(name in self.shape_values for name in outputs) or outputs[0] in self.views)

    def claim(self, node: onnx.NodeProto) -> None:
        """A pattern rule handled `node` together with an earlier node: no rule runs on it."""
        self.claimed.add(_key(node))

    def is_claimed(self, node: onnx.NodeProto) -> bool:
        return _key(node) in self.claimed

    def freeze_params(self) -> None:
        """Replace frozen shape-derived parameter inputs that no fixup rewrote with constants."""
        for node, name, value in self._frozen.values():
            for index, current in enumerate(node.input):
                if current == name:
                    self.write_param(node, index, value, f"{node.name or node.op_type}_param")

    def size_slot(self, node: onnx.NodeProto, index: int, element: int, tensor: str, axis: int) -> None:
        """Element `element` of input `index` of `node` is the size of (tensor, axis) at run time.

        If it is an unchanged copy of a size in the same channel space, it stays right after pruning
        and needs neither a rewrite nor a pin (checked when propagation is done)."""
        self._size_slots[(_key(node), index, element)] = (tensor, axis)

    def same_space(self, a: tuple[str, int], b: tuple[str, int], factor: int = 1) -> bool:
        """Does `factor` times the size of axis a always equal the size of axis b, however they are pruned?"""
        layout_a, layout_b = self.layouts.get(a), self.layouts.get(b)
        if layout_a is None or layout_b is None:
            return False
        scaled = [(self.atoms.find(leaf), block * factor) for leaf, block in self.atoms.leaves(layout_a)]
        return scaled == [(self.atoms.find(leaf), block) for leaf, block in self.atoms.leaves(layout_b)]

    def pin_shape_leaks(self) -> None:
        """Pin the sizes a shape value was computed from wherever it reaches more than a frozen
        parameter or a size that follows its own space."""
        outputs = set(self.model.output_names)
        for name, derived in self.shape_values.values.items():
            if not derived.all_sources:
                continue
            origins = derived.origins.reshape(-1).tolist()
            for node, index in self.model.consumers(name):
                if self.is_derived(node) or (_key(node), index) in self._frozen:
                    continue
                reason = f"its size is read at run time by {self.model.node_label(node)}"
                for element, origin in enumerate(origins):
                    sized = self._size_slots.get((_key(node), index, element))
                    if sized and origin.copy_of and origin.sources == {origin.copy_of} and self.same_space(
                            origin.copy_of, sized, origin.factor):
                        continue
                    for tensor, axis in origin.sources:
                        self.pin(tensor, axis, reason)
            if name in outputs:
                for tensor, axis in derived.all_sources:
                    self.pin(tensor, axis, f"its size is a graph output ('{name}')")

    def is_weight(self, tensor: str) -> bool:
        """An initializer, or the dequantized value of one (rules see a QDQ weight like a float one)."""
        return bool(tensor) and (self.model.is_weight(tensor) or tensor in self.dequantized or tensor in self.views)

    def weight_shape(self, tensor: str) -> tuple[int, ...]:
        """Current shape of a weight (of its quantized initializer for a DequantizeLinear output)."""
        if tensor in self.views:
            return tuple(self.shapes[tensor].shape)
        source = self.dequantized.get(tensor)
        return tuple(self.model.weights[source.q if source else tensor].shape)

    def _pin_shadowed_names(self) -> None:
        """Pin main-graph tensors that a subgraph defines again under the same name. onnx's shape
        inference resolves such a name to the outer tensor inside the subgraph, so slicing the outer
        one makes the checker reject a model that was valid."""
        for node in self.model.graph.node:
            for name in sorted(subgraph_definitions(node)):
                self.pin(name, None, f"a subgraph of {self.model.node_label(node)} defines '{name}' again", node)

    # ------------------------------------------------------------ layouts

    def tracked(self, tensor: str) -> dict[int, Layout]:
        return self.layouts.of(tensor)

    def layout(self, tensor: str, axis: int, node: onnx.NodeProto | None = None, create: bool = True) -> Layout | None:
        """The layout of an input axis; weights get fresh atoms, untracked activations pinned ones."""
        key = (tensor, axis)
        if key in self.layouts:
            return self.layouts[key]
        if not create or not tensor:
            return None
        size = self.dim(tensor, axis)
        if size is None or size <= 0:
            return None
        layout = self.atoms.fresh(size)
        self.layouts[key] = layout
        dequantized = self.dequantized.get(tensor)
        if dequantized is not None:
            # The dequantized axis is the quantized weight's axis, and for the quantization axis also
            # the per-channel scale's and zero point's: they lose the same channels.
            reader, self.layouts.reader = self.layouts.reader, tensor  # read by the DequantizeLinear
            try:
                tied = [self.layout(name, index, node) for name, index in dequantized.members(axis)]
            finally:
                self.layouts.reader = reader
            self.tie([layout] + tied, node)
        elif tensor in self.views:
            self.tie([layout] + pull_view(self, tensor, axis, node), node)
        elif self.model.is_weight(tensor) and np_dtype(self.model.weights[tensor].data_type) is None:
            self.pin(tensor, axis, f"weight '{tensor}' has a packed element type (int4...), never sliced", node)
        elif not self.is_weight(tensor) and key not in self._cache_axes:
            origin = self.model.producer(tensor)
            source = f"produced by {self.model.node_label(origin)}" if origin is not None else "a graph input"
            self.pin(tensor, axis, f"axis {axis} of '{tensor}' ({source}) carries no tracked channels",
                     node)
        return layout

    def set_output(self, tensor: str, axis: int, layout: Layout | None) -> None:
        if layout is None or not tensor:
            return
        key = (tensor, axis)
        if key in self.layouts:
            self.tie([self.layouts[key], layout], None)
        else:
            self.layouts[key] = layout

    def tie(self, layouts: list[Layout | None], node: onnx.NodeProto | None) -> Layout | None:
        present = [layout for layout in layouts if layout is not None]
        if not present:
            return None
        first = present[0]
        for other in present[1:]:
            if not self.atoms.unify(first, other):
                for layout in present:
                    self.pin_layout(layout, "channel counts disagree", node)
        return first

    def merge(self, items: list[tuple[str, int]], node: onnx.NodeProto) -> Layout | None:
        """Tie the given input axes together. Untracked ones join as pinned atoms."""
        if not any(key in self.layouts or self.is_weight(key[0]) for key in items):
            return None
        layouts = [self.layout(tensor, axis, node) for tensor, axis in items]
        if any(layout is None for layout in layouts):
            for tensor, axis in items:
                self.pin(tensor, axis, "an operand's size on this axis is unknown", node)
        return self.tie(layouts, node)

    def sub_layout(self, layout: Layout, start: int, length: int) -> Layout | None:
        """Channels [start, start + length) of a layout; None when the cut would split a block."""
        return self.atoms.sub_layout(layout, start, length)

    def concat_layouts(self, layouts: list[Layout]) -> Layout:
        return tuple(atom for layout in layouts for atom in layout)

    # ------------------------------------------------------------ pins and fixups

    def pin(self, tensor: str, axis: int | None, reason: str, node: onnx.NodeProto | None = None) -> None:
        label = self.model.node_label(node) if node is not None else None
        self._pins.append((tensor, axis, Pin(reason, label)))

    def pin_layout(self, layout: Layout, reason: str, node: onnx.NodeProto | None = None) -> None:
        key = f"\0layout{len(self._pins)}"
        self.layouts[(key, 0)] = layout
        self.pin(key, 0, reason, node)

    def pin_node(self, node: onnx.NodeProto, reason: str) -> None:
        """Pin every axis of every tensor the node reads or writes."""
        for name in list(node.input) + sorted(subgraph_outer_inputs(node)) + list(node.output):
            if name:
                self.pin(name, None, reason, node)

    def add_fixup(self, fixup: Fixup) -> None:
        self.fixups.append(fixup)

    # ------------------------------------------------------------ result

    def spaces(self) -> list[ChannelSpace]:
        return assembly.spaces(self)

    def pins_by_root(self) -> dict[int, list[Pin]]:
        """The pins of every class of atoms, by the class's root."""
        atoms, pins = self.atoms, defaultdict(list)
        for tensor, axis, pin in self._pins:
            for layout_axis, layout in self.layouts.of(tensor).items():
                if axis is None or axis == layout_axis:
                    for leaf, _ in atoms.leaves(layout):
                        root = atoms.find(leaf)
                        if pin not in pins[root]:
                            pins[root].append(pin)
        return pins

    def removal(self, plan: dict[int, np.ndarray], spaces: list[ChannelSpace]) -> Removal:
        return assembly.removal(plan, spaces)
