"""Tiny hand-built ONNX graphs for rule tests: onnx.helper plus seeded random float32 weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    """Collects nodes, initializers, inputs and outputs; names every node after its (first) output."""

    def __init__(self, opset: int = 17, seed: int = 0):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.domains: dict[str, int] = {}
        self._names: set[str] = set()

    def _fresh(self, base: str) -> str:
        name, counter = base, 0
        while name in self._names:
            counter += 1
            name = f"{base}_{counter}"
        self._names.add(name)
        return name

    # ------------------------------------------------------------ tensors

    def input(self, shape: Sequence[int | str | None], name: str = "x", elem_type: int = TensorProto.FLOAT) -> str:
        name = self._fresh(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def weight(self, shape: Sequence[int], name: str = "w", positive: bool = False) -> str:
        """A random float32 initializer (positive values in [0.5, 1.5) when asked, e.g. BN variance)."""
        if positive:
            array = self.rng.uniform(0.5, 1.5, size=tuple(shape))
        else:
            array = self.rng.standard_normal(tuple(shape)) / np.sqrt(max(1, int(np.prod(shape[1:]))))
        return self.const(np.asarray(array, np.float32), name)

    def const(self, array, name: str = "c") -> str:
        name = self._fresh(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, values, name: str = "i") -> str:
        return self.const(np.asarray(values, np.int64), name)

    def scalar(self, value: float, name: str = "s") -> str:
        return self.const(np.asarray(value, np.float32), name)

    # ------------------------------------------------------------ nodes

    def op(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1, name: str | None = None,
           domain: str = "", **attrs):
        """Add a node; returns its output name (or the list of names when it has several)."""
        base = name or op_type.lower()
        node_name = self._fresh(base)
        if isinstance(outputs, int):
            names = [node_name] + [self._fresh(f"{node_name}_out{i}") for i in range(1, outputs)]
        else:
            names = list(outputs)
            self._names.update(names)
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=node_name, domain=domain or None,
                                           **attrs))
        return names[0] if len(names) == 1 else names

    def conv(self, x: str, cin: int, cout: int, k: int = 3, bias: bool = True, group: int = 1,
             name: str = "conv", **attrs) -> str:
        node = self._fresh(name)
        self._names.discard(node)
        weight = self.weight((cout, cin // group, k, k), f"{node}_W")
        inputs = [x, weight] + ([self.weight((cout,), f"{node}_B")] if bias else [])
        attrs.setdefault("pads", [k // 2] * 4)
        if group != 1:
            attrs["group"] = group
        return self.op("Conv", inputs, name=node, kernel_shape=[k, k], **attrs)

    def output(self, *names: str, elem_type: int = TensorProto.FLOAT) -> None:
        for name in names:
            self.outputs.append(helper.make_tensor_value_info(name, elem_type, None))

    # ------------------------------------------------------------ result

    def model(self, infer: bool = True, ir_version: int | None = None) -> onnx.ModelProto:
        """The ModelProto; with `infer`, intermediate value_info is filled in the way exporters do."""
        graph = helper.make_graph(self.nodes, "g", self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in self.domains.items()]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxprune-tests")
        model.ir_version = ir_version or helper.find_min_ir_version_for(opsets[:1])
        if infer and not self.domains:
            model = onnx.shape_inference.infer_shapes(model)
            _declare_output_shapes(model)
        return model


def _declare_output_shapes(model: onnx.ModelProto) -> None:
    """Outputs that shape inference left without a shape (function ops...) get the one ORT computes."""
    missing = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if not missing:
        return
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feed = {}
    for value in model.graph.input:
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 2 for d in tensor_type.shape.dim]
        feed[value.name] = rng.standard_normal(shape).astype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    results = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    for output in missing:
        dims = output.type.tensor_type.shape.dim
        for size in results[output.name].shape:
            dims.add().dim_value = size
