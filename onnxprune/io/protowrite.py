"""Writing ONNX files as protoio reads them: the graph first, then the initializers streamed one by one,
inline or into an external-data file; bytes that sit unchanged in a file (the input, or the spill file)
are copied file to file, so a model never passes through Python memory whole."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, BinaryIO

import numpy as np
import onnx
from onnx import TensorProto

from ..errors import InvalidModelError
from . import wire
from .protoio import WeightData


def _tensor_payload(weight: WeightData) -> tuple[bytes, np.ndarray | None]:
    """Serialized header plus the array whose bytes become raw_data (None: the header holds the data)."""
    header = TensorProto()
    header.CopyFrom(weight.header)
    array = weight.array if weight.array is not None else weight.opaque
    if array is None:
        return header.SerializeToString(), None
    if weight.array is not None:
        del header.dims[:]
        header.dims.extend(array.shape)
    return header.SerializeToString(), array


def contiguous_le(array: np.ndarray) -> np.ndarray:
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


class _Copier:
    """Writes arrays, copying bytes that are unchanged since loading straight from file to file."""

    def __init__(self) -> None:
        self._sources: dict[str, int] = {}

    def write(self, out: BinaryIO, array: np.ndarray, source: tuple[str | Any, int] | None) -> None:
        if not array.nbytes:
            return
        if source is not None and hasattr(os, "copy_file_range"):
            out.flush()
            if not isinstance(source[0], str):
                src = source[0].fileno()  # a spill file: open already, and owned by its Model
            else:
                if source[0] not in self._sources:
                    self._sources[source[0]] = os.open(source[0], os.O_RDONLY)
                src = self._sources[source[0]]
            offset, left = source[1], array.nbytes
            try:
                while left:
                    done = os.copy_file_range(src, out.fileno(), left, offset)
                    if done <= 0:
                        raise OSError("copy_file_range made no progress")
                    offset += done
                    left -= done
                out.seek(0, os.SEEK_END)
                return
            except OSError:
                # Filesystems without copy_file_range: fall back to an ordinary write of what is left.
                out.seek(0, os.SEEK_END)
                array = array.reshape(-1).view(np.uint8)[array.nbytes - left:]
        data = contiguous_le(array)
        # Bytes view: memoryview cannot export ml_dtypes types (bfloat16, float8) directly.
        out.write(memoryview(data.reshape(-1).view(np.uint8)))

    def close(self) -> None:
        for fd in self._sources.values():
            os.close(fd)
        self._sources.clear()


def write_model(
    proto: onnx.ModelProto,
    weights: Iterable[WeightData],
    out: BinaryIO,
    *,
    external: tuple[BinaryIO, str] | None = None,
    external_threshold: int = 1024,
    align: int = 4096,
) -> int:
    """Write `proto` (whose graph has no initializers) followed by `weights`.

    With `external=(data_file, location)`, initializers of at least `external_threshold` bytes go to
    `data_file`, referenced by `location` relative to the model file. Returns the bytes written there.
    """
    entries = []  # (header_bytes, array or None, raw_inline)
    data_offset = 0
    for weight in weights:
        header_bytes, array = _tensor_payload(weight)
        if array is not None and external is not None and array.nbytes >= external_threshold:
            data_offset = -(-data_offset // align) * align
            header = TensorProto()
            header.ParseFromString(header_bytes)
            header.data_location = TensorProto.EXTERNAL
            for key, value in (("location", external[1]), ("offset", str(data_offset)), ("length", str(array.nbytes))):
                entry = header.external_data.add()
                entry.key, entry.value = key, value
            entries.append((header.SerializeToString(), array, False, data_offset, weight.unchanged_source()))
            data_offset += array.nbytes
        else:
            entries.append((header_bytes, array, True, None, weight.unchanged_source()))

    tensor_lengths = []
    for header_bytes, array, inline, _, _ in entries:
        length = len(header_bytes)
        if array is not None and inline:
            length += len(wire.len_field(wire.TENSOR_RAW_DATA, array.nbytes)) + array.nbytes
        tensor_lengths.append(length)
    graph_bytes = proto.graph.SerializeToString()
    graph_len = len(graph_bytes) + sum(len(wire.len_field(wire.GRAPH_INITIALIZER, n)) + n for n in tensor_lengths)
    shell = onnx.ModelProto()
    shell.CopyFrom(proto)
    shell.ClearField("graph")
    shell_bytes = shell.SerializeToString()
    total = len(shell_bytes) + len(wire.len_field(wire.MODEL_GRAPH, graph_len)) + graph_len
    if total > wire.PROTOBUF_LIMIT:
        raise InvalidModelError(
            f"the model would be {total / 2**30:.2f} GiB, over protobuf's 2 GiB limit; save it with external data"
        )

    out.write(shell_bytes)
    out.write(wire.len_field(wire.MODEL_GRAPH, graph_len))
    out.write(graph_bytes)
    written = 0
    copier = _Copier()
    try:
        for (header_bytes, array, inline, offset, source), length in zip(entries, tensor_lengths):
            out.write(wire.len_field(wire.GRAPH_INITIALIZER, length))
            out.write(header_bytes)
            if array is None:
                continue
            if inline:
                out.write(wire.len_field(wire.TENSOR_RAW_DATA, array.nbytes))
                copier.write(out, array, source)
            else:
                data_file = external[0]
                if offset > written:
                    data_file.write(b"\0" * (offset - written))
                copier.write(data_file, array, source)
                written = offset + array.nbytes
    finally:
        copier.close()
    return written
