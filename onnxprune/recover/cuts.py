"""Which channels of the dense model's tensors the pruned model still computes (numpy only).

Each round of channel removal reports, per space, the removed indices of every member (tensor, axis)
(RemoveChannels' report["spaces"]). Composed over the rounds, they say for each activation tensor
of the pruned model which channels of the dense model's tensor of the same name it holds: there the
two models can be compared channel for channel, although the shapes differ.
"""

from __future__ import annotations

import numpy as np

from ..io.model import Model


class Cuts:
    def __init__(self) -> None:
        self.kept: dict[str, dict[int, np.ndarray]] = {}  # tensor -> axis -> dense indices still there
        self._seen: set[int] = set()
        self._unknown: set[str] = set()  # symbolic channel counts: never compared

    def record(self, spaces: list[dict] | None, dense: Model) -> None:
        """Compose one round's removal (the report's "spaces" list, read once) into `kept`."""
        if not spaces or id(spaces) in self._seen:
            return
        self._seen.add(id(spaces))
        removed: dict[tuple[str, int], list[np.ndarray]] = {}
        for space in spaces:
            channels = np.asarray(space.get("removed") or [], dtype=np.int64)
            if not channels.size:
                continue
            for member in space["members"]:
                if member["weight"]:
                    continue
                block, offset = member["block"], member["offset"]
                indices = (offset + channels[:, None] * block + np.arange(block)).reshape(-1)
                removed.setdefault((member["tensor"], member["axis"]), []).append(indices)
        shapes = None
        for (tensor, axis), parts in removed.items():
            if tensor in self._unknown:
                continue
            axes = self.kept.setdefault(tensor, {})
            if axis not in axes:
                if shapes is None:
                    shapes = dense.infer_shapes()
                info = shapes.get(tensor)
                size = info.static_dim(axis) if info is not None else None
                if size is None:
                    del self.kept[tensor]
                    self._unknown.add(tensor)
                    continue
                axes[axis] = np.arange(size)
            axes[axis] = np.delete(axes[axis], np.unique(np.concatenate(parts)))
