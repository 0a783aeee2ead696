"""The table of layouts the rules read and write, and the record of which node read which."""

from __future__ import annotations

from collections import defaultdict

from .atoms import Layout


class LayoutTable(dict):
    """Layouts by (tensor, axis), with a per-tensor index: rules ask for a tensor's axes constantly.

    While a rule runs, `reader` is its node's key and every layout the rule looks at or sets is
    recorded in `reads`: a weight read by a node that never looked at one of its sliced axes must not
    be sliced under it (sharing.settle_readers)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_tensor: dict[str, dict[int, Layout]] = defaultdict(dict)
        self.reader: str | None = None
        self.reads: set[tuple[str, str, int]] = set()

    def _saw(self, tensor: str, axis: int) -> None:
        if self.reader is not None:
            self.reads.add((self.reader, tensor, axis))

    def __setitem__(self, key: tuple[str, int], layout: Layout) -> None:
        super().__setitem__(key, layout)
        self._by_tensor[key[0]][key[1]] = layout
        self._saw(*key)

    def __getitem__(self, key: tuple[str, int]) -> Layout:
        layout = super().__getitem__(key)
        self._saw(*key)
        return layout

    def __contains__(self, key) -> bool:
        present = super().__contains__(key)
        if present:
            self._saw(*key)
        return present

    def get(self, key, default=None):
        return self[key] if key in self else default

    def of(self, tensor: str) -> dict[int, Layout]:
        axes = dict(self._by_tensor.get(tensor, {}))
        for axis in axes:
            self._saw(tensor, axis)
        return axes
