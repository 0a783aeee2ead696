"""Speed of the budget passes (issue 16): --target-flops measures its sensitivity curves within a FLOPs
budget, and breaks ties between equally sensitive cuts by the latency model."""

from __future__ import annotations

import numpy as np
import pytest
from onnxprune.passes.allocation import TIE_FACTOR, allocate_exact
from onnxprune.passes.sensitivity import SENSITIVITY_FLOPS, Curve, sensitivity_feeds
from oracle import check_valid

from onnxprune import PruneOptions, prune


def test_curves_use_every_feed_while_the_runs_fit_the_budget():
    # 10 spaces x 7 ratios of a 1 GFLOP model: 7e10 per feed, so the 3e12 budget holds 42 feeds.
    per_feed = 10 * 7 * 1e9
    assert sensitivity_feeds(10, 1e9, 8) == 8
    assert sensitivity_feeds(10, 1e9, 100) == int(SENSITIVITY_FLOPS // per_feed)
    # A model whose runs on one feed already exceed the budget still measures on one.
    assert sensitivity_feeds(73, 6.4e9, 8) == 1
    assert sensitivity_feeds(0, 0.0, 3) == 3


def _curves(errors: dict[int, list[float]]) -> list[Curve]:
    return [Curve(space, f"s{space}", "channels", 10, [0.1 * (i + 1) for i in range(len(values))], values)
            for space, values in errors.items()]


class _Costs:
    """A stand-in for budget.PlanCosts: each space saves `per_channel` per channel removed, independently."""

    def __init__(self, per_channel: dict[int, float], total: float):
        self.per_channel, self.total = per_channel, total
        self.tensors_of = {space: [f"t{space}"] for space in per_channel}
        self.axes = {f"t{space}": {0: [(space, 1)]} for space in per_channel}

    def step_gain(self, removed, space, count):
        return (count - removed.get(space, 0)) * self.per_channel[space]


def test_latency_breaks_ties_between_equally_sensitive_cuts():
    curves = _curves({1: [0.01, 0.02, 0.03], 2: [0.01, 0.02, 0.03]})
    costs = _Costs({1: 1.0, 2: 1.0}, 10.0)
    # One step (1 channel of 10, cost 1) each side; the goal is one step.
    plain = allocate_exact(curves, costs, 10.0, 0.9)
    assert sum(bool(r) for r in plain.values()) == 1
    for slow in (1, 2):
        ties = _Costs({slow: 5.0, 3 - slow: 1.0}, 10.0)
        chosen = allocate_exact(curves, costs, 10.0, 0.9, ties)
        assert chosen[slow] > 0 and chosen[3 - slow] == 0


def test_latency_never_outweighs_a_clearly_less_sensitive_cut():
    low = 0.01 / (TIE_FACTOR ** 2)  # further apart than a tie
    curves = _curves({1: [0.01, 0.02], 2: [low, 2 * low]})
    costs = _Costs({1: 1.0, 2: 1.0}, 10.0)
    chosen = allocate_exact(curves, costs, 10.0, 0.9, _Costs({1: 100.0, 2: 1.0}, 101.0))
    assert chosen == {1: 0.0, 2: pytest.approx(0.1)}


def test_target_flops_on_a_detector_measures_on_the_budgeted_feeds(zoo, tmp_path, monkeypatch):
    """The FLOPs target is still met when the curves are measured on fewer feeds than given, the report says
    how many, and the latency model (timed into a private cache here) has been consulted."""
    import onnxprune.passes.sensitivity as sensitivity

    import models

    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sensitivity, "SENSITIVITY_FLOPS", 1.0)  # only the one feed the rule always keeps
    calib = tmp_path / "calib.npz"
    inputs = models.example_inputs("yolo", batch=1)
    np.savez(calib, **{key: np.repeat(value, 6, axis=0) for key, value in inputs.items()})
    out = tmp_path / "out.onnx"
    report = prune(zoo("yolo"), out, PruneOptions(calib=str(calib), calib_batch=1, validate=False, target_flops=0.6))
    assert report["sensitivity_feeds"]["used"] == 1 and report["sensitivity_feeds"]["of"] == 6
    assert report["sensitivity_feeds"]["rows_of_first"] == 1
    assert report["latency_model"]["layers_timed"] > 0
    kept = report["after"]["flops"] / report["before"]["flops"]
    assert abs(kept - 0.6) <= 0.03, report["target_search"]
    check_valid(out)


