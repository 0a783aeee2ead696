"""Changed weights moved out of anonymous memory into an unnamed temporary file.

Loaded weights cost no anonymous memory: they stay memory-mapped from the model's file. A pass that
changes a weight (channel removal, compensation, sparsity) makes a new array, and before this module
every such array stayed in memory until the model was saved: pruning a 14 GB model at 40% held about
0.4-0.6 of it at once. `Model` keeps changed weights in memory up to a budget and writes the oldest
ones here beyond it; each comes back as a read-only array over a memory map of this file, so its
pages are the kernel's page cache (reclaimable, written back to disk) rather than the process's heap,
and saving copies them file to file with copy_file_range without reading them into Python.

The file is created with O_TMPFILE where the system has it (tempfile.TemporaryFile): it has no
name, so nothing is left behind however the process ends.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import OnnxPruneError

# One mapping covers this many bytes of the file, so a model with thousands of spilled tensors
# holds a few file descriptors (each mapping dups one), not one per tensor.
_WINDOW = 256 * 2**20
_ALIGN = 64


def _to_le_bytes(array: np.ndarray) -> np.ndarray:
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


class SpillFile:
    """Append-only storage for arrays; `store` returns a read-only array backed by the file."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        handle = None
        for candidate in dict.fromkeys([None if folder is None else str(folder), tempfile.gettempdir()]):
            try:
                handle = tempfile.TemporaryFile(dir=candidate, prefix=".onnxprune-spill-")
                self.folder = Path(candidate if candidate is not None else tempfile.gettempdir())
                break
            except OSError:
                if candidate == tempfile.gettempdir():
                    raise
        assert handle is not None
        self._file = handle
        self._end = 0  # bytes used
        self._size = 0  # file length (holes included)
        self._window: tuple[int, int, mmap.mmap] | None = None  # (file offset, length, mapping)
        self._mappings: list[mmap.mmap] = []
        self.bytes_written = 0

    def fileno(self) -> int:
        return self._file.fileno()

    def store(self, array: np.ndarray) -> tuple[np.ndarray, int]:
        """Write `array` and return (a read-only view of its bytes in the file, its offset)."""
        data = _to_le_bytes(array)
        raw = data.reshape(-1).view(np.uint8)
        offset = -(-self._end // _ALIGN) * _ALIGN
        view = memoryview(raw)
        done = 0
        try:
            while done < raw.nbytes:
                done += os.pwrite(self.fileno(), view[done:], offset + done)
        except OSError as exc:
            raise OnnxPruneError(
                f"cannot write {raw.nbytes / 1e6:,.1f} MB of changed weights to a temporary file in "
                f"'{self.folder}' ({exc.strerror or exc}); free space there"
            ) from None
        self._end = offset + raw.nbytes
        self.bytes_written += raw.nbytes
        if raw.nbytes == 0:
            empty = np.zeros(data.shape, data.dtype)
            empty.flags.writeable = False  # like every stored array
            return empty, offset
        buffer, start = self._mapping(offset, raw.nbytes)
        stored = np.frombuffer(buffer, dtype=data.dtype, count=data.size, offset=start).reshape(data.shape)
        return stored, offset

    def _mapping(self, offset: int, length: int) -> tuple[mmap.mmap, int]:
        window = self._window
        if window is None or not (window[0] <= offset and offset + length <= window[0] + window[1]):
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            size = max(_WINDOW, offset + length - start)
            if start + size > self._size:
                # A hole, not disk blocks: only the written bytes take space.
                os.ftruncate(self.fileno(), start + size)
                self._size = start + size
            window = (start, size, mmap.mmap(self.fileno(), size, access=mmap.ACCESS_READ, offset=start))
            self._window = window
            self._mappings.append(window[2])
        return window[2], offset - window[0]

    def release_pages(self) -> None:
        """Drop the mapped pages from the process's RSS (protoio.release_mapped_pages)."""
        from .protoio import release_mapped_pages

        release_mapped_pages(self._mappings)

    def close(self) -> None:
        """Close the file; views already handed out keep their own mappings alive."""
        self._window = None
        self._mappings.clear()
        self._file.close()


# Changed weights held in memory before the oldest are spilled. Small models never reach it, so
# they are saved exactly as before; a 14 GB model holds at most this much (plus the one tensor a
# pass is working on) however much it changes.
DEFAULT_BUDGET = 256 * 2**20
# Smaller arrays are never spilled (nor counted): shape constants, biases, norms.
MIN_SPILL_BYTES = 2**20


def file_backed(array: np.ndarray) -> bool:
    """True when `array` views a memory map (a loaded or spilled weight), so it holds no heap memory."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap) or (isinstance(base, np.memmap) and getattr(base, "_mmap", None) is not None):
            return True
        base = base.base if isinstance(base, np.ndarray) else getattr(base, "obj", None)
    return False


class HeldWeights:
    """Changed weights kept in memory, oldest first; beyond `budget` bytes the oldest are spilled.

    `folder` is where the spill file goes (None: the system's temporary folder); it is created on
    the first spill only.
    """

    def __init__(self, budget: int | None = None, folder: str | os.PathLike | None = None) -> None:
        self.budget = DEFAULT_BUDGET if budget is None else budget
        self.folder = folder
        self._held: dict[int, tuple[object, np.ndarray]] = {}  # id(weight) -> (weight, array), oldest first
        self._bytes = 0
        self.spill: SpillFile | None = None
        self.spilled_bytes = 0

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def track(self, weight) -> None:
        """`weight` (a protoio.WeightData) was just given a new array."""
        self.forget(weight)
        array = weight.array
        if array is not None and array.nbytes >= MIN_SPILL_BYTES and not file_backed(array):
            self._held[id(weight)] = (weight, array)
            self._bytes += array.nbytes
        while self._bytes > self.budget and self._held:
            oldest = next(iter(self._held))
            held, array = self._held.pop(oldest)
            self._bytes -= array.nbytes
            self._spill(held, array)

    def forget(self, weight) -> None:
        entry = self._held.pop(id(weight), None)
        if entry is not None:
            self._bytes -= entry[1].nbytes

    def _spill(self, weight, array: np.ndarray) -> None:
        if weight.array is not array:
            return  # replaced since: nothing to move
        if self.spill is None:
            self.spill = SpillFile(self.folder)
        stored, offset = self.spill.store(array)
        weight.array = stored
        weight._mapped = stored
        weight.spilled = (self.spill, offset)
        weight.source = None
        self.spilled_bytes += array.nbytes
