"""Atoms: the building blocks of channel spaces.

The channel axis of a tensor is described by a *layout*: a sequence of elements `(atom, block)`, each
an atom's channels with every channel widened to `block` consecutive channels of the axis (an
attention head is one channel of a head atom with block = head size). Atoms in the same union-find
class must lose the same in-atom indices.

Concat lays layouts end to end; Split and Slice cut them; when a cut falls inside an atom, the atom's
whole class is cut at the same offset so every copy stays aligned. When two elements of different
block sizes meet (`[B,S,H*D]` reshaped to `[B,S,H,D]`), the finer one's class is *coarsened*: its
channels are grouped so only whole blocks can go. A cut inside a block is impossible and fails.
When propagation ends, each class is one channel space.
"""

from __future__ import annotations

Element = tuple[int, int]  # (atom, block)
Layout = tuple[Element, ...]


class AtomTable:
    def __init__(self) -> None:
        self.size: list[int] = []
        self._parent: list[int] = []
        # An atom that was cut or coarsened is described by a layout in units of its own channels.
        self._children: dict[int, Layout] = {}
        self._class_members: dict[int, list[int]] = {}

    def new(self, size: int) -> int:
        assert size > 0
        atom = len(self.size)
        self.size.append(size)
        self._parent.append(atom)
        self._class_members[atom] = [atom]
        return atom

    def fresh(self, size: int) -> Layout:
        return ((self.new(size), 1),)

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

    def leaves(self, layout: Layout) -> list[Element]:
        out: list[Element] = []
        stack = list(reversed(layout))
        while stack:
            atom, block = stack.pop()
            children = self._children.get(atom)
            if children is None:
                out.append((atom, block))
            else:
                stack.extend((child, block * child_block) for child, child_block in reversed(children))
        return out

    def total(self, layout: Layout) -> int:
        return sum(self.size[atom] * block for atom, block in layout)

    def _boundaries(self, layout: Layout) -> set[int]:
        cuts, offset = set(), 0
        for atom, block in self.leaves(layout):
            offset += self.size[atom] * block
            cuts.add(offset)
        return cuts

    def _split_class(self, atom: int, at: int) -> None:
        lefts, rights = [], []
        for member in self._class_members.pop(self.find(atom)):
            left, right = self.new(at), self.new(self.size[member] - at)
            self._children[member] = ((left, 1), (right, 1))
            lefts.append(left)
            rights.append(right)
        for group in (lefts, rights):
            for other in group[1:]:
                self.union(group[0], other)

    def _coarsen_class(self, atom: int, factor: int) -> bool:
        """Group the class's channels `factor` at a time; False if the size does not divide."""
        if self.size[atom] % factor:
            return False
        coarse = []
        for member in self._class_members.pop(self.find(atom)):
            child = self.new(self.size[member] // factor)
            self._children[member] = ((child, factor),)
            coarse.append(child)
        for other in coarse[1:]:
            self.union(coarse[0], other)
        return True

    def cut(self, layout: Layout, positions: set[int]) -> bool:
        """Make every position an element boundary of `layout`; False if one falls inside a block."""
        for position in sorted(positions):
            offset = 0
            for atom, block in self.leaves(layout):
                end = offset + self.size[atom] * block
                if offset < position < end:
                    if (position - offset) % block:
                        return False
                    self._split_class(atom, (position - offset) // block)
                    break
                offset = end
        return True

    def unify(self, a: Layout, b: Layout) -> bool:
        """Tie two layouts channel by channel; False when they cannot be (sizes or blocks clash)."""
        if self.total(a) != self.total(b):
            return False
        while True:
            cuts_a, cuts_b = self._boundaries(a), self._boundaries(b)
            if cuts_a != cuts_b:
                if not (self.cut(a, cuts_b - cuts_a) and self.cut(b, cuts_a - cuts_b)):
                    return False
                continue
            pairs = list(zip(self.leaves(a), self.leaves(b)))
            clash = next(((x, y) for x, y in pairs if x[1] != y[1]), None)
            if clash is None:
                break
            (x, block_x), (y, block_y) = clash
            finer, coarser = ((x, block_x), block_y) if block_x < block_y else ((y, block_y), block_x)
            if coarser % finer[1] or not self._coarsen_class(finer[0], coarser // finer[1]):
                return False
        for (x, _), (y, _) in zip(self.leaves(a), self.leaves(b)):
            self.union(x, y)
        return True

    def sub_layout(self, layout: Layout, start: int, length: int) -> Layout | None:
        """The elements covering channels [start, start + length) of `layout` (None: inside a block)."""
        if not self.cut(layout, {start, start + length}):
            return None
        picked, offset = [], 0
        for atom, block in self.leaves(layout):
            if start <= offset < start + length:
                picked.append((atom, block))
            offset += self.size[atom] * block
        return tuple(picked)

    @staticmethod
    def widen(layout: Layout, factor: int) -> Layout:
        """Every channel of `layout` becomes `factor` consecutive channels (merging [H, D] into H*D)."""
        return tuple((atom, block * factor) for atom, block in layout)
