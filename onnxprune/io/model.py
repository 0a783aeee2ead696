"""The Model: one object owning the graph, the weights, the opset and the file layout."""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import InvalidModelError
from . import protoio, protowrite, spill
from .protoio import WeightData
from .shapes import TensorInfo, clear_negative_dims, collect, onnx_inference, symbolic_inference, unresolved
from .wellformed import check_opset, check_structure, subgraph_outer_inputs

# Integer initializers up to this many elements are shape-like constants that shape inference needs.
_SHAPE_CONSTANT_LIMIT = 4096


class Model:
    """Graph (a ModelProto whose initializer list is kept empty) plus weights by name."""

    def __init__(self, proto: onnx.ModelProto, weights: list[WeightData], source: Path | None = None,
                 had_external_data: bool = False):
        self.proto = proto
        self.weights: dict[str, WeightData] = {}
        for weight in weights:
            if weight.name in self.weights:
                raise InvalidModelError(f"initializer name '{weight.name}' is used twice")
            self.weights[weight.name] = weight
        self.source = source
        self.had_external_data = had_external_data
        # Written back only if the input carried them: ORT picks different (here slower) fusions, e.g.
        # SkipLayerNormalization, when intermediate shapes are declared, so a model stays as it came.
        self.had_value_info = len(proto.graph.value_info) > 0
        self._index: tuple[dict, dict] | None = None
        self._shapes: dict[str, TensorInfo] | None = None
        # Changed weights beyond a budget go to a temporary file beside the input (spill.py), so a
        # pass that rewrites most of a big model never holds it twice. Set `held.budget` or
        # `held.folder` (e.g. the output's folder) before the passes run to change either.
        self.held = spill.HeldWeights(folder=source.parent if source is not None else None)
        self._maps: list = []  # the input's memory maps (Model.load), for release_pages

    # ------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | os.PathLike, any_opset: bool = False) -> Model:
        """Read `path` and check it is a well-formed model; `any_opset` skips the opset range onnxprune
        rewrites (for commands that only run models, like validate and bench)."""
        loaded = protoio.read_model(path)
        model = cls(loaded.proto, loaded.weights, Path(path), loaded.had_external_data)
        model._maps = loaded.maps
        clear_negative_dims(model.graph)
        check_opset(model.opset, any_opset)
        model.lift_constants()
        check_structure(model.graph, model.weights, model.opset)
        return model

    @classmethod
    def from_proto(cls, proto: onnx.ModelProto, base_dir: str | os.PathLike | None = None) -> Model:
        """Wrap an in-memory ModelProto (copied; weights become arrays)."""
        proto_copy = onnx.ModelProto()
        proto_copy.CopyFrom(proto)
        if base_dir is not None:
            onnx.external_data_helper.load_external_data_for_model(proto_copy, str(base_dir))
        weights = []
        for tensor in proto_copy.graph.initializer:
            weight = WeightData(TensorProto())
            weight.header.CopyFrom(tensor)
            weight.header.ClearField("raw_data")
            protoio.clear_typed_data(weight.header)
            if protoio.np_dtype(tensor.data_type) is not None:
                weight.array = numpy_helper.to_array(tensor)
            else:
                weight.header.CopyFrom(tensor)
            weights.append(weight)
        del proto_copy.graph.initializer[:]
        model = cls(proto_copy, weights)
        clear_negative_dims(model.graph)
        check_opset(model.opset)
        model.lift_constants()
        check_structure(model.graph, model.weights, model.opset)
        return model

    def copy(self) -> Model:
        """An independent model that shares this one's weight arrays instead of copying them.

        Sharing is safe because weights are replaced (set_weight), never written in place: loaded
        and spilled ones are read-only maps. to_proto + from_proto would hold the model twice more.
        """
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        weights = []
        for weight in self.weights.values():
            header = TensorProto()
            header.CopyFrom(weight.header)
            weights.append(dataclasses.replace(weight, header=header))
        model = Model(proto, weights, self.source, self.had_external_data)
        model.had_value_info = self.had_value_info
        model.held.folder = self.held.folder
        return model

    @property
    def graph(self) -> onnx.GraphProto:
        return self.proto.graph

    @property
    def opset(self) -> int | None:
        for entry in self.proto.opset_import:
            if entry.domain in ("", "ai.onnx"):
                return entry.version
        return None

    def lift_constants(self) -> int:
        """Turn main-graph Constant nodes into initializers so passes see all weights one way."""
        keep, lifted = [], 0
        for node in self.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
                try:
                    array = _constant_value(node)
                    if array is not None and node.output[0] not in self.weights:
                        self.weights[node.output[0]] = _weight_from_array(node.output[0], np.asarray(array))
                        lifted += 1
                        continue
                except (ValueError, TypeError) as exc:
                    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise InvalidModelError(f"Constant '{node.name or node.output[0]!r}' holds an unreadable tensor: "
                                            f"{detail}") from None
            keep.append(node)
        if lifted:
            del self.graph.node[:]
            self.graph.node.extend(keep)
            self.invalidate()
        return lifted

    # ------------------------------------------------------------ graph queries

    def invalidate(self) -> None:
        """Drop cached indices and shapes after the graph changed."""
        self._index = None
        self._shapes = None

    def _build_index(self) -> tuple[dict, dict]:
        producers: dict[str, onnx.NodeProto] = {}
        consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.output:
                if name:
                    producers[name] = node
            for index, name in enumerate(node.input):
                if name:
                    consumers[name].append((node, index))
            for name in sorted(subgraph_outer_inputs(node)):
                consumers[name].append((node, -1))  # -1: read inside a subgraph
        return producers, consumers

    def producer(self, name: str) -> onnx.NodeProto | None:
        if self._index is None:
            self._index = self._build_index()
        return self._index[0].get(name)

    def consumers(self, name: str) -> list[tuple[onnx.NodeProto, int]]:
        if self._index is None:
            self._index = self._build_index()
        return self._index[1].get(name, [])

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.graph.input if t.name not in self.weights]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.graph.output]

    def node_label(self, node: onnx.NodeProto) -> str:
        return f"{node.op_type} '{node.name or node.output[0]}'"

    # ------------------------------------------------------------ weights

    def is_weight(self, name: str) -> bool:
        return name in self.weights

    def weight(self, name: str) -> np.ndarray:
        return self.weights[name].numpy()

    def set_weight(self, name: str, array: np.ndarray) -> None:
        weight = self.weights[name]
        array = np.asarray(array)
        if weight.array is None or weight.array.dtype != array.dtype:
            weight.header.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        weight.array = array
        weight.opaque = None
        self.held.track(weight)
        self._shapes = None

    def add_weight(self, name: str, array: np.ndarray) -> str:
        """Add an initializer under a fresh name derived from `name`; returns the name used."""
        unique, counter = name, 0
        taken = set(self.weights) | {o for n in self.graph.node for o in n.output} | {t.name for t in self.graph.input}
        while unique in taken:
            counter += 1
            unique = f"{name}_{counter}"
        self.weights[unique] = _weight_from_array(unique, np.asarray(array))
        self.held.track(self.weights[unique])
        self._shapes = None
        return unique

    def set_node_input_constant(self, node: onnx.NodeProto, index: int, array: np.ndarray, hint: str) -> None:
        """Give `node` input `index` the value `array`, cloning the initializer if others share it."""
        name = node.input[index] if index < len(node.input) else ""
        if name and name in self.weights and len(self.consumers(name)) == 1 and name not in self.output_names:
            self.set_weight(name, array)
            return
        new_name = self.add_weight(hint, array)
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = new_name
        self.invalidate()

    def fresh_name(self, hint: str) -> str:
        taken = set(self.weights) | {o for n in self.graph.node for o in n.output} | {t.name for t in self.graph.input}
        name, counter = hint, 0
        while name in taken:
            counter += 1
            name = f"{hint}_{counter}"
        return name

    def clone_node_before(self, original: onnx.NodeProto, anchor: onnx.NodeProto, hint: str) -> onnx.NodeProto:
        """A copy of `original` with a fresh output name, placed just before `anchor`."""
        clone = onnx.NodeProto()
        clone.CopyFrom(original)
        clone.name = self.fresh_name(hint)
        del clone.output[:]
        clone.output.append(self.fresh_name(f"{hint}_output"))
        nodes = list(self.graph.node)
        position = next(i for i, n in enumerate(nodes) if list(n.output) == list(anchor.output))
        self.graph.node.insert(position, clone)
        self.invalidate()
        return self.graph.node[position]

    def remove_unused(self) -> None:
        """Remove nodes whose outputs nobody reads, then initializers nobody reads."""
        needed = set(self.output_names)
        kept = []
        for node in reversed(self.graph.node):
            if any(o in needed for o in node.output if o) or _has_side_effects(node):
                kept.append(node)
                needed.update(n for n in node.input if n)
                needed.update(subgraph_outer_inputs(node))
        if len(kept) != len(self.graph.node):
            kept.reverse()
            del self.graph.node[:]
            self.graph.node.extend(kept)
        for name in [n for n in self.weights if n not in needed]:
            self.held.forget(self.weights.pop(name))
        self.invalidate()

    # ------------------------------------------------------------ shapes

    def light_proto(self, input_shapes: dict[str, tuple[int, ...]] | None = None) -> onnx.ModelProto:
        """A copy for shape inference: big weights declared as typed inputs instead of carrying data."""
        light = onnx.ModelProto()
        light.CopyFrom(self.proto)
        graph = light.graph
        del graph.value_info[:]
        declared = {t.name for t in graph.input}
        for name, weight in self.weights.items():
            array = weight.array
            small_int = (
                array is not None
                and array.dtype.kind in "iub"
                and array.size <= _SHAPE_CONSTANT_LIMIT
            )
            if small_int or (array is not None and array.size <= 1):
                graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
            elif name not in declared:
                graph.input.append(helper.make_tensor_value_info(name, weight.data_type, list(weight.shape)))
        if input_shapes:
            for value in graph.input:
                if value.name in input_shapes:
                    dims = value.type.tensor_type.shape.dim
                    for dim, size in zip(dims, input_shapes[value.name]):
                        dim.Clear()
                        dim.dim_value = int(size)
        return light

    def infer_shapes(self, input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, TensorInfo]:
        """Shapes and element types of every tensor (cached until the graph changes).

        ONNX Runtime's symbolic shape inference comes first: it keeps symbolic dims consistent through
        Shape -> Concat -> Reshape chains (where onnx's own inference invents fresh `unk__` names),
        which the Reshape rules need to match axes. onnx's inference fills in what it leaves out.
        """
        if self._shapes is not None and not input_shapes:
            return self._shapes
        light = self.light_proto(input_shapes)
        infos: dict[str, TensorInfo] = {}
        first = onnx_inference(light)
        collect(first, infos)
        # sympy is slow to import and the symbolic pass slow on big graphs: only when onnx's own
        # inference left something unresolved, and not for the concrete shapes of FLOPs counting.
        # Also when it stopped at an op it has no schema for (ORT's contrib ops): ORT's knows them.
        stopped = any(name and name not in infos for node in self.graph.node for name in node.output)
        if not input_shapes and (first is None or stopped or unresolved(infos)):
            collect(symbolic_inference(light), infos)
        for name, weight in self.weights.items():
            infos[name] = TensorInfo(weight.data_type, weight.shape)
        if not input_shapes:
            self._shapes = infos
        return infos

    def refresh_value_info(self) -> None:
        """Replace stale value_info with freshly inferred shapes (none if the input declared none)."""
        del self.graph.value_info[:]
        self._shapes = None
        if not self.had_value_info:
            return
        inferred = onnx_inference(self.light_proto())
        if inferred is None:
            return
        boundary = {t.name for t in self.graph.input} | set(self.output_names) | set(self.weights)
        self.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in boundary)

    # ------------------------------------------------------------ saving

    def nbytes(self) -> int:
        total = 0
        for weight in self.weights.values():
            data = weight.array if weight.array is not None else weight.opaque
            total += data.nbytes if data is not None else 0
        return total

    def release_pages(self) -> None:
        """Let the input's pages read so far leave this process's RSS (they are read back on use).

        Saving does this: what follows (validation's ONNX Runtime sessions) then does not stack on
        a whole model's worth of resident, if reclaimable, pages.
        """
        protoio.release_mapped_pages(self._maps)
        if self.held.spill is not None:
            self.held.spill.release_pages()

    def source_files(self) -> set[Path]:
        """Files the weights are still read from (the input model and its external data)."""
        files = {Path(w.source[0]).resolve() for w in self.weights.values() if w.source is not None}
        if self.source is not None:
            files.add(self.source.resolve())
        return files

    def to_proto(self) -> onnx.ModelProto:
        """A self-contained ModelProto with every weight inline (for in-memory use and tests)."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        proto.graph.initializer.extend(self.initializer(name) for name in self.weights)
        return proto

    def initializer(self, name: str) -> TensorProto:
        """One weight as a self-contained initializer (its current values inline)."""
        weight = self.weights[name]
        tensor = TensorProto()
        tensor.CopyFrom(weight.header)
        if weight.array is not None:
            del tensor.dims[:]
            tensor.dims.extend(weight.array.shape)
            tensor.raw_data = protowrite.contiguous_le(weight.array).tobytes()
        elif weight.opaque is not None:
            tensor.raw_data = weight.opaque.tobytes()
        return tensor


def _weight_from_array(name: str, array: np.ndarray) -> WeightData:
    header = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
    return WeightData(header, array=array)


def _has_side_effects(node: onnx.NodeProto) -> bool:
    return node.domain not in ("", "ai.onnx", "com.microsoft") and not node.output


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            if protoio.np_dtype(attr.t.data_type) is None:
                return None
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None