@pytest.mark.parametrize("name", ["resnet", "yolo"])
def test_plan_costs_predict_the_flops_a_plan_keeps(zoo, name):
    """PlanCosts counts a layer that loses inputs and outputs as keeping (1-a)(1-b): its prediction of the
    pruned model's FLOPs matches the count on the pruned model, where per-channel costs summed do not."""
    from onnxprune.passes import RemoveChannels
    from onnxprune.passes.budget import PlanCosts
    from onnxprune.passes.sensitivity import space_costs

    import models
    from onnxprune import Model
    from onnxprune.check import counts
    from onnxprune.check.stats import folded_light_proto
    from onnxprune.pipeline import Context

    model = Model.load(zoo(name))
    shapes = {key: value.shape for key, value in models.example_inputs(name).items()}
    context = Context(model)
    graph = context.channel_graph()
    before = counts.count_flops(folded_light_proto(model, shapes), shapes)
    rng = np.random.default_rng(0)
    removed = {space.id: int(rng.integers(0, space.size // 2 + 1)) for space in graph.prunable}
    predicted = PlanCosts(model, graph, before.by_node).removed(removed)
    first_order = sum(count * space_costs(model, graph, before.by_node)[space][0] for space, count in removed.items())
    context.plan = {space: np.arange(count) for space, count in removed.items() if count}
    RemoveChannels().run(context)
    after = counts.count_flops(folded_light_proto(model, shapes), shapes).total
    actual = before.total - after
    assert abs(predicted - actual) <= 0.02 * before.total, (predicted, actual, before.total)
    assert abs(first_order - actual) > abs(predicted - actual)


def test_one_batched_feed_over_budget_is_cut_to_its_first_rows(zoo, tmp_path, monkeypatch):
    """A --calib of one batch of 6 rows (a model with a batch axis) is measured on the rows the budget holds."""
    import onnxprune.passes.sensitivity as sensitivity

    import models

    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sensitivity, "SENSITIVITY_FLOPS", 1.0)
    calib = tmp_path / "calib.npz"
    np.savez(calib, **models.example_inputs("resnet", batch=6))
    report = prune(zoo("resnet"), tmp_path / "out.onnx", PruneOptions(calib=str(calib), calib_batch=6,
                                                                       validate=False, target_flops=0.6))
    assert report["sensitivity_feeds"]["used"] == 1 and report["sensitivity_feeds"]["rows_of_first"] == 1
    assert report["sensitivity_feeds"]["ratios_measured"] == [0.1, 0.3, 0.5, 0.7]
    assert all(len(curve["ratios"]) > 2 for curve in report["sensitivity"] if curve["size"] >= 10)
    assert abs(report["after"]["flops"] / report["before"]["flops"] - 0.6) <= 0.03, report["target_search"]


@pytest.mark.parametrize("name", ["resnet", "yolo"])
def test_activation_costs_follow_the_channels_they_carry(zoo, name):
    """With `activation_shapes`, an elementwise op's cost follows its output's channels: costing each one
    at its output's element count, PlanCosts predicts exactly the elements a plan removes from them."""
    from onnxprune.passes import RemoveChannels
    from onnxprune.passes.budget import PlanCosts

    import models
    from onnxprune import Model
    from onnxprune.measure.latency_model import ACTIVATION_OPS
    from onnxprune.pipeline import Context

    model = Model.load(zoo(name))
    shapes = {key: value.shape for key, value in models.example_inputs(name).items()}

    def static(model: Model) -> dict[str, tuple]:
        return {name: tuple(info.shape) for name, info in model.infer_shapes(shapes).items()
                if info.shape and all(isinstance(d, int) for d in info.shape)}

    def elements(model: Model) -> dict[str, float]:
        known = static(model)
        return {node.output[0]: float(np.prod(known[node.output[0]])) for node in model.graph.node
                if node.op_type in ACTIVATION_OPS and node.output[0] in known
                and not any(model.is_weight(name) for name in node.input)}

    before = elements(model)
    context = Context(model)
    graph = context.channel_graph()
    rng = np.random.default_rng(1)
    removed = {space.id: int(rng.integers(0, space.size // 2 + 1)) for space in graph.prunable}
    costs = PlanCosts(model, graph, before, activation_shapes=static(model))
    assert costs.total == pytest.approx(sum(before.values()))
    predicted = costs.removed(removed)
    context.plan = {space: np.arange(count) for space, count in removed.items() if count}
    RemoveChannels().run(context)
    after = elements(model)
    actual = sum(before.values()) - sum(after.get(name, 0.0) for name in before)
    assert predicted > 0 and predicted == pytest.approx(actual, rel=1e-6)


def test_target_flops_spends_its_flops_where_they_buy_time():
    """Under a FLOPs goal with the latency model, a step's error is weighed against the time it saves: the
    less sensitive cut per FLOP that saves almost no time loses to one that turns its FLOPs into time."""
    low = 0.01 / TIE_FACTOR ** 2
    curves = _curves({1: [0.01, 0.02], 2: [low, 2 * low]})
    flops = _Costs({1: 1.0, 2: 1.0}, 10.0)
    seconds = _Costs({1: 1.0, 2: 0.01}, 2.0)
    assert allocate_exact(curves, flops, 10.0, 0.9, seconds) == {1: 0.0, 2: pytest.approx(0.1)}
    realized = allocate_exact(curves, flops, 10.0, 0.9, seconds, realized=True)
    assert realized == {1: pytest.approx(0.1), 2: 0.0}


def test_a_latency_model_without_its_layers_is_not_used(zoo, tmp_path, monkeypatch):
    """When no weighted layer could be timed (dynamic shapes), the few activation ops timed are no model of
    the time: --target-latency stops with an error naming the fix, --target-flops allocates per FLOP."""
    import models
    import onnxprune.measure.latency_model as latency_model
    from onnxprune.errors import InvalidOptionError

    real = latency_model.layer_latencies

    def activations_only(model, *args, **kwargs):
        timed = real(model, *args, **kwargs)
        weighted = {node.output[0] for node in model.graph.node if node.op_type in latency_model.TIMED_OPS}
        return {name: seconds for name, seconds in timed.items() if name not in weighted}

    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(latency_model, "layer_latencies", activations_only)
    calib = tmp_path / "calib.npz"
    np.savez(calib, **models.example_inputs("mlp", batch=8))
    shapes = {"input": (8, 64)}
    with pytest.raises(InvalidOptionError, match="--shapes"):
        prune(zoo("mlp"), tmp_path / "latency.onnx", PruneOptions(calib=str(calib), target_latency=0.7,
                                                                    shapes=shapes, validate=False))
    report = prune(zoo("mlp"), tmp_path / "flops.onnx", PruneOptions(calib=str(calib), target_flops=0.7,
                                                                      shapes=shapes, validate=False))
    assert "latency_model" not in report and any("no Conv/MatMul/Gemm" in note for note in report["notes"])
    assert abs(report["after"]["flops"] / report["before"]["flops"] - 0.7) <= 0.05  # the MLP's coarse steps
    check_valid(tmp_path / "flops.onnx")
