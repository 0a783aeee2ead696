"""Odd graph kinds for the robustness tests: control flow (If/Loop/Scan), QDQ quantization, float16 and
bfloat16, Constant-node weights and one conv+BN+residual+concat model written for each opset 11..21."""

from __future__ import annotations

import numpy as np
import onnx
from graphs import GraphBuilder
from onnx import TensorProto, helper, numpy_helper

# ---------------------------------------------------------------------------------------- control flow


def _body(name: str, nodes, inputs, outputs, initializers=()) -> onnx.GraphProto:
    return helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(initializers))


def _value(name: str, elem_type: int = TensorProto.FLOAT, shape=None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _condition(g: GraphBuilder, x: str) -> str:
    """A scalar bool computed from the input, so random feeds take either branch of an If."""
    mean = g.op("ReduceMean", [x], name="mean", keepdims=0)
    return g.op("Greater", [mean, g.scalar(0.0, "zero")], name="cond")


def if_reads_outer_scope(opset: int = 17) -> onnx.ModelProto:
    """conv1 -> conv2 -> conv3 -> conv4; an If's branches read conv2's output (r2) from the outer scope.

    conv2's channel space reaches into the subgraphs and must be pinned; conv1's and conv3's stay prunable."""
    g = GraphBuilder(opset)
    x = g.input([1, 3, 8, 8])
    r1 = g.op("Relu", [g.conv(x, 3, 8, name="conv1")], name="r1")
    r2 = g.op("Relu", [g.conv(r1, 8, 8, name="conv2")], name="r2")
    r3 = g.op("Relu", [g.conv(r2, 8, 6, name="conv3")], name="r3")
    y = g.conv(r3, 6, 4, k=1, name="conv4")
    then_branch = _body("then", [helper.make_node("Sigmoid", [r2], ["t_out"])], [], [_value("t_out")])
    else_branch = _body("else", [helper.make_node("Tanh", [r2], ["e_out"])], [], [_value("e_out")])
    branch = g.op("If", [_condition(g, x)], name="branch", then_branch=then_branch, else_branch=else_branch)
    g.output(y, branch)
    return g.model()


def if_feeds_convs(opset: int = 17) -> onnx.ModelProto:
    """conv1 -> If(Relu | Neg of conv1's output) -> conv2 -> conv3: the If pins conv1, conv2 stays prunable."""
    g = GraphBuilder(opset)
    x = g.input([1, 3, 8, 8])
    c1 = g.conv(x, 3, 8, name="conv1")
    then_branch = _body("then", [helper.make_node("Relu", [c1], ["t_out"])], [], [_value("t_out")])
    else_branch = _body("else", [helper.make_node("Neg", [c1], ["e_out"])], [], [_value("e_out")])
    branch = g.op("If", [_condition(g, x)], name="branch", then_branch=then_branch, else_branch=else_branch)
    r2 = g.op("Relu", [g.conv(branch, 8, 8, name="conv2")], name="r2")
    g.output(g.conv(r2, 8, 4, k=1, name="conv3"))
    return g.model()


def loop_with_conv_body(opset: int = 17) -> onnx.ModelProto:
    """conv1 -> Loop(2x: Relu(Conv(v)) with the body's own weights) -> conv2 -> conv3 -> output.

    The body's weight is named 'conv2_W' like the outer conv2's (shadowing), and an If nested in the body
    reads the main-graph initializer 'outer_bias', which nothing else reads."""
    g = GraphBuilder(opset)
    x = g.input([1, 3, 8, 8])
    r1 = g.op("Relu", [g.conv(x, 3, 8, name="conv1")], name="r1")
    outer_bias = g.weight((1, 8, 1, 1), "outer_bias")
    rng = np.random.default_rng(7)
    body_w = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) / 9, "conv2_W")
    body_b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "body_B")
    nested_then = _body("nested_then", [helper.make_node("Add", ["v_conv", outer_bias], ["n_t"])], [],
                        [_value("n_t")])
    nested_else = _body("nested_else", [helper.make_node("Identity", ["v_conv"], ["n_e"])], [], [_value("n_e")])
    body = _body("body", [
        helper.make_node("Conv", ["v_in", "conv2_W", "body_B"], ["v_conv"], name="body_conv", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("If", ["cond_in"], ["v_if"], name="body_if", then_branch=nested_then,
                         else_branch=nested_else),
        helper.make_node("Relu", ["v_if"], ["v_out"], name="body_relu"),
        helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
    ], [_value("iter", TensorProto.INT64, []), _value("cond_in", TensorProto.BOOL, []), _value("v_in")],
        [_value("cond_out", TensorProto.BOOL, []), _value("v_out")], [body_w, body_b])
    trips = g.const(np.array(2, np.int64), "trips")
    keep_going = g.const(np.array(True), "keep_going")
    looped = g.op("Loop", [trips, keep_going, r1], name="loop", body=body)
    r2 = g.op("Relu", [g.conv(looped, 8, 8, name="conv2")], name="r2")
    r3 = g.op("Relu", [g.conv(r2, 8, 6, name="conv3")], name="r3")
    g.output(g.conv(r3, 6, 4, k=1, name="conv4"))
    return g.model()


def scan_with_matmul_body(opset: int = 17) -> onnx.ModelProto:
    """An MLP whose middle is a Scan over rows: s += tanh(x_t @ W + b), with W (named 'W2', like the outer
    'W2') and b initializers of the body. W0's and W2's spaces are prunable, W1's (read by the Scan) is not."""
    g = GraphBuilder(opset)
    x = g.input([4, 16])
    h0 = g.op("Relu", [g.op("MatMul", [x, g.weight((16, 24), "W0")], name="mm0")], name="h0")
    h1 = g.op("Relu", [g.op("MatMul", [h0, g.weight((24, 32), "W1")], name="mm1")], name="h1")
    rng = np.random.default_rng(11)
    body_w = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32) / 6, "W2")
    body_b = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "body_b")
    body = _body("scan_body", [
        helper.make_node("MatMul", ["x_t", "W2"], ["xw"], name="body_mm"),
        helper.make_node("Add", ["xw", "body_b"], ["xwb"], name="body_add"),
        helper.make_node("Tanh", ["xwb"], ["y_t"], name="body_tanh"),
        helper.make_node("Add", ["s_in", "y_t"], ["s_out"], name="body_acc"),
    ], [_value("s_in", shape=[32]), _value("x_t", shape=[32])], [_value("s_out", shape=[32]),
                                                                   _value("y_t", shape=[32])],
        [body_w, body_b])
    state = g.const(np.zeros(32, np.float32), "s0")
    final, rows = g.op("Scan", [state, h1], outputs=["scan_state", "scan_rows"], name="scan", body=body,
                       num_scan_inputs=1)
    h2 = g.op("Relu", [g.op("MatMul", [rows, g.weight((32, 32), "W2")], name="mm2")], name="h2")
    g.output(g.op("MatMul", [h2, g.weight((32, 8), "W3")], name="mm3"), final)
    return g.model()


