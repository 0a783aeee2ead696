"""From channel scores to a removal plan under a budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Budget:
    ratio: float  # fraction of each space's channels (local) or of all prunable channels (global)
    global_ranking: bool = False
    round_to: int = 1  # channel counts kept stay multiples of this (tensor-core friendly)
    min_keep: int = 1


def kept_after_rounding(size: int, kept: int, budget: Budget) -> int:
    kept = max(kept, budget.min_keep, 1)
    if budget.round_to > 1:
        kept = math.ceil(kept / budget.round_to) * budget.round_to
    return min(kept, size)


def removal_count(size: int, budget: Budget) -> int:
    """How many channels a space of `size` loses under a local (uniform) budget."""
    remove = math.floor(budget.ratio * size + 1e-9)
    return size - kept_after_rounding(size, size - remove, budget)


def lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` lowest scores; ties go to the lower index so plans are deterministic."""
    order = np.lexsort((np.arange(scores.size), scores))
    return np.sort(order[:count])


def plan_local(scores: dict[int, np.ndarray], budget: Budget) -> dict[int, np.ndarray]:
    return {space: lowest(values, removal_count(values.size, budget)) for space, values in scores.items()}


def normalized(values: np.ndarray) -> np.ndarray:
    """Scores divided by their space's mean, so spaces of different scales can be ranked together."""
    mean = float(np.mean(values)) if values.size else 0.0
    return values / mean if mean > 0 else np.zeros_like(values)


def plan_global(scores: dict[int, np.ndarray], budget: Budget) -> dict[int, np.ndarray]:
    """Rank every prunable channel together by normalized score and remove the lowest."""
    entries = [(float(score), space, index) for space, values in scores.items()
               for index, score in enumerate(normalized(np.asarray(values, np.float64)))]
    entries.sort()
    target = math.floor(budget.ratio * len(entries) + 1e-9)
    chosen: dict[int, list[int]] = {space: [] for space in scores}
    taken = 0
    for _, space, index in entries:
        if taken == target:
            break
        if scores[space].size - len(chosen[space]) > max(budget.min_keep, 1):
            chosen[space].append(index)
            taken += 1
    plan = {}
    for space, indices in chosen.items():
        size = scores[space].size
        keep = kept_after_rounding(size, size - len(indices), budget)
        # Rounding up the kept count gives back the best-scored of the chosen channels.
        plan[space] = np.sort(np.asarray(indices[: size - keep], dtype=np.int64))
    return plan


def _aligned_kept(size: int, keep: int, multiple: int) -> int:
    """The aligned kept count nearest `keep`: a multiple of `multiple` (at least one), or the whole space."""
    if size < multiple:
        return size
    below = max(multiple, (keep // multiple) * multiple)
    above = min(size, below + multiple)
    return below if keep - below <= above - keep else above


def align_removals(wanted: dict[int, int], scores: dict[int, np.ndarray], multiples: dict[int, int],
                   costs: dict[int, float], min_keep: int = 1) -> dict[int, int]:
    """Removal counts whose kept channel counts are multiples of each space's `multiples` entry (or the
    whole space), with the total cost removed (FLOPs) as close as possible to what `wanted` removes.

    Rounding every space the same way misses the budget (rounding kept counts up removed 0.61 of the
    FLOPs asked at --round-to 16 on a detector, and a space smaller than the multiple removes nothing).
    Here each space starts at its nearest aligned count; then, one multiple at a time, the space whose
    next step costs the least score per unit of cost moves (scores normalized by each space's mean so
    spaces compare), as long as the step brings the total closer to the goal.
    """
    goal = sum(count * costs.get(space, 0.0) for space, count in wanted.items())
    result = dict(wanted)
    kept: dict[int, int] = {}
    for space, count in wanted.items():
        multiple = multiples.get(space, 1)
        if multiple > 1:
            size = scores[space].size
            kept[space] = _aligned_kept(size, size - count, multiple)
    if not kept:
        return result
    # Channels in removal order (lowest normalized score first): a step down removes the next ones.
    ranked = {space: np.sort(normalized(np.asarray(scores[space], np.float64))) for space in kept}
    floor = {space: max(min_keep, 1, multiples[space]) for space in kept}

    def removed_cost() -> float:
        fixed = sum(count * costs.get(space, 0.0) for space, count in wanted.items() if space not in kept)
        return fixed + sum((scores[space].size - k) * costs.get(space, 0.0) for space, k in kept.items())

    while True:
        deficit = goal - removed_cost()
        best = None
        for space, k in kept.items():
            size, multiple, cost = scores[space].size, multiples[space], costs.get(space, 0.0)
            if deficit > 0:  # remove more: the next block of channels goes
                step = k - ((k - 1) // multiple) * multiple  # down to the next multiple
                if k - step < floor[space]:
                    continue
                between = ranked[space][size - k:size - k + step]
            else:  # keep more: the last block removed comes back
                step = min(size, (k // multiple + 1) * multiple) - k
                if step <= 0:
                    continue
                between = ranked[space][size - k - step:size - k]
            delta = step * cost
            if delta <= 0 or delta >= 2 * abs(deficit):
                continue  # no effect, or it would overshoot by more than it fixes
            key = float(np.sum(between)) / delta * (1 if deficit > 0 else -1)
            if best is None or key < best[0]:
                best = (key, space, step)
        if best is None:
            break
        _, space, step = best
        kept[space] += -step if deficit > 0 else step
    result.update({space: scores[space].size - k for space, k in kept.items()})
    return result
