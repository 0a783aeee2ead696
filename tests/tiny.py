"""The tiny Conv-BN-Relu-Conv-GAP-Flatten-Gemm model the IO and CLI tests share, built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_SHAPE = (1, 3, 8, 8)


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {
        "w1": normal(8, 3, 3, 3), "b1": normal(8),
        "bn_scale": (rng.random(8) + 0.5).astype(np.float32), "bn_bias": normal(8),
        "bn_mean": normal(8), "bn_var": (rng.random(8) + 0.5).astype(np.float32),
        "w2": normal(16, 8, 3, 3), "b2": normal(16),
        "w3": normal(4, 16), "b3": normal(4),
    }


def tiny_model(opset: int = 17, constants: bool = False, seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu-Conv-GAP-Flatten-Gemm; the same nodes are valid at every opset from 9 to 24.

    With constants=True the weights are Constant nodes instead of initializers (as paddle2onnx writes).
    """
    weights = tiny_weights(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n1"],
                         name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1),
    ]
    initializers = []
    if constants:
        nodes = [
            helper.make_node("Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(array, name))
            for name, array in weights.items()
        ] + nodes
    else:
        initializers = [numpy_helper.from_array(array, name) for name, array in weights.items()]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
