"""ONNX Runtime's contrib ops as first-class channel rules, and decoders with a KV cache.

Every rule is checked by the zero-oracle on a graph written the way ORT's fusions or onnxruntime-genai's
builder write it, run in ORT (whose CPU provider implements these ops): zero the planned channels in the
original, prune them, and the pruned model must give the same outputs (for a KV cache: fed the kept
heads of each past input, compared on the kept heads of each present output).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from contrib_graphs import (
    MS,
    attention_block,
    contrib_builder,
    cross_attention_block,
    declare_output,
    decoder_feed,
    genai_decoder,
    mha_block,
    nbits_ffn,
    onnx_attention_block,
    oracle,
    plain_cache_decoder,
)
from onnx import helper
from oracle import random_feed
from rule_checks import attr_of, channel_graph, node_of, pinned, prunable

from onnxprune import Model, PruneOptions, prune
from onnxprune.errors import InvalidModelError
from onnxprune.io.saving import save_model


def _heads(proto: onnx.ModelProto, node: str) -> tuple[int, int]:
    n = node_of(proto, node)
    return attr_of(n, "num_heads"), attr_of(n, "kv_num_heads")


def _dims(proto: onnx.ModelProto, name: str) -> list:
    values = {v.name: v for v in list(proto.graph.input) + list(proto.graph.output)}
    return [d.dim_value or d.dim_param for d in values[name].type.tensor_type.shape.dim]


def _feed(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    feed = decoder_feed(proto)
    if "position_ids" in feed:
        feed["position_ids"] = np.arange(4, 4 + feed["position_ids"].shape[1])[None].astype(np.int64)
    return feed


# ---------------------------------------------------------------------------------------- loading


def test_default_domain_ops_of_onnx_runtime_load_and_misspelled_ops_do_not():
    """ORT registers SimplifiedLayerNormalization in the default domain; its optimizer and genai write it."""
    proto = genai_decoder(layers=1)
    Model.from_proto(proto)
    node_of(proto, "simplifiedlayernormalization").op_type = "SimplifiedLayerNormalisation"
    with pytest.raises(InvalidModelError, match="SimplifiedLayerNormalisation"):
        Model.from_proto(proto)


def test_layer_normalization_before_opset_17_is_onnx_runtimes(tmp_path):
    """ONNX defines LayerNormalization from opset 17; ORT registers it from opset 1, and its optimizer
    writes it into older models: accepted, the normalized axis pinned, the FFN after it pruned."""
    from graphs import GraphBuilder

    g = GraphBuilder(opset=13)
    x = g.input([1, 4, 16], "x")
    h = g.op("LayerNormalization", [x, g.weight((16,), "ln_scale", positive=True), g.weight((16,), "ln_bias")],
             name="ln", axis=-1, epsilon=1e-5)
    h = g.op("Relu", [g.op("MatMul", [h, g.weight((16, 24), "up_W")], name="up")])
    g.op("MatMul", [h, g.weight((24, 16), "down_W")], outputs=["y"], name="down")
    declare_output(g, "y", [1, 4, 16])
    proto = g.model(infer=False)
    graph = channel_graph(proto)
    pinned(graph, "up_W", 0, "LayerNormalization 'ln'")
    prunable(graph, "up_W", 1, 24, members={("up_W", 1, 0), ("down_W", 0, 0)})
    oracle(proto, tmp_path, {"x": np.random.default_rng(0).standard_normal((1, 4, 16)).astype(np.float32)},
           seeds=(0,))


def test_unknown_contrib_op_pins_by_name_and_the_rest_prunes(tmp_path):
    g = contrib_builder()
    x = g.input([1, 4, 16], "x")
    h = g.op("MatMul", [x, g.weight((16, 32), "a_W")], name="a")
    h = g.op("BiasSplitGelu", [h, g.weight((32,), "split_B")], name="split_gelu", domain=MS)  # CUDA only
    h = g.op("MatMul", [h, g.weight((16, 24), "b_W")], name="b")
    h = g.op("Relu", [h])
    g.op("MatMul", [h, g.weight((24, 16), "c_W")], outputs=["y"], name="c")
    declare_output(g, "y", [1, 4, 16])
    graph = channel_graph(g.model())
    pinned(graph, "a_W", 1, "BiasSplitGelu from domain 'com.microsoft' is not understood", "split_gelu")
    prunable(graph, "b_W", 1, 24, members={("b_W", 1, 0), ("c_W", 0, 0)})


# ---------------------------------------------------------------------------------------- GroupQueryAttention


@pytest.mark.parametrize("packed", [True, False])
def test_group_query_attention_loses_whole_kv_groups_with_the_cache(tmp_path, packed):
    """Packed QKV is [q heads | k heads | v heads]; a KV group takes its 2 query heads, its K and V head,
    and the head of each past and present tensor along; the residual stream stays (it is normalized)."""
    proto = genai_decoder(packed=packed)
    graph = channel_graph(proto)
    weight = "qkv0" if packed else "k0"
    space = prunable(graph, weight, 1, 2)
    assert space.kind == "heads"
    members = {(m.tensor, m.axis, m.offset, m.block) for m in space.members}
    expected = ({("qkv0", 1, 0, 32), ("qkv0", 1, 64, 16), ("qkv0", 1, 96, 16)} if packed else
                {("q0", 1, 0, 32), ("k0", 1, 0, 16), ("v0", 1, 0, 16)})
    assert expected | {("o0", 0, 0, 32), ("past_key_values.0.key", 1, 0, 1), ("present.0.value", 1, 0, 1)} <= members
    pinned(graph, "down0", 1, "SkipSimplifiedLayerNormalization normalizes over this axis")
    prunable(graph, "gate0", 1, 48, members={("gate0", 1, 0), ("up0", 1, 0), ("down0", 0, 0)})

    (_, report, out), _ = oracle(proto, tmp_path, _feed(proto))
    pruned = onnx.load(str(out))
    removed_layers = {int(space["nodes"][0][-1]) for space in report["spaces"]
                      if space["kind"] == "heads" and space["removed"]}
    for layer in range(2):
        expected_heads = (2, 1) if layer in removed_layers else (4, 2)
        assert _heads(pruned, f"gqa{layer}") == expected_heads
        assert _dims(pruned, f"past_key_values.{layer}.value")[1] == expected_heads[1]
        assert _dims(pruned, f"present.{layer}.key")[1] == expected_heads[1]
    kv = json.loads({p.key: p.value for p in pruned.metadata_props}["onnxprune.kv_heads"])
    assert kv["past_key_values.0.key"]["heads"] == _dims(pruned, "past_key_values.0.key")[1]
    assert kv["present.0.value"]["removed"] == kv["past_key_values.0.value"]["removed"]


def test_single_kv_head_loses_query_heads_inside_the_group(tmp_path):
    """One KV head (multi-query): the query heads are the channels; K, V and the cache stay whole."""
    proto = genai_decoder(kv_heads=1)
    graph = channel_graph(proto)
    space = prunable(graph, "qkv0", 1, 4)
    assert {(m.tensor, m.offset, m.block) for m in space.weight_members} >= {("qkv0", 0, 16), ("o0", 0, 16)}
    pinned(graph, "qkv0", 1, "single KV head", offset=64)
    out = oracle(proto, tmp_path, _feed(proto), seeds=(0,))[0][2]
    pruned = onnx.load(str(out))
    assert _heads(pruned, "gqa0") == (2, 1)
    assert _dims(pruned, "past_key_values.0.key")[1] == 1


def test_head_size_other_than_hidden_over_heads(tmp_path):
    """Qwen3 and Gemma have head_dim * heads != hidden: head sizes come from shapes, not hidden / heads."""
    proto = genai_decoder(hidden=48, heads=4, kv_heads=2, head=16, layers=1)
    prunable(channel_graph(proto), "qkv0", 1, 2)
    oracle(proto, tmp_path, _feed(proto), seeds=(0,))


def test_qk_norm_per_head_as_genai_writes_it(tmp_path):
    """[B, S, H*D] -> Reshape [0, -1, D] -> SimplifiedLayerNormalization -> Reshape back: whole heads pass."""
    proto = genai_decoder(packed=False, qk_norm=True)
    graph = channel_graph(proto)
    prunable(graph, "k0", 1, 2)
    _, _, out = oracle(proto, tmp_path, _feed(proto), seeds=(1,))[0]
    pruned = onnx.load(str(out))
    split = node_of(pruned, "q_norm1_split")
    target = next(t for t in pruned.graph.initializer if t.name == split.input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, -1, _heads(pruned, "gqa1")[0] * 16]


def test_plain_attention_with_kv_cache_graph_inputs(tmp_path):
    """Optimum's form: present = Concat(past, new) on the sequence axis; the head axis follows the groups."""
    proto = plain_cache_decoder()
    space = prunable(channel_graph(proto), "k_W", 1, 2)
    assert space.kind == "heads"
    _, _, out = oracle(proto, tmp_path, decoder_feed(proto), seeds=(0,))[0]
    assert _dims(onnx.load(str(out)), "past_key_values.0.value")[1] == 1


