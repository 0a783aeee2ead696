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
