"""FLOPs through ONNX Runtime's contrib ops, and the KV-cache head size chosen from the graph (issue 17).

A hand-built decoder layer in the GenAI builder's style (SkipSimplifiedLayerNormalization, a packed QKV
MatMul, GroupQueryAttention over a past cache whose head dim is symbolic, MatMulNBits) is counted op by
op against the formulas; the real SmolLM2 forms, when models/llm has built them, must count the same
FLOPs fused and decomposed.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import Model
from onnxprune.check import counts
from onnxprune.check.dim_choice import candidates
from onnxprune.check.inputs import model_input_specs, random_feeds, resolve_shapes
from onnxprune.check.stats import folded_light_proto

B, D, HEADS, KV_HEADS, HEAD = 1, 32, 4, 2, 16
QKV = (HEADS + 2 * KV_HEADS) * HEAD
BLOCK = 16


def _gqa_layer() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    k_out = HEADS * HEAD
    packed = rng.integers(0, 255, (D, k_out // BLOCK, BLOCK // 2)).astype(np.uint8)
    weights = [
        numpy_helper.from_array(np.ones(D, np.float32), "gamma"),
        numpy_helper.from_array(rng.normal(0, 0.1, (D, QKV)).astype(np.float32), "w_qkv"),
        numpy_helper.from_array(packed, "w_o"),
        numpy_helper.from_array(rng.uniform(0.01, 0.02, D * k_out // BLOCK).astype(np.float32), "w_o_scales"),
    ]
    nodes = [
        helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma"], ["normed", "", "", "sum"],
                         domain="com.microsoft", epsilon=1e-5),
        helper.make_node("MatMul", ["normed", "w_qkv"], ["qkv"]),
        helper.make_node("GroupQueryAttention", ["qkv", "", "", "past_key", "past_value", "seqlens_k", "total_len"],
                         ["attn", "present_key", "present_value"], domain="com.microsoft",
                         num_heads=HEADS, kv_num_heads=KV_HEADS),
        helper.make_node("MatMulNBits", ["attn", "w_o", "w_o_scales"], ["y"], domain="com.microsoft",
                         K=k_out, N=D, bits=4, block_size=BLOCK),
    ]
    cache = ["batch", KV_HEADS, "past", "kv_cache_dim"]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", D]),
        helper.make_tensor_value_info("skip", TensorProto.FLOAT, ["batch", "seq", D]),
        helper.make_tensor_value_info("past_key", TensorProto.FLOAT, cache),
        helper.make_tensor_value_info("past_value", TensorProto.FLOAT, cache),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("total_len", TensorProto.INT32, []),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", D]),
               helper.make_tensor_value_info("present_key", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("present_value", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "gqa_layer", inputs, outputs, weights)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def test_contrib_flops_follow_the_formulas():
    seq, past = 4, 6
    shapes = {"x": (B, seq, D), "skip": (B, seq, D), "past_key": (B, KV_HEADS, past, HEAD),
              "past_value": (B, KV_HEADS, past, HEAD), "seqlens_k": (B,), "total_len": ()}
    report = counts.count_flops(_gqa_layer(), shapes)
    keys = past + seq
    expected = {
        "SkipSimplifiedLayerNormalization": 2 * B * seq * D,  # the residual add and the norm, per element
        "MatMul": 2 * B * seq * D * QKV,
        "GroupQueryAttention": B * HEADS * seq * keys * (2 * HEAD + 2 * HEAD + 2),  # QK^T, PV, scale+softmax
        "MatMulNBits": 2 * B * seq * HEADS * HEAD * D,  # after the attention: its shape came from ORT's inference
    }
    assert report.by_op_type == expected
    assert report.total == sum(expected.values())
    assert not report.unknown and not report.uncounted


def test_kv_cache_head_size_comes_from_the_attention_and_runs_in_ort():
    model = Model.from_proto(_gqa_layer())
    specs = model_input_specs(model.proto)
    suggested = candidates(model, specs, {})[0]
    assert suggested["kv_cache_dim"][0] == HEAD, suggested["kv_cache_dim"]
    assert "GroupQueryAttention" in suggested["kv_cache_dim"][1]
    shapes, _ = resolve_shapes(specs, {}, suggested=suggested)
    assert shapes["past_key"][3] == HEAD
    (feeds,) = random_feeds(specs, shapes, seed=0)
    # seqlens_k and total_len describe the cache: GQA reads total = past + new, seqlens_k = total - 1
    total = shapes["past_key"][2] + shapes["x"][1]
    feeds["total_len"] = np.array(total, np.int32)
    feeds["seqlens_k"] = np.full(shapes["seqlens_k"], total - 1, np.int32)
    session = ort.InferenceSession(_gqa_layer().SerializeToString(), providers=["CPUExecutionProvider"])
    y, present_key, _ = session.run(None, feeds)
    assert y.shape == (B, shapes["x"][1], D) and present_key.shape[-1] == HEAD


def _form_flops(form: str, seq: int, past: int) -> int:
    llm = pytest.importorskip("models.llm")
    path = llm.form_dir(form) / "model.onnx"
    if not path.exists():
        pytest.skip(f"SmolLM2 '{form}' form not built: python -m models.llm build {form}")
    model = Model.load(path)
    shapes = {}
    for spec in model_input_specs(model.proto):
        dims = []
        for dim in spec.shape:
            name = dim if isinstance(dim, str) else ""
            if isinstance(dim, int):
                dims.append(dim)
            elif "batch" in name:
                dims.append(1)
            elif name == "kv_cache_dim":
                dims.append(64)
            elif "total" in name or "+" in name:
                dims.append(past + seq)
            elif "past" in name:
                dims.append(past)
            else:
                dims.append(seq)
        shapes[spec.name] = tuple(dims)
    report = counts.count_flops(folded_light_proto(model, shapes), shapes)
    assert not report.unknown, report.unknown[:5]
    return report.total


@pytest.mark.parametrize(("fused", "decomposed", "past"), [("ort-optimized", "plain", 0), ("genai", "optimum", 16)])
def test_real_smollm2_counts_the_same_fused_and_decomposed(fused, decomposed, past):
    """Before contrib formulas the GenAI form counted 65 FLOPs (everything after its first contrib op was
    0); the same network must count within 1%, whichever ops express it."""
    if past == 0:  # plain forms have no cache
        a, b = _form_flops(fused, 32, 0), _form_flops(decomposed, 32, 0)
    else:
        a, b = _form_flops(fused, 32, past), _form_flops(decomposed, 32, past)
    assert abs(a - b) / b < 0.01, (a, b)
    assert a > 2 * 32 * 100e6, "at least 2 FLOPs per parameter per token of the ~135M"