# ---------------------------------------------------------------------------------------- other attention


@pytest.mark.parametrize("rotary, partial", [(True, False), (True, True), (False, False)])
def test_multi_head_attention_with_rotary_bias_and_cache(tmp_path, rotary, partial):
    proto = mha_block(rotary=rotary, partial_rotary=partial)
    graph = channel_graph(proto)
    space = prunable(graph, "k_W", 1, 4)
    assert {(m.tensor, m.offset, m.block) for m in space.weight_members} == {
        ("q_W", 0, 16), ("k_W", 0, 16), ("v_W", 0, 16), ("o_W", 0, 16), ("qkv_bias", 0, 16), ("qkv_bias", 64, 16),
        ("qkv_bias", 128, 16)}
    pinned(graph, "o_W", 1, "SkipLayerNormalization normalizes over this axis")
    _, _, out = oracle(proto, tmp_path, _feed(proto), seeds=(0,))[0]
    pruned = onnx.load(str(out))
    assert attr_of(node_of(pruned, "mha"), "num_heads") == 2
    assert _dims(pruned, "past_key_0")[1] == 2
    if partial:
        assert attr_of(node_of(pruned, "rotary_q"), "num_heads") == 2


def test_cross_attention_with_keys_and_values_split_into_heads(tmp_path):
    proto = cross_attention_block()
    prunable(channel_graph(proto), "k_W", 1, 4, members={("q_W", 1, 0), ("k_W", 1, 0), ("v_W", 1, 0), ("o_W", 0, 0)})
    feed = {"x": np.ones((1, 3, 32), np.float32), "memory": np.random.default_rng(0).standard_normal(
        (1, 5, 32)).astype(np.float32)}
    out = oracle(proto, tmp_path, feed, seeds=(0,))[0][2]
    assert attr_of(node_of(onnx.load(str(out)), "mha"), "num_heads") == 2


