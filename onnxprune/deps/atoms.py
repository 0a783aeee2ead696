"""Atoms: the building blocks of channel spaces.

The channel axis of a tensor is described by a *layout*, a sequence of atoms (runs of channels). Two
atoms in the same union-find class must lose the same in-atom indices. Concat lays layouts end to end;
Split and Slice cut them; when a cut falls inside an atom, the atom's whole class is cut at the same
offset so that every copy stays aligned. When propagation ends, each class is one channel space.
"""

from __future__ import annotations

Layout = tuple[int, ...]


class AtomTable:
    def __init__(self) -> None:
        self.size: list[int] = []
        self._parent: list[int] = []
        self._children: dict[int, tuple[int, int]] = {}
        self._class_members: dict[int, list[int]] = {}

    def new(self, size: int) -> int:
        assert size > 0
        atom = len(self.size)
        self.size.append(size)
        self._parent.append(atom)
        self._class_members[atom] = [atom]
        return atom

    def find(self, atom: int) -> int:
        root = atom
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[atom] != root:
            self._parent[atom], atom = root, self._parent[atom]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        assert self.size[ra] == self.size[rb], "only atoms of equal size can be tied"
        if len(self._class_members[ra]) < len(self._class_members[rb]):
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._class_members[ra].extend(self._class_members.pop(rb))

    def leaves(self, layout: Layout) -> list[int]:
        out: list[int] = []
        stack = list(reversed(layout))
        while stack:
            atom = stack.pop()
            children = self._children.get(atom)
            if children is None:
                out.append(atom)
            else:
                stack.extend(reversed(children))
        return out

    def total(self, layout: Layout) -> int:
        return sum(self.size[a] for a in layout)

    def _boundaries(self, layout: Layout) -> set[int]:
        cuts, offset = set(), 0
        for atom in self.leaves(layout):
            offset += self.size[atom]
            cuts.add(offset)
        return cuts

    def _split_class(self, atom: int, at: int) -> None:
        root = self.find(atom)
        lefts, rights = [], []
        for member in self._class_members.pop(root):
            left, right = self.new(at), self.new(self.size[member] - at)
            self._children[member] = (left, right)
            lefts.append(left)
            rights.append(right)
        for group in (lefts, rights):
            for other in group[1:]:
                self.union(group[0], other)

    def cut(self, layout: Layout, positions: set[int]) -> None:
        """Make every position in `positions` an atom boundary of `layout`."""
        for position in sorted(positions):
            offset = 0
            for atom in self.leaves(layout):
                end = offset + self.size[atom]
                if offset < position < end:
                    self._split_class(atom, position - offset)
                    break
                offset = end

    def unify(self, a: Layout, b: Layout) -> bool:
        """Tie two layouts channel by channel; False (nothing done) when their sizes differ."""
        if self.total(a) != self.total(b):
            return False
        while True:
            cuts_a, cuts_b = self._boundaries(a), self._boundaries(b)
            if cuts_a == cuts_b:
                break
            self.cut(a, cuts_b - cuts_a)
            self.cut(b, cuts_a - cuts_b)
        for x, y in zip(self.leaves(a), self.leaves(b)):
            self.union(x, y)
        return True

    def sub_layout(self, layout: Layout, start: int, length: int) -> Layout:
        """The atoms covering channels [start, start + length) of `layout`."""
        self.cut(layout, {start, start + length})
        picked, offset = [], 0
        for atom in self.leaves(layout):
            if start <= offset < start + length:
                picked.append(atom)
            offset += self.size[atom]
        return tuple(picked)

    def class_members(self, atom: int) -> list[int]:
        return list(self._class_members[self.find(atom)])
