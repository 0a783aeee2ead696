"""Attention heads, FFN channels and whole residual blocks on exported BERT- and GPT-style models
(both torch exporters): the zero-oracle for each, and the rewrite of the attention plumbing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxprune.passes.layers import find_blocks
from oracle import check_valid, max_relative_error, random_feed, run, zero_channels

from onnxprune import Model, PruneOptions, build_channel_graph, prune
from onnxprune.io.saving import save_model

TRANSFORMERS = ("bert", "gpt", "gpt2")
EXPORTERS = ("torchscript", "dynamo")
CASES = [(name, exporter) for name in TRANSFORMERS for exporter in EXPORTERS]


def _kind_plan(graph, kind: str, ratio: float, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    plan = {}
    for space in graph.prunable:
        if space.kind == kind:
            count = int(np.floor(ratio * space.size + 1e-9))
            if count:
                plan[space.id] = np.sort(rng.choice(space.size, count, replace=False))
    return plan


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_every_attention_is_a_prunable_head_space(zoo, name, exporter):
    graph = build_channel_graph(Model.load(zoo(name, exporter)))
    heads = [space for space in graph.spaces if space.kind == "heads"]
    layers = 2
    assert len(heads) == layers and all(space.prunable for space in heads), [s.to_dict() for s in heads]
    ffn = [space for space in graph.prunable if space.kind == "channels"]
    assert len(ffn) == layers, "one FFN intermediate space per layer (gate and up tied for SwiGLU)"
    # The hidden (residual) width is pinned: normalization statistics run over it.
    assert any(not space.prunable and space.size == 64 for space in graph.spaces)


@pytest.mark.parametrize(("name", "exporter"), CASES)
@pytest.mark.parametrize("kind", ["heads", "channels"])
def test_zero_oracle_heads_and_ffn(zoo, tmp_path, name, exporter, kind):
    source = zoo(name, exporter)
    model = Model.load(source)
    plan = _kind_plan(build_channel_graph(model), kind, 0.5, seed=7)
    assert plan
    zero_channels(model, plan)
    zeroed = tmp_path / "zeroed.onnx"
    save_model(model, zeroed)
    options = (PruneOptions(heads=0.5, validate=False) if kind == "heads" else
               PruneOptions(structured=0.5, validate=False, round_to=1))  # exact counts: the zeroed plan's
    out = tmp_path / "pruned.onnx"
    report = prune(zeroed, out, options)
    removed = {space["id"]: space["removed"] for space in report["spaces"] if space["removed"]}
    assert removed == {space: [int(i) for i in indices] for space, indices in plan.items()}
    feed = random_feed(model, seed=1)
    assert max_relative_error(run(zeroed, feed), run(out, feed)) < 1e-5
    check_valid(out)
    assert report["after"]["params"] < report["before"]["params"]


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_heads_rewrite_every_shape_constant(zoo, tmp_path, name, exporter):
    """After --heads 0.5 the model runs at other batch and sequence sizes too: nothing kept the old H."""
    out = tmp_path / "pruned.onnx"
    prune(zoo(name, exporter), out, PruneOptions(heads=0.5, structured=0.25, validate=False))
    check_valid(out)
    model = Model.load(out)
    for batch, seq in ((1, 5), (3, 11)):
        feed = {}
        for value in model.graph.input:
            shape = (batch, seq)
            feed[value.name] = (np.ones(shape) if "mask" in value.name else np.arange(batch * seq).reshape(shape) % 50
                                ).astype(np.int64)
        outputs = run(out, feed)
        assert all(v.shape[:2] == (batch, seq) for v in outputs.values())


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_zeroed_residual_branch_is_the_block_removed(zoo, tmp_path, name, exporter):
    """Zero the output projection of one attention: that block changes nothing and goes first."""
    source = zoo(name, exporter)
    model = Model.load(source)
    blocks = find_blocks(model)
    assert len(blocks) == 4, [b.label for b in blocks]  # attention + MLP in each of 2 layers
    target = blocks[2]
    # Walk back from f(x) to the output projection, zeroing its weight and any bias added after it.
    node = model.producer(target.branch)
    while True:
        for name in node.input:
            if model.is_weight(name) and model.weight(name).dtype.kind == "f":
                model.set_weight(name, np.zeros_like(model.weight(name)))
        if node.op_type in ("MatMul", "Gemm"):
            break
        node = model.producer(next(i for i in node.input if i and not model.is_weight(i)))
    zeroed = tmp_path / "zeroed.onnx"
    save_model(model, zeroed)
    out = tmp_path / "dropped.onnx"
    report = prune(zeroed, out, PruneOptions(drop_layers=1, validate=False))
    assert report["layers"]["removed"] == [target.add]
    feed = random_feed(model, seed=2)
    assert max_relative_error(run(zeroed, feed), run(out, feed)) < 1e-5
    check_valid(out)
    pruned = onnx.load(str(out))
    assert len(pruned.graph.node) < len(onnx.load(str(zeroed)).graph.node)


def test_gqa_removes_whole_kv_groups(zoo, tmp_path):
    """4 query heads sharing 2 KV heads: the head space has 2 channels (KV groups), query columns come
    in blocks of 2 heads x head_dim."""
    graph = build_channel_graph(Model.load(zoo("gpt", "dynamo")))
    heads = [space for space in graph.spaces if space.kind == "heads"]
    for space in heads:
        assert space.size == 2
        blocks = {member.block for member in space.weight_members}
        assert blocks == {16, 32}, blocks  # k/v columns: one head; q columns and o rows: two heads