@pytest.mark.parametrize("sizes, past", [((64, 64, 64), True), (None, True), ((64, 64, 32), False)])
def test_attention_with_qkv_hidden_sizes_and_packed_past(tmp_path, sizes, past):
    """ORT's Attention: one [hidden, q + k + v] weight and bias, past/present [2, B, H, T, D]; FFN with
    BiasGelu, FastGelu, Gelu and QuickGelu between SkipLayerNormalizations. (ORT takes a value size
    other than the query's only without a past.)"""
    proto = attention_block(sizes=sizes, past=past)
    graph = channel_graph(proto)
    heads = prunable(graph, "qkv_W", 1, 4)
    assert heads.kind == "heads"
    prunable(graph, "up_W", 1, 48, members={("up_W", 1, 0), ("up_B", 0, 0), ("mid_W", 0, 0)})
    prunable(graph, "mid_W", 1, 48, members={("mid_W", 1, 0), ("mid_B", 0, 0), ("down_W", 0, 0)})
    _, _, out = oracle(proto, tmp_path, _feed(proto), seeds=(0,))[0]
    node = node_of(onnx.load(str(out)), "attention")
    assert attr_of(node, "num_heads") == 2
    if sizes:
        assert attr_of(node, "qkv_hidden_sizes") == [size // 2 for size in sizes]


@pytest.mark.parametrize("rotary", [False, True])
def test_onnx_attention_opset_23(tmp_path, rotary):
    proto = onnx_attention_block(rotary=rotary)
    prunable(channel_graph(proto), "k_W", 1, 2)
    _, _, out = oracle(proto, tmp_path, _feed(proto), seeds=(0,))[0]
    pruned = onnx.load(str(out))
    node = node_of(pruned, "attention")
    assert (attr_of(node, "q_num_heads"), attr_of(node, "kv_num_heads")) == (2, 1)
    if rotary:
        assert [attr_of(node_of(pruned, f"rotary_{p}"), "num_heads") for p in "qk"] == [2, 1]


# ---------------------------------------------------------------------------------------- MatMulNBits


@pytest.mark.parametrize("packed_zeros", [True, False])
def test_matmul_nbits_rows_on_n_whole_blocks_on_k(tmp_path, packed_zeros):
    """up's 128 outputs are down's K: removable 16 at a time (the block size), with B's blobs, scales and
    zero points (int4 zero points packed two to a byte are unpacked, cut and repacked)."""
    proto = nbits_ffn(packed_zeros=packed_zeros)
    graph = channel_graph(proto)
    space = prunable(graph, "up_B", 0, 8)
    assert {(m.tensor, m.axis, m.block) for m in space.weight_members} >= {
        ("up_B", 0, 16), ("up_scales", 0, 16), ("up_bias", 0, 16), ("down_B", 1, 1), ("down_scales", 1, 1)}
    _, _, out = oracle(proto, tmp_path, _feed(proto), seeds=(0, 1))[1]
    pruned = onnx.load(str(out))
    up, down = node_of(pruned, "up_proj"), node_of(pruned, "down_proj")
    assert attr_of(up, "N") == attr_of(down, "K") == 64
    shapes = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert shapes["down_B"] == [64, 4, 8] and shapes["down_zeros"] == ([64, 2] if packed_zeros else [64, 4])


def test_int4_embedding_table_keeps_shapes_known(tmp_path):
    """ORT 1.32's symbolic shape inference takes GatherBlockQuantized's output to be as wide as its packed
    bytes, and then gives up on the whole graph at the next MatMulNBits: io/contrib_shapes.py fixes it."""
    proto = nbits_ffn(embedding=True)
    graph = channel_graph(proto)
    prunable(graph, "up_B", 0, 8)
    pinned(graph, "up_B", 1, "GatherBlockQuantized from domain 'com.microsoft' is not understood")
    feed = {"input_ids": np.array([[3, 1, 4, 1, 5]], np.int64)}
    oracle(proto, tmp_path, feed, seeds=(0,))


def test_matmul_nbits_flattened_scales_pin_k():
    graph = channel_graph(nbits_ffn(flat_scales=True))
    pinned(graph, "up_B", 0, "MatMulNBits input features: a partial last block or flattened scales")


# ---------------------------------------------------------------------------------------- real fusions


@pytest.mark.parametrize("name, model_type, heads", [("bert", "bert", 4), ("gpt", "gpt2", 0)])
def test_ort_optimized_reference_models(zoo, tmp_path, name, model_type, heads):
    """The repo's nets through ORT's transformer optimizer: BERT gets Attention, SkipLayerNormalization,
    BiasGelu, EmbedLayerNormalization; the Llama-style gpt SimplifiedLayerNormalization and its Skip form."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(zoo(name)), model_type=model_type, num_heads=heads, hidden_size=64 if heads else 0,
                               opt_level=0)
    optimized.save_model_to_file(str(tmp_path / "optimized.onnx"))  # declares the com.microsoft opset
    proto = onnx.load(str(tmp_path / "optimized.onnx"))
    kinds = {n.op_type for n in proto.graph.node}
    assert kinds >= ({"Attention", "SkipLayerNormalization"} if name == "bert" else
                     {"SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"})
    graph = channel_graph(proto)
    assert {space.kind for space in graph.prunable} == {"heads", "channels"}
    model = Model.from_proto(proto)
    oracle(proto, tmp_path, random_feed(model), seeds=(0,))


# ---------------------------------------------------------------------------------------- runtime configs


def _genai_folder(tmp_path, proto):
    source = tmp_path / "genai"
    source.mkdir()
    save_model(Model.from_proto(proto), source / "model.onnx")
    config = {"model": {"type": "llama", "decoder": {"filename": "model.onnx", "head_size": 16, "hidden_size": 32,
                                                     "num_attention_heads": 4, "num_key_value_heads": 2,
                                                     "num_hidden_layers": 2}}}
    (source / "genai_config.json").write_text(json.dumps(config))
    (source / "tokenizer.json").write_text("{}")
    return source


def test_genai_config_beside_the_output_holds_the_new_head_counts(tmp_path):
    source = _genai_folder(tmp_path, genai_decoder())
    out = tmp_path / "out"
    out.mkdir()
    report = prune(source / "model.onnx", out / "pruned.onnx",
                   PruneOptions(heads=0.5, validate=False, round_to=1))
    decoder = json.loads((out / "genai_config.json").read_text())["model"]["decoder"]
    assert (decoder["num_key_value_heads"], decoder["num_attention_heads"]) == (1, 2)
    assert decoder["filename"] == "pruned.onnx" and decoder["hidden_size"] == 32
    assert (out / "tokenizer.json").exists()
    assert any("wrote genai_config.json" in note for note in report["notes"])
    assert json.loads((source / "genai_config.json").read_text())["model"]["decoder"]["num_key_value_heads"] == 2


def test_genai_config_is_not_overwritten_in_the_input_folder(tmp_path):
    source = _genai_folder(tmp_path, genai_decoder())
    report = prune(source / "model.onnx", source / "pruned.onnx", PruneOptions(heads=0.5, validate=False, round_to=1))
    assert json.loads((source / "genai_config.json").read_text())["model"]["decoder"]["num_key_value_heads"] == 2
    assert any("beside the input describe the input model" in note for note in report["notes"])


def test_genai_config_is_not_written_for_uneven_layers(tmp_path):
    """genai reads one num_key_value_heads for every layer: a plan that differs per layer cannot be described."""
    proto = genai_decoder(heads=4, kv_heads=4, layers=2)
    weight = next(t for t in proto.graph.initializer if t.name == "qkv1")
    array = onnx.numpy_helper.to_array(weight).copy()
    array[:, [16 * h + c for h in (0, 1) for c in range(16)]] *= 1e-3  # layer 1's first heads are weak
    weight.CopyFrom(onnx.numpy_helper.from_array(array, "qkv1"))
    source = _genai_folder(tmp_path, proto)
    out = tmp_path / "out"
    out.mkdir()
    report = prune(source / "model.onnx", out / "pruned.onnx",
                   PruneOptions(heads=0.25, global_ranking=True, validate=False, round_to=1))
    assert not (out / "genai_config.json").exists()
    assert any("different head counts" in note for note in report["notes"])


def test_hugging_face_config_keeps_head_dim_explicit(tmp_path):
    """Optimum sizes the empty past as (batch, num_key_value_heads, 0, hidden_size // num_attention_heads):
    num_key_value_heads follows the pruning, num_attention_heads stays so the head size does, head_dim
    is written out for the runtimes that read it."""
    source = tmp_path / "optimum"
    source.mkdir()
    save_model(Model.from_proto(plain_cache_decoder(hidden=32)), source / "model.onnx")
    (source / "config.json").write_text(json.dumps({"hidden_size": 32, "num_attention_heads": 4,
                                                    "num_key_value_heads": 2}))
    out = tmp_path / "out"
    out.mkdir()
    prune(source / "model.onnx", out / "model.onnx", PruneOptions(heads=0.5, validate=False, round_to=1))
    config = json.loads((out / "config.json").read_text())
    assert (config["num_key_value_heads"], config["num_attention_heads"], config["head_dim"]) == (1, 4, 8)


def test_cache_input_and_output_that_are_not_one_space_pin(tmp_path):
    """present.0.key not computed from past.0.key: the heads of the two can differ, so they stay."""
    proto = plain_cache_decoder()
    for node in proto.graph.node:
        if node.output[0] == "present.0.key":
            node.output[0] = "key_cat"
            for other in proto.graph.node:
                other.input[:] = ["key_cat" if i == "present.0.key" else i for i in other.input]
    proto.graph.input.append(helper.make_tensor_value_info("stale", onnx.TensorProto.FLOAT, [1, 2, "total", 8]))
    proto.graph.node.append(helper.make_node("Identity", ["stale"], ["present.0.key"]))
    graph = channel_graph(proto)
    pinned(graph, "k_W", 1, "would lose different heads")


def test_validation_feeds_the_pruned_cache_its_kept_heads(tmp_path):
    """The pruned model takes the original's past without the removed heads (its metadata says which),
    and its present outputs match the original's kept heads exactly (they are computed before o_proj)."""
    source = tmp_path / "decoder.onnx"
    save_model(Model.from_proto(plain_cache_decoder()), source)
    shapes = {"x": (1, 3, 16), **{f"past_key_values.0.{kind}": (1, 2, 4, 8) for kind in ("key", "value")}}
    report = prune(source, tmp_path / "pruned.onnx", PruneOptions(heads=0.5, round_to=1, shapes=shapes,
                                                                  latency_runs=2))
    outputs = {o["name"]: o for o in report["validation"]["outputs"]}
    assert outputs["present.0.key"]["shape"] == [1, 1, 7, 8] and outputs["present.0.key"]["max_abs"] == 0.0
    assert outputs["y"]["shape"] == [1, 3, 16]


def test_validate_command_on_a_pruned_cache(tmp_path):
    from onnxprune.check.validate import ValidateOptions, run_validation

    source = tmp_path / "decoder.onnx"
    save_model(Model.from_proto(plain_cache_decoder()), source)
    prune(source, tmp_path / "pruned.onnx", PruneOptions(heads=0.5, round_to=1, validate=False))
    result = run_validation(source, tmp_path / "pruned.onnx", ValidateOptions())
    outputs = {o["name"]: o for o in result["outputs"]}
    assert outputs["present.0.value"]["shape"][1] == 1 and outputs["present.0.value"]["max_abs"] == 0.0