CONTROL_FLOW = {
    "if_outer": if_reads_outer_scope,
    "if_feeds": if_feeds_convs,
    "loop": loop_with_conv_body,
    "scan": scan_with_matmul_body,
}


def subgraphs(proto: onnx.ModelProto) -> dict[str, bytes]:
    """Every graph attribute of every main-graph node, serialized (deterministically), by node and attribute."""
    found = {}
    for node in proto.graph.node:
        for attribute in node.attribute:
            graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            for index, graph in enumerate(graphs):
                found[f"{node.name}.{attribute.name}[{index}]"] = graph.SerializeToString(deterministic=True)
    return found


# ---------------------------------------------------------------------------------------- quantization


def _quantize(array: np.ndarray, axis: int | None, dtype=np.int8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric quantization (zero point 0), per channel along `axis` or per tensor when axis is None."""
    if axis is None:
        scale = np.asarray(max(float(np.abs(array).max()), 1e-6) / 127, np.float32)
    else:
        others = tuple(a for a in range(array.ndim) if a != axis)
        scale = (np.maximum(np.abs(array).max(axis=others), 1e-6) / 127).astype(np.float32)
    shape = [1] * array.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.round(array / scale.reshape(shape)), -127, 127).astype(dtype)
    return q, scale, np.zeros(scale.shape, dtype)


class QdqBuilder(GraphBuilder):
    """GraphBuilder with QDQ helpers: int8 weights behind DequantizeLinear, Q->DQ pairs on activations."""

    def qweight(self, shape, name: str, axis: int | None, block_size: int = 0) -> str:
        array = self.rng.standard_normal(tuple(shape)) / np.sqrt(max(1, int(np.prod(shape[1:]))))
        attrs = {}
        if block_size:
            q, scale, zero = _quantize_blocked(array.astype(np.float32), axis, block_size)
            attrs = {"axis": axis, "block_size": block_size}
        else:
            q, scale, zero = _quantize(array.astype(np.float32), axis)
            if axis is not None:
                attrs["axis"] = axis
        inputs = [self.const(q, f"{name}_q"), self.const(scale, f"{name}_scale"), self.const(zero, f"{name}_zp")]
        return self.op("DequantizeLinear", inputs, name=f"{name}_dq", **attrs)

    def qbias(self, size: int, name: str, scale: np.ndarray) -> str:
        """An int32 bias behind a per-channel DequantizeLinear on axis 0, as quantizers write Conv biases."""
        q = np.round(self.rng.standard_normal(size) / scale).astype(np.int32)
        inputs = [self.const(q, f"{name}_q"), self.const(scale.astype(np.float32), f"{name}_scale"),
                  self.const(np.zeros(size, np.int32), f"{name}_zp")]
        return self.op("DequantizeLinear", inputs, name=f"{name}_dq", axis=0)

    def qdq(self, x: str, scale: float = 0.05, zero_point: int = 128) -> str:
        """A per-tensor uint8 QuantizeLinear -> DequantizeLinear pair on an activation."""
        s = self.const(np.asarray(scale, np.float32), f"{x}_s")
        z = self.const(np.asarray(zero_point, np.uint8), f"{x}_z")
        return self.op("DequantizeLinear", [self.op("QuantizeLinear", [x, s, z], name=f"{x}_q"), s, z],
                       name=f"{x}_dq")

    def qconv(self, x: str, cin: int, cout: int, name: str, k: int = 3, in_scale: float = 0.05) -> str:
        weight = self.qweight((cout, cin, k, k), f"{name}_W", axis=0)
        w_scale = numpy_helper.to_array(next(t for t in self.initializers if t.name == f"{name}_W_scale"))
        bias = self.qbias(cout, f"{name}_B", in_scale * w_scale)
        return self.op("Conv", [x, weight, bias], name=name, kernel_shape=[k, k], pads=[k // 2] * 4)


def _quantize_blocked(array: np.ndarray, axis: int, block: int):
    moved = np.moveaxis(array, axis, 0)
    blocks = moved.reshape(moved.shape[0] // block, block, *moved.shape[1:])
    scale = (np.maximum(np.abs(blocks).max(axis=1), 1e-6) / 127).astype(np.float32)
    q = np.clip(np.round(blocks / scale[:, None]), -127, 127).astype(np.int8).reshape(moved.shape)
    return np.moveaxis(q, 0, axis), np.moveaxis(scale, 0, axis), np.zeros(np.moveaxis(scale, 0, axis).shape, np.int8)


def qdq_convnet(opset: int = 17) -> onnx.ModelProto:
    """Hand-built QDQ CNN: per-channel int8 Conv weights (axis 0) with int32 biases, per-tensor uint8
    activations, a MatMul whose B is per-channel on axis 1 and a Gemm(transB) per-channel on axis 0."""
    g = QdqBuilder(opset)
    x = g.input([1, 3, 8, 8])
    t = g.qdq(x)
    t = g.qdq(g.op("Relu", [g.qconv(t, 3, 8, "conv1")], name="r1"))
    t = g.qdq(g.op("Relu", [g.qconv(t, 8, 12, "conv2")], name="r2"))
    t = g.op("Flatten", [g.op("GlobalAveragePool", [t], name="gap")], name="flat")
    t = g.qdq(t)
    t = g.qdq(g.op("Relu", [g.op("MatMul", [t, g.qweight((12, 10), "fc1_W", axis=1)], name="fc1")], name="r3"))
    g.output(g.op("Gemm", [t, g.qweight((4, 10), "fc2_W", axis=0), g.weight((4,), "fc2_B")], name="fc2",
                  transB=1))
    return g.model()


def qdq_input_axis(opset: int = 17) -> onnx.ModelProto:
    """MatMul weights quantized per *input* feature (axis 0): scales follow the channels a producer loses."""
    g = QdqBuilder(opset)
    x = g.input([2, 16])
    h = g.op("Relu", [g.op("MatMul", [x, g.qweight((16, 24), "W0", axis=1)], name="mm0")], name="h0")
    h = g.op("Relu", [g.op("MatMul", [h, g.qweight((24, 12), "W1", axis=0)], name="mm1")], name="h1")
    g.output(g.op("MatMul", [h, g.qweight((12, 4), "W2", axis=None)], name="mm2"))
    return g.model()


def qdq_blocked(opset: int = 21) -> onnx.ModelProto:
    """Opset 21 blocked quantization: W1 in blocks of 4 input features. Its spaces pin (not handled)."""
    g = QdqBuilder(opset)
    x = g.input([2, 16])
    h = g.op("Relu", [g.op("MatMul", [x, g.qweight((16, 24), "W0", axis=1)], name="mm0")], name="h0")
    h = g.op("Relu", [g.op("MatMul", [h, g.qweight((24, 12), "W1", axis=0, block_size=4)], name="mm1")],
             name="h1")
    h = g.op("Relu", [g.op("MatMul", [h, g.qweight((12, 10), "W2", axis=1)], name="mm2")], name="h2")
    g.output(g.op("MatMul", [h, g.qweight((10, 4), "W3", axis=1)], name="mm3"))
    return g.model()


def qdq_int4(opset: int = 21) -> onnx.ModelProto:
    """W0 stored as packed int4 (opset 21): never sliced, so its spaces pin; W1's output stays prunable."""
    g = QdqBuilder(opset)
    x = g.input([2, 16])
    values = np.random.default_rng(3).integers(-7, 8, 16 * 24)
    g.initializers.append(helper.make_tensor("W0_q", TensorProto.INT4, [16, 24], values.tolist()))
    w0 = g.op("DequantizeLinear", ["W0_q", g.const(np.full(24, 0.05, np.float32), "W0_scale")], name="W0_dq",
              axis=1)
    h = g.op("Relu", [g.op("MatMul", [x, w0], name="mm0")], name="h0")
    h = g.op("Relu", [g.op("MatMul", [h, g.qweight((24, 12), "W1", axis=1)], name="mm1")], name="h1")
    g.output(g.op("MatMul", [h, g.qweight((12, 4), "W2", axis=1)], name="mm2"))
    return g.model()


def float_cnn(opset: int = 17) -> onnx.ModelProto:
    """conv-relu-conv-relu-(residual)-conv-GAP-flatten-gemm in float32, the input of quantize_static."""
    g = GraphBuilder(opset)
    x = g.input([1, 3, 8, 8])
    r1 = g.op("Relu", [g.conv(x, 3, 8, name="conv1")], name="r1")
    r2 = g.op("Relu", [g.conv(r1, 8, 8, name="conv2")], name="r2")
    a = g.op("Add", [r1, r2], name="res")
    r3 = g.op("Relu", [g.conv(a, 8, 12, name="conv3")], name="r3")
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [r3], name="gap")], name="flat")
    g.output(g.op("Gemm", [flat, g.weight((4, 12), "fc_W"), g.weight((4,), "fc_B")], name="fc", transB=1))
    return g.model()


