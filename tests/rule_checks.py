"""What the per-op rule tests share: channel-space lookups, pin checks and the zero-oracle on hand-built graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from graphs import GraphBuilder
from onnx import helper, numpy_helper
from oracle import check_valid, choose_channels, max_relative_error, random_feed, run, zero_channels

from onnxprune import ChannelGraph, ChannelSpace, Model, PruneOptions, build_channel_graph, prune
from onnxprune.io.saving import save_model

# ---------------------------------------------------------------------------------------- helpers


def channel_graph(proto: onnx.ModelProto) -> ChannelGraph:
    return build_channel_graph(Model.from_proto(proto))


def describe(graph: ChannelGraph) -> str:
    lines = []
    for space in graph.spaces:
        members = [(m.tensor, m.axis, m.offset) for m in space.weight_members]
        lines.append(f"  #{space.id} size={space.size} pins={[str(p) for p in space.pins]} members={members}")
    return "\n".join(lines)


def space_of(graph: ChannelGraph, tensor: str, axis: int, offset: int = 0) -> ChannelSpace:
    for space in graph.spaces:
        for member in space.members:
            if (member.tensor, member.axis, member.offset) == (tensor, axis, offset):
                return space
    raise AssertionError(f"no space holds '{tensor}' axis {axis} offset {offset}:\n{describe(graph)}")


def weight_members(space: ChannelSpace) -> set[tuple[str, int, int]]:
    return {(m.tensor, m.axis, m.offset) for m in space.weight_members}


def prunable(graph: ChannelGraph, tensor: str, axis: int, size: int, offset: int = 0,
             members: set[tuple[str, int, int]] | None = None) -> ChannelSpace:
    space = space_of(graph, tensor, axis, offset)
    assert space.prunable, f"'{tensor}' axis {axis} is pinned by {[str(p) for p in space.pins]}\n{describe(graph)}"
    assert space.size == size, describe(graph)
    if members is not None:
        assert weight_members(space) == members, describe(graph)
    return space


def pinned(graph: ChannelGraph, tensor: str, axis: int, *words: str, offset: int = 0) -> ChannelSpace:
    """The space is pinned, and one of its pins mentions every word (op type, node name...)."""
    space = space_of(graph, tensor, axis, offset)
    assert not space.prunable, f"'{tensor}' axis {axis} should be pinned\n{describe(graph)}"
    reasons = [str(pin) for pin in space.pins]
    assert any(all(word in reason for word in words) for reason in reasons), f"{words} not in one of {reasons}"
    return space


# (plan ratio, seed, global ranking): None draws a random ratio in [0.1, 0.7] per space.
ORACLE_RUNS = [(0.4, 0, False), (0.4, 1, True), (None, 2, True), (None, 3, True), (None, 4, True)]
QUICK_RUNS = [(0.4, 0, False), (None, 1, True)]


def zero_oracle(proto: onnx.ModelProto, tmp_path: Path, expect_pruned: bool = True, runs=ORACLE_RUNS,
                tolerance: float = 1e-5, full_check: bool = True) -> list[tuple[dict, dict, Path]]:
    """Zero planned channels, prune them, compare; returns (plan, report, pruned path) per run.

    full_check=False only for ops whose ONNX function body onnx's own strict inference rejects.
    """
    results = []
    for index, (plan_ratio, seed, global_ranking) in enumerate(runs):
        model = Model.from_proto(proto)
        plan = choose_channels(model, plan_ratio, seed)
        zero_channels(model, plan)
        zeroed, out = tmp_path / f"zeroed{index}.onnx", tmp_path / f"pruned{index}.onnx"
        save_model(model, zeroed)
        ratio = plan_ratio
        if global_ranking:
            total = sum(space.size for space in build_channel_graph(model).prunable)
            ratio = sum(len(v) for v in plan.values()) / total if total else 0.0
        options = PruneOptions(structured=ratio, global_ranking=global_ranking, validate=False, round_to=1)
        report = prune(zeroed, out, options)
        removed = {space["id"]: space["removed"] for space in report["spaces"] if space["removed"]}
        assert removed == {k: [int(i) for i in v] for k, v in plan.items()}, f"run {index}: plan not followed"
        for feed_seed in (0, 1):
            feed = random_feed(model, feed_seed)
            error = max_relative_error(run(zeroed, feed), run(out, feed))
            assert error < tolerance, f"run {index} (ratio {plan_ratio}, seed {seed}): relative error {error}"
        if full_check:
            check_valid(out)
        else:
            onnx.checker.check_model(str(out))
        if plan:
            assert report["after"]["params"] < report["before"]["params"]
        results.append((plan, report, out))
    if expect_pruned:
        assert any(plan for plan, _, _ in results), "nothing was prunable"
    return results


def node_of(proto: onnx.ModelProto, name: str) -> onnx.NodeProto:
    for node in proto.graph.node:
        if node.name == name:
            return node
    raise AssertionError(f"no node '{name}'")


def init_of(proto: onnx.ModelProto, name: str) -> np.ndarray:
    for tensor in proto.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    raise AssertionError(f"no initializer '{name}'")


def input_value(proto: onnx.ModelProto, node_name: str, index: int) -> np.ndarray:
    return init_of(proto, node_of(proto, node_name).input[index])


def attr_of(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def sandwich(middle, opset: int = 17, channels: int = 8, spatial: int = 8) -> onnx.ModelProto:
    """x -> conv1 (3 -> channels) -> middle(g, t) -> conv2 (-> 4, 1x1) -> output."""
    g = GraphBuilder(opset)
    x = g.input([1, 3, spatial, spatial])
    t = g.conv(x, 3, channels, name="conv1")
    t = middle(g, t)
    g.output(g.conv(t, channels, 4, k=1, name="conv2"))
    return g.model()


def conv1_space(graph: ChannelGraph, size: int = 8, extra: set | None = None) -> ChannelSpace:
    members = {("conv1_W", 0, 0), ("conv1_B", 0, 0), ("conv2_W", 1, 0)} | (extra or set())
    return prunable(graph, "conv1_W", 0, size, members=members)


# ---------------------------------------------------------------------------------------- Conv


def retarget_conv2(proto: onnx.ModelProto, channels: int) -> onnx.ModelProto:
    """sandwich() builds conv2 for 8 input channels; give it `channels` instead."""
    for tensor in proto.graph.initializer:
        if tensor.name == "conv2_W":
            array = np.random.default_rng(5).standard_normal((4, channels, 1, 1)).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(array, "conv2_W"))
    del proto.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(proto)


def head_model(flatten, channels: int = 8, spatial: int = 8, batch=1) -> onnx.ModelProto:
    """x -> conv1 -> flatten(g, t) -> Gemm(transB) -> output."""
    g = GraphBuilder()
    x = g.input([batch, 3, spatial, spatial])
    t = flatten(g, g.conv(x, 3, channels, name="conv1"))
    width = channels if spatial == 1 else None
    features = width or channels * spatial * spatial
    g.output(g.op("Gemm", [t, g.weight((5, features), "fc_W"), g.weight((5,), "fc_C")], name="fc", transB=1))
    return g.model()
