"""Allocation: per-space ratios from sensitivity curves under a budget, greedily by least added error
per unit saved (FLOPs, parameters or seconds of the latency model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.plan import Budget, removal_count

if TYPE_CHECKING:
    from .sensitivity import Curve

# Sensitivity measured on a few feeds is not finer than this: errors per unit saved within one factor of
# it are a tie, broken by what else the cut saves.
TIE_FACTOR = 1.5


def _bucket(value: float) -> float:
    """Added error per unit saved, coarsened to steps of TIE_FACTOR: within one step two cuts are a tie
    (sensitivity measured on a few feeds is not finer than that), and no added error is the lowest step."""
    return float("-inf") if value <= 0 else float(np.floor(np.log(value) / np.log(TIE_FACTOR)))


def allocate_exact(curves: list[Curve], costs, total: float, target: float, ties=None,
                   realized: bool = False) -> dict[int, float]:
    """Greedy: keep taking the step (one space to its next ratio) with the least added error per unit of
    cost saved, until the remaining cost is at most `target` of `total`. `costs` is a budget.PlanCosts:
    each step's saving is what the plan so far would really save (a layer that already lost inputs saves
    less when it loses outputs), so the goal is reached as asked instead of ending short. Steps are cached
    per space and recomputed only for the spaces that share a layer with the one that moved.

    `ties`, a PlanCosts in another currency (seconds of the latency model), breaks ties: among steps
    whose error per unit saved is within TIE_FACTOR, the one that saves the most of it per unit of the
    target's cost goes first, so a FLOPs cut goes where it buys time.

    `realized` (with `ties`): a step's error is weighed against the time it saves (its share of the
    other currency, in units of the cost), while the goal is still counted in the cost: FLOPs a runtime
    does not turn into time (a wide layer at low resolution, where the memory-bound activations of a
    high-resolution layer cost little FLOPs and much time) are no bargain however little error they add.
    Measured on PP-OCRv5's detector (ORT CPU, 1 thread): --target-flops 0.5 by error per FLOP ran 1.47x
    faster (probability-map IoU against the dense model 0.86), by error per second 1.85x (IoU 0.77);
    error per FLOP pushed to the same speed (FLOPs 0.385) ran 1.62x at IoU 0.73, so the time-weighed
    plan is both faster and closer at equal speed."""
    chosen = {curve.space: 0 for curve in curves}
    removed = {curve.space: 0 for curve in curves}
    goal = (1 - target) * total
    neighbours = {curve.space: {other for tensor in costs.tensors_of.get(curve.space, ())
                                for members in costs.axes[tensor].values() for other, _ in members}
                  for curve in curves}
    cache: dict[int, tuple | None] = {}

    def step(curve: Curve) -> tuple | None:
        index = chosen[curve.space]
        if index >= len(curve.ratios):
            return None
        count = removal_count(curve.size, Budget(curve.ratios[index]))
        gain = costs.step_gain(removed, curve.space, count)
        if gain <= 0:
            return None
        added = curve.errors[index] - (curve.errors[index - 1] if index else 0.0)
        if ties is None:
            return (added / gain, curve.space), count, gain
        tie_gain = ties.step_gain(removed, curve.space, count)
        worth = gain
        if realized and ties.total > 0:
            worth = tie_gain / ties.total * total
        per_unit = added / max(worth, gain * 1e-9)
        return (_bucket(per_unit), -tie_gain / gain, per_unit, curve.space), count, gain

    saved = 0.0
    while saved < goal:
        for curve in curves:
            if curve.space not in cache:
                cache[curve.space] = step(curve)
        options = [(found, space) for space, found in cache.items() if found is not None]
        if not options:
            break
        (_, count, gain), space = min(options, key=lambda option: option[0][0])
        chosen[space] += 1
        removed[space] = count
        saved += gain
        for other in neighbours[space] | {space}:
            cache.pop(other, None)
    by_space = {curve.space: curve for curve in curves}
    return {space: by_space[space].ratios[index - 1] if index else 0.0 for space, index in chosen.items()}