def ort_quantized(tmp_dir) -> onnx.ModelProto:
    """float_cnn quantized by onnxruntime.quantization.quantize_static (QDQ, per channel)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.feeds = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    source, target = tmp_dir / "float.onnx", tmp_dir / "qdq.onnx"
    onnx.save(float_cnn(13), source)
    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return onnx.load(target)


# ---------------------------------------------------------------------------------------- float types


def residual_concat(opset: int = 17, bn: bool = True) -> onnx.ModelProto:
    """conv1 -> BN -> relu -> conv2 -> relu -> (+ r1) -> concat(conv3, conv4) -> conv5 -> GAP -> flatten -> gemm."""
    g = GraphBuilder(opset)
    x = g.input([1, 3, 8, 8])
    c1 = g.conv(x, 3, 8, name="conv1")
    if bn:
        c1 = g.op("BatchNormalization", [c1, g.weight((8,), "bn_scale", positive=True), g.weight((8,), "bn_bias"),
                                         g.weight((8,), "bn_mean"), g.weight((8,), "bn_var", positive=True)],
                  name="bn1")
    r1 = g.op("Relu", [c1], name="r1")
    a = g.op("Add", [r1, g.op("Relu", [g.conv(r1, 8, 8, name="conv2")], name="r2")], name="res")
    a = g.op("Add", [a, g.conv(g.op("Relu", [g.conv(a, 8, 8, name="conv2b")], name="r2b"), 8, 8, k=1,
                                name="conv2c")], name="res2")
    cat = g.op("Concat", [g.conv(a, 8, 6, name="conv3"), g.conv(a, 8, 4, k=1, name="conv4")], name="cat", axis=1)
    r5 = g.op("Relu", [g.conv(cat, 10, 12, name="conv5")], name="r5")
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [r5], name="gap")], name="flat")
    g.output(g.op("Gemm", [flat, g.weight((4, 12), "fc_W"), g.weight((4,), "fc_B")], name="fc", transB=1))
    return g.model()


def cast_float(proto: onnx.ModelProto, elem_type: int) -> onnx.ModelProto:
    """The same model with every float initializer, graph input and output (and Cast target) in elem_type."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    del graph.value_info[:]
    from_type = TensorProto.FLOAT if elem_type != TensorProto.FLOAT else None
    for index, tensor in enumerate(graph.initializer):
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind != "f" and tensor.data_type != TensorProto.BFLOAT16:
            continue
        if tensor.data_type == TensorProto.BFLOAT16:
            array = numpy_helper.to_array(tensor).astype(np.float32)
        graph.initializer[index].CopyFrom(_float_tensor(array.astype(np.float32), tensor.name, elem_type))
    for value in list(graph.input) + list(graph.output):
        tensor_type = value.type.tensor_type
        if from_type is None or tensor_type.elem_type == from_type:
            if tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
                tensor_type.elem_type = elem_type
    return out


