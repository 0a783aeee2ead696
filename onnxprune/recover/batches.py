"""Calibration feeds as training samples: split into single samples, batched again when safe.

Calibration data arrives as feeds of any batch size (an .npz cut by --calib-batch, a loader's
dicts). Training draws `batch` samples per step. Samples are stacked into one batch only when the
model provably treats batch rows independently: a stacked pair must give the same outputs as the
two samples run alone (a Reshape that bakes in batch 1 would mix them, or fail). Otherwise each
sample runs on its own and the step accumulates their gradients.
"""

from __future__ import annotations

import numpy as np
import torch

from .interpreter import GraphModule, InterpreterError, to_torch


def _split(feed: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    sizes = {np.asarray(value).shape[0] if np.ndim(value) else None for value in feed.values()}
    if len(sizes) != 1 or None in sizes or next(iter(sizes)) <= 1:
        return [feed]
    count = next(iter(sizes))
    return [{name: np.asarray(value)[i:i + 1] for name, value in feed.items()} for i in range(count)]


def _signature(feed: dict[str, np.ndarray]) -> tuple:
    return tuple((name, np.asarray(value).shape[1:], np.asarray(value).dtype.str) for name, value in feed.items())


class Samples:
    def __init__(self, feeds: list[dict[str, np.ndarray]], teacher: GraphModule, batch: int, device: torch.device):
        self.batch_size = max(1, batch)
        singles = [sample for feed in feeds for sample in _split(feed)]
        self.units = singles if self._runs(teacher, singles[:1], device) else list(feeds)
        self.count = sum(self._rows(unit) for unit in self.units)
        self.stackable = self._stackable(teacher, device)
        self._order: list[int] = []

    @staticmethod
    def _rows(feed: dict) -> int:
        first = np.asarray(next(iter(feed.values()))) if feed else np.zeros(1)
        return int(first.shape[0]) if first.ndim else 1

    @staticmethod
    def _runs(teacher: GraphModule, feeds: list[dict], device: torch.device) -> bool:
        try:
            with torch.no_grad():
                teacher({name: to_torch(value, device) for name, value in feeds[0].items()})
        except InterpreterError:
            return False
        return True

    def _stackable(self, teacher: GraphModule, device: torch.device) -> bool:
        """Stack samples only if a stacked pair gives what the two give alone."""
        if self.batch_size == 1:
            return False
        first = self.units[0]
        partner = next((i for i, u in enumerate(self.units) if i and _signature(u) == _signature(first)), None)
        if partner is None or self._rows(first) != 1:
            return False
        try:
            with torch.no_grad():
                alone = [teacher(self.batch([index], device)) for index in (0, partner)]
                stacked = teacher(self.batch([0, partner], device))
        except InterpreterError:
            return False
        for name, value in stacked.items():
            parts = [part[name] for part in alone]
            if value.dim() == 0 or value.shape[0] != 2 or any(p.dim() == 0 or p.shape[0] != 1 for p in parts):
                return False
            if not all(torch.allclose(value[i:i + 1].float(), parts[i].float(), rtol=1e-3, atol=1e-5)
                       for i in range(2)):
                return False
        return True

    def order(self) -> list[int]:
        return list(range(len(self.units)))

    def batch(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        names = list(self.units[indices[0]])
        return {name: to_torch(np.concatenate([np.asarray(self.units[i][name]) for i in indices]), device)
                for name in names}

    def _chunks(self, indices: list[int]) -> list[list[int]]:
        if not self.stackable:
            return [[index] for index in indices]
        groups: dict[tuple, list[int]] = {}
        for index in indices:
            groups.setdefault(_signature(self.units[index]), []).append(index)
        return list(groups.values())

    def batches(self, indices: list[int], device: torch.device):
        """Feeds covering `indices` in as few runs as allowed (for measuring, in order)."""
        for start in range(0, len(indices), self.batch_size):
            for chunk in self._chunks(indices[start:start + self.batch_size]):
                yield self.batch(chunk, device)

    def partner(self, chunk: list[int], generator: torch.Generator, device: torch.device) -> dict | None:
        """A batch of other samples, one per sample of `chunk`, of the same shapes (None if there is none)."""
        signature = _signature(self.units[chunk[0]])
        others = [i for i, unit in enumerate(self.units) if i not in chunk and _signature(unit) == signature]
        if not others or self._rows(self.units[chunk[0]]) != 1:
            return None
        picks = [others[int(torch.randint(len(others), (1,), generator=generator))] for _ in chunk]
        return self.batch(picks, device)

    def step_chunks(self, generator: torch.Generator) -> list[tuple[list[int], float]]:
        """The next `batch` samples of a reshuffled cycle, as (chunk, its share of the step)."""
        chosen = []
        while len(chosen) < min(self.batch_size, len(self.units)):
            if not self._order:
                self._order = torch.randperm(len(self.units), generator=generator).tolist()
            chosen.append(self._order.pop())
        return [(chunk, len(chunk) / len(chosen)) for chunk in self._chunks(chosen)]
