"""Parameter count, on-disk size and FLOPs of a model, computed without ONNX Runtime."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx
import onnx.inliner
import onnx.shape_inference
from onnx import TensorProto, helper

from onnxprune.errors import InvalidOptionError

from .counts_contrib import counter_for, needs_ort_shapes, onnx_attention, ort_static_shapes

FLOAT_TYPES = frozenset(
    value
    for name, value in TensorProto.DataType.items()
    if name.startswith(("FLOAT", "BFLOAT")) or name == "DOUBLE"
)
_STANDARD_DOMAINS = ("", "ai.onnx")
# Shape inference reads the values of small constants (Reshape targets, Slice starts,
# Resize scales); big weights only need their shape, so the copy leaves their data out.
_KEEP_DATA_MAX_ELEMENTS = 4096

Shape = tuple[int, ...]
ShapeOf = Callable[[str], Shape | None]


@dataclass
class FlopsReport:
    """FLOPs for one inference (multiply-add = 2 FLOPs).

    `unknown`: nodes of counted op types whose shapes could not be inferred (counted as 0).
    `uncounted`: nodes that do compute but have no formula here (control flow, RNNs,
    Einsum, custom domains); also counted as 0.
    """

    total: int = 0
    by_op_type: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    uncounted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Per node, keyed by its first output (stable across renames of nodes); left out of to_dict.
    by_node: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("by_node")
        return data


# --- parameters and size -------------------------------------------------------------


def count_params(model: onnx.ModelProto) -> int:
    """Elements of floating-point weights: initializers plus Constant nodes of the main graph."""
    graph = model.graph
    total = sum(
        math.prod(t.dims) for t in graph.initializer if t.data_type in FLOAT_TYPES
    )
    total += sum(
        math.prod(s.dims)
        for s in graph.sparse_initializer
        if s.values.data_type in FLOAT_TYPES
    )
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in _STANDARD_DOMAINS:
            total += _constant_params(node)
    return total


def _constant_params(node: onnx.NodeProto) -> int:
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type in FLOAT_TYPES:
            return math.prod(attr.t.dims)
        if (
            attr.name == "sparse_value"
            and attr.sparse_tensor.values.data_type in FLOAT_TYPES
        ):
            return math.prod(attr.sparse_tensor.dims)
        if attr.name == "value_floats":
            return len(attr.floats)
        if attr.name == "value_float":
            return 1
    return 0


def _all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for subgraph in attr.graphs:
            yield from _graph_tensors(subgraph)


# --- FLOPs ---------------------------------------------------------------------------


def count_flops(
    model: onnx.ModelProto, input_shapes: Mapping[str, Shape]
) -> FlopsReport:
    """FLOPs of the main graph with its inputs at `input_shapes`; `model` is left untouched."""
    report = FlopsReport()
    graph, shapes = _infer_shapes(model, input_shapes, report.notes)

    def shape_of(name: str) -> Shape | None:
        return shapes.get(name) if name else None

    for node in graph.node:
        label = node.name or f"{node.op_type}:{node.output[0] if node.output else '?'}"
        # A contrib op (some of which ORT registers in the default domain) before the ONNX formulas.
        counter = counter_for(node) or (
            _COUNTERS.get(node.op_type) if node.domain in _STANDARD_DOMAINS else None
        )
        if counter is None:
            if node.domain not in _STANDARD_DOMAINS or node.op_type in _UNCOUNTED_OPS:
                report.uncounted.append(label)
            continue
        flops = counter(node, shape_of)
        if flops is None:
            report.unknown.append(label)
            continue
        report.by_op_type[node.op_type] = report.by_op_type.get(node.op_type, 0) + flops
        if node.output:
            report.by_node[node.output[0]] = flops
        report.total += flops
    return report


def _infer_shapes(
    model: onnx.ModelProto, input_shapes: Mapping[str, Shape], notes: list[str]
) -> tuple[onnx.GraphProto, dict[str, Shape]]:
    """Static shapes of every tensor; the graph returned is the one they belong to."""
    light = _shape_inference_copy(model, input_shapes)
    try:
        if light.functions:
            # Inlining lets shape inference see through, and count, local function bodies.
            light = onnx.inliner.inline_local_functions(light)
        inferred = onnx.shape_inference.infer_shapes(
            light, check_type=False, strict_mode=False, data_prop=True
        )
    # Shape inference raises assorted C++-bound errors; FLOPs are a statistic, so degrade.
    except Exception as exc:
        notes.append(
            f"shape inference failed, FLOPs are incomplete: {_first_line(exc)}"
        )
        return light.graph, {}
    graph = inferred.graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        shape = _static_shape(value)
        if shape is not None:
            shapes[value.name] = shape
    # ONNX stops at the first contrib op, and leaves dims that only data propagation through masks
    # and rotary tables would fix symbolic; ORT's own symbolic inference goes through both.
    counted = [node for node in graph.node if node.output and (
        counter_for(node) or (node.domain in _STANDARD_DOMAINS and node.op_type in _COUNTERS))]
    if needs_ort_shapes(graph) or any(node.output[0] not in shapes for node in counted):
        for name, shape in ort_static_shapes(light, notes).items():
            shapes.setdefault(name, shape)
    return graph, shapes


def _shape_inference_copy(
    model: onnx.ModelProto, input_shapes: Mapping[str, Shape]
) -> onnx.ModelProto:
    """A copy of `model` with inputs fixed to `input_shapes` and big weights reduced to their type.

    Building it node by node, rather than CopyFrom plus serialization, keeps weights out
    of the (single) serialization that shape inference does.
    """
    graph = model.graph
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    out = light.graph
    out.name = graph.name

    weights = {t.name for t in graph.initializer} | {
        s.values.name for s in graph.sparse_initializer
    }
    feedable = [value.name for value in graph.input if value.name not in weights]
    for name in input_shapes:
        if name not in feedable:
            raise InvalidOptionError(
                f"--shapes: model has no input '{name}' (inputs: {', '.join(feedable) or 'none'})"
            )

    inputs: dict[str, onnx.ValueInfoProto] = {}
    for value in graph.input:
        copied = onnx.ValueInfoProto()
        copied.CopyFrom(value)
        if value.name in input_shapes:
            _set_shape(copied, input_shapes[value.name])
        inputs[value.name] = copied
    for tensor in graph.initializer:
        if (
            tensor.data_location != TensorProto.EXTERNAL
            and math.prod(tensor.dims) <= _KEEP_DATA_MAX_ELEMENTS
        ):
            out.initializer.append(tensor)
        else:
            inputs[tensor.name] = helper.make_tensor_value_info(
                tensor.name, tensor.data_type, tensor.dims
            )
    for sparse in graph.sparse_initializer:
        name = sparse.values.name
        inputs[name] = helper.make_tensor_value_info(
            name, sparse.values.data_type, sparse.dims
        )
    for node in graph.node:
        big = _big_constant(node)
        if big is not None:
            inputs[node.output[0]] = helper.make_tensor_value_info(
                node.output[0], big.data_type, big.dims
            )
        else:
            out.node.append(node)
    out.input.extend(inputs.values())
    for value in graph.output:
        copied = out.output.add()
        copied.CopyFrom(value)
        # Declared output shapes (and value_info, left out entirely) may be stale after
        # pruning; inference recomputes them instead of trusting or conflicting with them.
        if copied.type.HasField("tensor_type"):
            copied.type.tensor_type.ClearField("shape")
    return light


def _set_shape(value: onnx.ValueInfoProto, shape: Shape) -> None:
    tensor_type = value.type.tensor_type
    declared = len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
    if declared is not None and declared != len(shape):
        raise InvalidOptionError(
            f"--shapes: input '{value.name}' has rank {declared}, got a shape of rank {len(shape)}"
        )
    tensor_type.ClearField("shape")
    tensor_type.shape.SetInParent()
    for size in shape:
        tensor_type.shape.dim.add().dim_value = size


def _big_constant(node: onnx.NodeProto) -> TensorProto | None:
    if (
        node.op_type != "Constant"
        or node.domain not in _STANDARD_DOMAINS
        or len(node.output) != 1
    ):
        return None
    for attr in node.attribute:
        if attr.name == "value" and math.prod(attr.t.dims) > _KEEP_DATA_MAX_ELEMENTS:
            return attr.t
    return None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _static_shape(value: onnx.ValueInfoProto) -> Shape | None:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField(
        "shape"
    ):
        return None
    dims = value.type.tensor_type.shape.dim
    if not all(dim.HasField("dim_value") for dim in dims):
        return None
    return tuple(dim.dim_value for dim in dims)


# --- per-op formulas: return None when a needed shape is unknown ----------------------


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


def _conv_like(
    weight: int, bias: int | None
) -> Callable[[onnx.NodeProto, ShapeOf], int | None]:
    def count(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
        y, w = shape_of(node.output[0]), shape_of(_input(node, weight))
        if y is None or w is None:
            return None
        # Each output element is a dot product over C/group input channels x kernel,
        # i.e. W.shape[1:], whatever the strides, dilations and padding.
        flops = 2 * math.prod(y) * math.prod(w[1:])
        if bias is not None and _input(node, bias):
            flops += math.prod(y)
        return flops

    return count


def _conv_transpose(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    x, w, y = (
        shape_of(node.input[0]),
        shape_of(_input(node, 1)),
        shape_of(node.output[0]),
    )
    if x is None or w is None or y is None:
        return None
    # Every input element is scattered through M/group output channels x kernel (W.shape[1:]).
    flops = 2 * math.prod(x) * math.prod(w[1:])
    if _input(node, 2):
        flops += math.prod(y)
    return flops


def _gemm(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    a, y = shape_of(node.input[0]), shape_of(node.output[0])
    if a is None or y is None or len(a) != 2:
        return None
    trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
    k = a[0] if trans_a else a[1]
    flops = 2 * math.prod(y) * k
    if _input(node, 2):
        flops += math.prod(y)
    return flops


def _matmul(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    # Y's shape already carries the broadcast batch dims, so FLOPs = 2 * |Y| * K.
    a, y = shape_of(node.input[0]), shape_of(node.output[0])
    if a is None or y is None or not a:
        return None
    return 2 * math.prod(y) * a[-1]


def _per_output_element(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    y = shape_of(node.output[0])
    return None if y is None else math.prod(y)


def _per_input_element(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    x = shape_of(node.input[0])
    return None if x is None else math.prod(x)


def _pool(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    y = shape_of(node.output[0])
    kernel = next(
        (list(attr.ints) for attr in node.attribute if attr.name == "kernel_shape"),
        None,
    )
    if y is None or kernel is None:
        return None
    return math.prod(y) * math.prod(kernel)


# fmt: off
_ELEMENTWISE_OPS = (
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Mean", "Sum", "Neg", "Abs",
    "Reciprocal", "Sqrt", "Exp", "Log", "Erf", "Sign", "Ceil", "Floor", "Round",
    "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Clip",
    "Softmax", "LogSoftmax", "Hardmax", "BatchNormalization", "InstanceNormalization",
    "LayerNormalization", "GroupNormalization", "RMSNormalization", "LpNormalization",
    "MeanVarianceNormalization", "QuantizeLinear", "DequantizeLinear",
)
# Reductions and global pools touch every input element once.
_WHOLE_INPUT_OPS = (
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "ReduceMean", "ReduceSum",
    "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare",
)
_UNCOUNTED_OPS = frozenset(("If", "Loop", "Scan", "Einsum", "LSTM", "GRU", "RNN"))
# fmt: on

_COUNTERS: dict[str, Callable[[onnx.NodeProto, ShapeOf], int | None]] = {
    "Conv": _conv_like(weight=1, bias=2),
    "ConvInteger": _conv_like(weight=1, bias=None),
    "QLinearConv": _conv_like(weight=3, bias=8),
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "MatMulInteger": _matmul,
    "Attention": onnx_attention,
    "QLinearMatMul": _matmul,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "LpPool": _pool,
    **{op: _per_output_element for op in _ELEMENTWISE_OPS},
    **{op: _per_input_element for op in _WHOLE_INPUT_OPS},
}
