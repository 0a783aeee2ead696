"""The torch interpreter of onnxprune/recover evaluates ops exactly as ONNX Runtime does: single nodes
with the attribute values whose semantics differ from torch's defaults (asymmetric pads, ceil mode,
Resize's coordinate modes, negative slice steps, pre-opset-13 Softmax...), and ops it does not
implement run through ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")

from onnxprune.io.model import Model  # noqa: E402
from onnxprune.recover.interpreter import GraphModule, to_torch  # noqa: E402

RNG = np.random.default_rng(0)


def _model(op: str, inputs: dict[str, np.ndarray], attrs: dict | None = None, constants: dict | None = None,
           outputs: int = 1, opset: int = 17, domain: str = "") -> onnx.ModelProto:
    constants = constants or {}
    names = [*inputs, *constants]
    node = helper.make_node(op, names, [f"y{i}" for i in range(outputs)], domain=domain, **(attrs or {}))
    graph = helper.make_graph(
        [node], "single",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
         for n, a in inputs.items()],
        [onnx.ValueInfoProto(name=f"y{i}") for i in range(outputs)],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in constants.items()],
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _compare(proto: onnx.ModelProto, inputs: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    want = session.run(None, inputs)
    net = GraphModule(Model.from_proto(proto))
    with torch.no_grad():
        got = list(net({name: to_torch(value) for name, value in inputs.items()}).values())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = g.numpy()
        assert g.shape == w.shape
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, atol=atol, rtol=1e-5)
        else:
            np.testing.assert_array_equal(g.astype(w.dtype), w)


def _image(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("attrs", [
    {"pads": [0, 1, 2, 0]},  # asymmetric
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
    {"auto_pad": "VALID", "dilations": [2, 2]},
    {"pads": [1, 1, 1, 1], "group": 4},
])
def test_conv_padding_modes(attrs):
    x = _image(1, 4, 9, 10)
    w = _image(8, 4 // attrs.get("group", 1), 3, 3)
    _compare(_model("Conv", {"x": x}, attrs, {"w": w, "b": _image(8)}), {"x": x})


@pytest.mark.parametrize("attrs", [
    {"strides": [2, 2]},
    {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 1]},
    {"strides": [2, 2], "output_shape": [10, 12]},
    {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"strides": [1, 1], "group": 2, "dilations": [2, 1]},
])
def test_conv_transpose(attrs):
    x = _image(1, 4, 5, 6)
    w = _image(4, 3, 3, 3)
    _compare(_model("ConvTranspose", {"x": x}, attrs, {"w": w, "b": _image(3 * attrs.get("group", 1))}), {"x": x})


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [0, 0, 2, 1]}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
])
def test_pooling(op, attrs):
    x = _image(1, 2, 9, 11)
    _compare(_model(op, {"x": x}, attrs), {"x": x})


@pytest.mark.parametrize("mode,transform,nearest", [
    ("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_floor"),
    ("nearest", "align_corners", "round_prefer_ceil"), ("nearest", "pytorch_half_pixel", "ceil"),
    ("linear", "half_pixel", None), ("linear", "align_corners", None), ("linear", "asymmetric", None),
    ("linear", "pytorch_half_pixel", None), ("linear", "half_pixel_symmetric", None),
])
@pytest.mark.parametrize("scales", [(1, 1, 2, 2), (1, 1, 0.5, 1.5), (1, 1, 1.7, 0.6)])
def test_resize(mode, transform, nearest, scales):
    x = _image(1, 2, 6, 8)
    attrs = {"mode": mode, "coordinate_transformation_mode": transform}
    if nearest:
        attrs["nearest_mode"] = nearest
    constants = {"roi": np.zeros(0, np.float32), "scales": np.array(scales, np.float32)}
    _compare(_model("Resize", {"x": x}, attrs, constants, opset=19), {"x": x})


@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_resize_to_sizes(mode):
    x = _image(1, 2, 5, 7)
    sizes = {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32), "sizes": np.array([1, 2, 9, 4])}
    _compare(_model("Resize", {"x": x}, {"mode": mode}, sizes, opset=11), {"x": x})


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1, -3], [100, -1], [0, 2], [1, 1]),
    ([-1], [-100], [1], [-1]),
    ([5, 0], [0, 3], [2, 1], [-2, 2]),
    ([0], [2**62], [-1], [3]),
])
def test_slice(starts, ends, axes, steps):
    x = _image(3, 4, 6)
    constants = {name: np.array(v, np.int64) for name, v in
                 zip(("starts", "ends", "axes", "steps"), (starts, ends, axes, steps))}
    _compare(_model("Slice", {"x": x}, {}, constants), {"x": x})


@pytest.mark.parametrize("opset,axis", [(11, 1), (11, -1), (13, 1), (13, -2)])
def test_softmax_before_and_after_opset_13(opset, axis):
    x = _image(2, 3, 4)
    _compare(_model("Softmax", {"x": x}, {"axis": axis}, opset=opset), {"x": x})
    _compare(_model("LogSoftmax", {"x": x}, {"axis": axis}, opset=opset), {"x": x})


@pytest.mark.parametrize("op,inputs,attrs,constants", [
    ("Gather", {"x": _image(4, 5)}, {"axis": 1}, {"i": np.array([[-1, 0], [2, 4]], np.int64)}),
    ("Gather", {"x": _image(4, 5)}, {"axis": 0}, {"i": np.array(-2, np.int64)}),
    ("Reshape", {"x": _image(2, 3, 4)}, {}, {"s": np.array([0, -1], np.int64)}),
    ("Transpose", {"x": _image(2, 3, 4)}, {"perm": [2, 0, 1]}, {}),
    ("Unsqueeze", {"x": _image(2, 3)}, {}, {"a": np.array([-1, 0], np.int64)}),
    ("Squeeze", {"x": _image(2, 1, 3, 1)}, {}, {"a": np.array([-1], np.int64)}),
    ("Expand", {"x": _image(3, 1)}, {}, {"s": np.array([2, 1, 4], np.int64)}),
    ("Pad", {"x": _image(1, 2, 4, 5)}, {"mode": "reflect"}, {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)}),
    ("Pad", {"x": _image(1, 2, 4, 5)}, {"mode": "edge"}, {"p": np.array([0, 0, 1, 0, 0, 0, 0, 3], np.int64)}),
    ("Pad", {"x": _image(2, 4, 5)}, {}, {"p": np.array([0, -1, 2, 0, 1, 0], np.int64), "v": np.array(1.5, np.float32)}),
    ("ReduceMean", {"x": _image(2, 3, 4)}, {"keepdims": 0}, {"a": np.array([-1, 0], np.int64)}),
    ("ReduceSum", {"x": _image(2, 3, 4)}, {}, {"a": np.array([1], np.int64)}),
    ("ArgMax", {"x": _image(3, 5)}, {"axis": 1, "keepdims": 0}, {}),
    ("Clip", {"x": _image(3, 5)}, {}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}),
    ("HardSigmoid", {"x": _image(3, 5)}, {"alpha": 0.3, "beta": 0.4}, {}),
    ("HardSwish", {"x": 4 * _image(3, 5)}, {}, {}),
    ("Gelu", {"x": _image(3, 5)}, {"approximate": "tanh"}, {}),
    ("LayerNormalization", {"x": _image(2, 3, 8)}, {"axis": -1, "epsilon": 1e-3},
     {"s": _image(8), "b": _image(8)}),
    ("LayerNormalization", {"x": _image(2, 3, 8)}, {"axis": 1}, {"s": _image(3, 8)}),
    ("BatchNormalization", {"x": _image(2, 3, 4, 4)}, {"epsilon": 1e-3},
     {"s": _image(3), "b": _image(3), "m": _image(3), "v": np.abs(_image(3)) + 0.5}),
    ("Gemm", {"a": _image(3, 4)}, {"transB": 1, "alpha": 0.5, "beta": 2.0}, {"b": _image(5, 4), "c": _image(5)}),
    ("Cast", {"x": 3 * _image(3, 5)}, {"to": TensorProto.INT32}, {}),
    ("Cast", {"x": 3 * _image(3, 5)}, {"to": TensorProto.FLOAT16}, {}),
    ("Div", {"x": np.array([7, -7, 9], np.int64)}, {}, {"d": np.array([2, 2, -4], np.int64)}),
    ("Where", {"c": np.array([True, False, True])}, {}, {"a": _image(3), "b": _image(2, 3)}),
    ("Einsum", {"x": _image(2, 3, 4)}, {"equation": "bij,jk->bik"}, {"w": _image(4, 5)}),
    ("DepthToSpace", {"x": _image(1, 8, 2, 3)}, {"blocksize": 2, "mode": "CRD"}, {}),
    ("CumSum", {"x": _image(3, 4)}, {"exclusive": 1, "reverse": 1}, {"a": np.array(1, np.int64)}),
])
def test_ops(op, inputs, attrs, constants):
    _compare(_model(op, inputs, attrs, constants, opset=20), inputs)


@pytest.mark.parametrize("opset,attrs,constants,outputs", [
    (13, {"axis": 1}, {"s": np.array([3, 4], np.int64)}, 2),
    (11, {"axis": 1, "split": [2, 5]}, {}, 2),
    (18, {"axis": 1, "num_outputs": 3}, {}, 3),  # 3, 3, 1
    (13, {"axis": -1}, {}, 7),
])
def test_split(opset, attrs, constants, outputs):
    x = _image(2, 7)
    _compare(_model("Split", {"x": x}, attrs, constants, outputs=outputs, opset=opset), {"x": x})


def test_ops_it_does_not_implement_run_through_onnx_runtime():
    """A contrib op (no torch implementation) is evaluated by ORT and reported as run without gradients."""
    a, b = _image(2, 3, 4), _image(2, 4, 5)
    proto = _model("FusedMatMul", {"a": a, "b": b}, {"alpha": 0.5}, domain="com.microsoft")
    _compare(proto, {"a": a, "b": b})
    assert GraphModule(Model.from_proto(proto)).fallback_ops == {"FusedMatMul": 1}
