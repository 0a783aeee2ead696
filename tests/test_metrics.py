from collections.abc import Sequence
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.check.counts import count_flops, count_params
from onnxprune.errors import InvalidOptionError
from onnxprune.io.files import model_bytes


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[str],
    initializers: Sequence[onnx.TensorProto] = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _weight(
    name: str, shape: tuple[int, ...], dtype: type = np.float32
) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype), name)


def _input(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _grouped_conv_model(batch: object = 1) -> onnx.ModelProto:
    conv = helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], group=2, strides=[2, 2], pads=[1, 1, 1, 1]
    )
    return _model(
        [conv, helper.make_node("Relu", ["y"], ["z"])],
        [_input("x", [batch, 4, 8, 8])],
        ["z"],
        [_weight("w", (6, 2, 3, 3)), _weight("b", (6,))],
    )


def test_conv_with_groups_and_stride() -> None:
    report = count_flops(_grouped_conv_model(), {})
    # Y = 1x6x4x4 = 96 elements; each a dot product over 4/2 channels x 3x3 = 18 MACs.
    assert report.by_op_type["Conv"] == 2 * 96 * 18 + 96  # + bias add
    assert report.by_op_type["Relu"] == 96
    assert report.total == 3456 + 96 + 96
    assert report.unknown == [] and report.uncounted == []


def test_symbolic_batch_needs_input_shapes_and_model_is_not_mutated() -> None:
    model = _grouped_conv_model(batch="N")
    before = model.SerializeToString()
    unknown = count_flops(model, {})
    assert unknown.total == 0
    assert sorted(unknown.unknown) == ["Conv:y", "Relu:z"]
    report = count_flops(model, {"x": (3, 4, 8, 8)})
    assert report.total == 3 * (3456 + 96 + 96)
    assert model.SerializeToString() == before


def test_input_shapes_errors() -> None:
    model = _grouped_conv_model(batch="N")
    with pytest.raises(InvalidOptionError, match="no input 'w'"):
        count_flops(model, {"w": (6, 2, 3, 3)})
    with pytest.raises(InvalidOptionError, match="input 'x' has rank 4"):
        count_flops(model, {"x": (3, 4)})


def test_big_weights_are_counted_without_their_data() -> None:
    # 64x32x3x3 = 18432 elements: above the size kept in the shape-inference copy.
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = _model(
        [conv], [_input("x", [1, 32, 5, 5])], ["y"], [_weight("w", (64, 32, 3, 3))]
    )
    assert count_flops(model, {}).total == 2 * (64 * 25) * (32 * 9)


def test_conv_transpose() -> None:
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"])
    model = _model(
        [node], [_input("x", [1, 2, 3, 3])], ["y"], [_weight("w", (2, 4, 3, 3))]
    )
    # Each of the 18 input elements is scattered into 4 channels x 3x3 outputs.
    assert count_flops(model, {}).total == 2 * 18 * 36


def test_gemm_trans_a_with_bias() -> None:
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=1)
    model = _model(
        [node], [_input("a", [3, 2])], ["y"], [_weight("b", (3, 4)), _weight("c", (4,))]
    )
    # M=2, K=3, N=4: 2*M*N*K multiply-adds + M*N bias adds.
    assert count_flops(model, {}).by_op_type == {"Gemm": 2 * 2 * 4 * 3 + 8}


def test_batched_broadcast_matmul() -> None:
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    model = _model([node], [_input("a", [2, 1, 4, 5]), _input("b", [3, 5, 6])], ["y"])
    # Y = 2x3x4x6 = 144 elements, K = 5.
    assert count_flops(model, {}).total == 2 * 144 * 5


def test_reshape_target_from_initializer_reaches_matmul() -> None:
    shape = numpy_helper.from_array(np.array([2, 6], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["y"]),
    ]
    model = _model(nodes, [_input("x", [3, 4])], ["y"], [shape, _weight("w", (6, 5))])
    assert count_flops(model, {}).by_op_type == {"MatMul": 2 * 10 * 6}


def test_pooling_and_uncounted_ops() -> None:
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Custom", ["g"], ["y"], domain="my.domain"),
    ]
    model = _model(nodes, [_input("x", [1, 3, 4, 4])], ["y"])
    model.opset_import.append(helper.make_opsetid("my.domain", 1))
    report = count_flops(model, {})
    assert report.by_op_type == {"MaxPool": 12 * 4, "GlobalAveragePool": 12}
    assert report.uncounted == ["Custom:y"]


def test_count_params() -> None:
    initializers = [
        _weight("w32", (4, 3)),
        _weight("w16", (5,), np.float16),
        _weight("bf16", (2, 2), ml_dtypes.bfloat16),
        _weight("ids", (7,), np.int64),
    ]
    const = helper.make_node(
        "Constant",
        [],
        ["c"],
        value=numpy_helper.from_array(np.ones((2, 3), np.float32)),
    )
    shape_const = helper.make_node(
        "Constant", [], ["s"], value=numpy_helper.from_array(np.array([1, 2], np.int64))
    )
    model = _model([const, shape_const], [], ["c"], initializers)
    assert count_params(model) == 12 + 5 + 4 + 6


def test_model_bytes_includes_external_data(tmp_path: Path) -> None:
    model = _model([], [_input("x", [1])], ["x"], [_weight("w", (256,))])
    inline = tmp_path / "inline.onnx"
    onnx.save(model, inline)
    assert model_bytes(inline) == inline.stat().st_size

    split = tmp_path / "split.onnx"
    onnx.save(
        model,
        split,
        save_as_external_data=True,
        location="split.onnx.data",
        size_threshold=0,
    )
    data = tmp_path / "split.onnx.data"
    assert data.stat().st_size >= 1024
    assert model_bytes(split) == split.stat().st_size + data.stat().st_size
