"""What the channel builder produces: spaces of coupled (tensor, axis) members, the pins that keep a
space whole, and the removal a plan turns into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Member:
    """Channel i of the space is channels [offset + i*block, offset + (i+1)*block) of `axis` of `tensor`.

    block is 1 for plain channels, the head size for an attention head space."""

    tensor: str
    axis: int
    offset: int
    is_weight: bool
    block: int = 1

    def indices(self, channels: np.ndarray) -> np.ndarray:
        """Positions on the member's axis of the given space channels."""
        channels = np.asarray(channels, dtype=np.int64)
        return (self.offset + channels[:, None] * self.block + np.arange(self.block)).reshape(-1)


@dataclass(frozen=True)
class Pin:
    reason: str
    node: str | None = None

    def __str__(self) -> str:
        return f"{self.reason} (at {self.node})" if self.node else self.reason


@dataclass
class ChannelSpace:
    """A set of channels that must be removed together, index by index, from every member."""

    id: int
    size: int
    members: list[Member]
    pins: list[Pin] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # nodes whose weights are members
    label: str = ""
    kind: str = "channels"  # or "heads": each channel is an attention head (or a KV group of heads)

    @property
    def prunable(self) -> bool:
        return not self.pins

    @property
    def weight_members(self) -> list[Member]:
        return [m for m in self.members if m.is_weight]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "size": self.size,
            "prunable": self.prunable,
            "pinned_by": [str(p) for p in self.pins],
            "nodes": self.nodes,
            "members": [
                {"tensor": m.tensor, "axis": m.axis, "offset": m.offset, "block": m.block, "weight": m.is_weight}
                for m in self.members
            ],
        }


Fixup = Callable[["Removal"], None]


class Removal:
    """Which indices leave each (tensor, axis): what rewrite and fixups read."""

    def __init__(self, removed: dict[tuple[str, int], np.ndarray]):
        self._removed = removed

    def removed(self, tensor: str, axis: int) -> np.ndarray:
        return self._removed.get((tensor, axis), np.zeros(0, dtype=np.int64))

    def count(self, tensor: str, axis: int) -> int:
        return int(self.removed(tensor, axis).size)

    def items(self):
        return self._removed.items()
