"""Zero-oracle on every models/ net and both exporters: dead channels are removed exactly and the
outputs do not move."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import check_valid, choose_channels, max_relative_error, random_feed, run, zero_channels

import models
from onnxprune import Model, PruneOptions, build_channel_graph, prune
from onnxprune.io.saving import save_model

CASES = [(name, exporter) for name in models.NAMES for exporter in models.EXPORTERS]
CONV_NETS = ("resnet", "mobile", "yolo")


def _prune_zeroed(path, tmp_path, plan_ratio, seed, global_ranking, criterion="l1"):
    model = Model.load(path)
    plan = choose_channels(model, plan_ratio, seed)
    assert plan, "the model must have prunable channel spaces"
    zero_channels(model, plan)
    zeroed = tmp_path / "zeroed.onnx"
    save_model(model, zeroed)
    ratio = plan_ratio
    if global_ranking:
        total = sum(space.size for space in build_channel_graph(model).prunable)
        ratio = sum(len(indices) for indices in plan.values()) / total
    out = tmp_path / "pruned.onnx"
    # round_to=1: exact counts, the zeroed plan's, not the ones --device's alignment would choose
    options = PruneOptions(structured=ratio, global_ranking=global_ranking, validate=False, criterion=criterion,
                           round_to=1)
    report = prune(zeroed, out, options)
    removed = {space["id"]: space["removed"] for space in report["spaces"] if space["removed"]}
    unscored = set(report.get("spaces_without_batchnorm", []))  # bn-scale leaves spaces without BN alone
    assert removed == {space: [int(i) for i in indices] for space, indices in plan.items() if space not in unscored}
    feed = random_feed(model, seed)
    assert max_relative_error(run(zeroed, feed), run(out, feed)) < 1e-5
    check_valid(out)
    assert report["after"]["params"] < report["before"]["params"]
    return report


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_uniform_ratio_removes_exactly_the_dead_channels(zoo, tmp_path, name, exporter):
    _prune_zeroed(zoo(name, exporter), tmp_path, 0.4, seed=0, global_ranking=False)


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_global_ranking_with_random_ratios(zoo, tmp_path, name, exporter):
    for seed in (1, 2):
        _prune_zeroed(zoo(name, exporter), tmp_path, None, seed=seed, global_ranking=True)


@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("name", CONV_NETS)
def test_batchnorm_kept_unfolded(zoo, tmp_path, name, exporter):
    """With BatchNormalization nodes in the graph: BN parameters are members and get sliced."""
    path = zoo(name, exporter, keep_bn=True)
    graph = build_channel_graph(Model.load(path))
    bn_scales = [n.input[1] for n in graph.model.graph.node if n.op_type == "BatchNormalization"]
    assert bn_scales
    in_prunable = {m.tensor for space in graph.prunable for m in space.weight_members}
    assert set(bn_scales) <= in_prunable, "every BatchNorm of these nets sits in a prunable space"
    _prune_zeroed(path, tmp_path, 0.4, seed=3, global_ranking=False)
    _prune_zeroed(path, tmp_path, 0.4, seed=4, global_ranking=False, criterion="bn-scale")


@pytest.mark.parametrize("name", models.NAMES)
def test_both_exporters_find_the_same_prunable_channels(zoo, name):
    sizes = {}
    for exporter in models.EXPORTERS:
        graph = build_channel_graph(Model.load(zoo(name, exporter)))
        sizes[exporter] = sorted(space.size for space in graph.prunable)
    assert sizes["torchscript"] == sizes["dynamo"]


def test_yolo_inspect_lists_coupled_split_concat_groups_and_pinned_heads(zoo):
    graph = build_channel_graph(Model.load(zoo("yolo")))
    pinned_outputs = {str(pin) for space in graph.spaces for pin in space.pins if "graph output" in str(pin)}
    assert {"graph output 'p3'", "graph output 'p4'", "graph output 'p5'"} <= pinned_outputs
    # C2f: the conv before the chunk is one tensor axis made of two spaces (the halves), and the
    # concat after the bottlenecks joins several spaces along one axis.
    split_producers = [s for s in graph.prunable if len({m.offset for m in s.weight_members if m.axis == 0}) == 1
                       and any(m.offset > 0 for m in s.members)]
    assert split_producers
    offsets_per_tensor = {}
    for space in graph.spaces:
        for member in space.members:
            offsets_per_tensor.setdefault((member.tensor, member.axis), set()).add(member.offset)
    assert any(len(offsets) >= 3 for offsets in offsets_per_tensor.values()), "no Concat of 3+ spaces found"


def test_pruned_model_is_smaller_and_faster_flops(zoo, tmp_path):
    out = tmp_path / "yolo_pruned.onnx"
    report = prune(zoo("yolo"), out, PruneOptions(structured=0.4))
    assert report["after"]["flops"] < 0.6 * report["before"]["flops"]
    outputs = report["validation"]["outputs"]
    assert {o["name"] for o in outputs} == {"p3", "p4", "p5"}
    assert all(np.isfinite(o["max_abs"]) for o in outputs)