def _float_tensor(array: np.ndarray, name: str, elem_type: int) -> onnx.TensorProto:
    if elem_type == TensorProto.BFLOAT16:
        import ml_dtypes

        return numpy_helper.from_array(array.astype(ml_dtypes.bfloat16), name)
    return numpy_helper.from_array(array.astype(helper.tensor_dtype_to_np_dtype(elem_type)), name)


# ---------------------------------------------------------------------------------------- per opset


def opset_model(opset: int) -> onnx.ModelProto:
    """conv+BN+residual, Split -> concat, Pad, Resize, Unsqueeze/Squeeze, ReduceMean, GAP, Gemm, with each
    op's signature of `opset` (Split/Squeeze/Unsqueeze/Reduce* moved attributes to inputs at 13 and 18,
    Split gained num_outputs and Pad/Resize axes at 18)."""
    g = GraphBuilder(opset)
    x = g.input([1, 3, 8, 8])
    c1 = g.op("BatchNormalization", [g.conv(x, 3, 8, name="conv1"), g.weight((8,), "bn_scale", positive=True),
                                     g.weight((8,), "bn_bias"), g.weight((8,), "bn_mean"),
                                     g.weight((8,), "bn_var", positive=True)], name="bn1")
    r1 = g.op("Relu", [c1], name="r1")
    a = g.op("Add", [r1, g.op("Relu", [g.conv(r1, 8, 8, name="conv2")], name="r2")], name="res")
    a = g.op("Add", [a, g.conv(a, 8, 8, k=1, name="conv2b")], name="res2")
    wide = g.op("Relu", [g.conv(a, 8, 12, name="conv3")], name="r3")
    if opset < 13:
        halves = g.op("Split", [wide], outputs=2, name="split", axis=1, split=[6, 6])
    elif opset < 18:
        halves = g.op("Split", [wide, g.ints([6, 6], "split_sizes")], outputs=2, name="split", axis=1)
    else:
        halves = g.op("Split", [wide], outputs=2, name="split", axis=1, num_outputs=2)
    left = g.conv(halves[0], 6, 6, name="conv4")
    cat = g.op("Concat", [left, halves[1]], name="cat", axis=1)
    if opset >= 18:
        pad_inputs = [cat, g.ints([1, 1, 1, 1], "pads"), "", g.ints([2, 3], "pad_axes")]
    else:
        pad_inputs = [cat, g.ints([0, 0, 1, 1, 0, 0, 1, 1], "pads")]
    padded = g.op("Pad", pad_inputs, name="pad")
    scales = g.const(np.array([1, 1, 2, 2], np.float32), "scales")
    roi = g.const(np.zeros(0, np.float32), "roi") if opset < 13 else ""
    up = g.op("Resize", [padded, roi, scales], name="resize", mode="nearest")
    axes = [0]
    if opset < 13:
        unsq = g.op("Unsqueeze", [up], name="unsq", axes=axes)
        sq = g.op("Squeeze", [unsq], name="sq", axes=axes)
    else:
        unsq = g.op("Unsqueeze", [up, g.ints(axes, "unsq_axes")], name="unsq")
        sq = g.op("Squeeze", [unsq, g.ints(axes, "sq_axes")], name="sq")
    r5 = g.op("Relu", [g.conv(sq, 12, 10, name="conv5")], name="r5")
    if opset < 18:
        pooled = g.op("ReduceMean", [r5], name="pool", axes=[2, 3], keepdims=0)
    else:
        pooled = g.op("ReduceMean", [r5, g.ints([2, 3], "pool_axes")], name="pool", keepdims=0)
    g.output(g.op("Gemm", [pooled, g.weight((4, 10), "fc_W"), g.weight((4,), "fc_B")], name="fc", transB=1))
    return g.model()
