"""Reading ONNX files without holding every weight in the protobuf object.

`onnx.load` parses the whole file, so a model costs its size twice (file bytes and protobuf), and
`onnx.save` serializes it once more. We instead scan the protobuf wire format: the graph is parsed
without its initializers, and each initializer's raw bytes stay in a read-only memory map (one per
file) until a pass replaces them. Saving writes the graph and then streams the initializers one by
one, inline or into an external-data file; bytes that sit unchanged in a file (the input, or the
spill file of spill.py that changed weights move to beyond a budget) are copied file to file.
Anonymous memory therefore stays about the spill budget plus the tensor being worked on, whatever
the model's size; the mapped pages are page cache the kernel can reclaim.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import InvalidModelError
from . import wire


@dataclass
class WeightData:
    """An initializer: its metadata (a TensorProto without raw bytes) and where its bytes live."""

    header: TensorProto
    array: np.ndarray | None = None  # typed data, held or memory-mapped
    opaque: np.ndarray | None = None  # raw bytes of types numpy cannot hold (packed int4, ...)
    # Where unmodified bytes sit in a file: saving copies them file to file, never through Python.
    source: tuple[str, int] | None = None
    _mapped: np.ndarray | None = None
    # A changed array moved to a spill file (onnxprune.spill.SpillFile, offset): copied the same way.
    spilled: tuple[Any, int] | None = None

    def unchanged_source(self) -> tuple[str | Any, int] | None:
        """(file path or object with fileno(), offset) holding exactly the current bytes, or None."""
        current = self.array if self.array is not None else self.opaque
        if current is None or current is not self._mapped:
            return None
        return self.spilled if self.spilled is not None else self.source

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape) if self.array is not None else tuple(self.header.dims)

    @property
    def data_type(self) -> int:
        return self.header.data_type

    def numpy(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        tensor = TensorProto()
        tensor.CopyFrom(self.header)
        if self.opaque is not None:
            tensor.raw_data = self.opaque.tobytes()
        return numpy_helper.to_array(tensor)


def np_dtype(data_type: int) -> np.dtype | None:
    """The numpy dtype whose bytes match ONNX's raw_data layout, None for packed/odd types."""
    if data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    if data_type in (TensorProto.INT4, TensorProto.UINT4) or data_type >= TensorProto.FLOAT4E2M1:
        return None  # sub-byte types are packed; we never slice them
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
    except (KeyError, TypeError, ValueError):
        return None


def element_count(header: TensorProto) -> int:
    """The number of elements the header's dims declare, in Python integers: numpy's int64 product
    wraps around for hostile dims like [2**32, 2**32, 2] and would make them look small."""
    count = 1
    for dim in header.dims:
        if dim < 0:
            raise InvalidModelError(f"initializer '{header.name}' has a negative dimension: {list(header.dims)}")
        count *= int(dim)
    return count


def _raw_view(buf, offset: int, length: int, header: TensorProto, where: str) -> np.ndarray:
    dtype = np_dtype(header.data_type)
    assert dtype is not None
    count = element_count(header)
    if count * dtype.itemsize != length:
        raise InvalidModelError(
            f"initializer '{header.name}' holds {length} bytes {where} but its shape "
            f"{list(header.dims)} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(buf, dtype=dtype.newbyteorder("<"), count=count, offset=offset).reshape(tuple(header.dims))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _external_view(header: TensorProto, base_dir: Path, maps: dict[Path, mmap.mmap]) -> tuple[np.ndarray, str, int]:
    """The initializer's bytes in its external file: (array, file, offset). One mapping per file,
    shared by its tensors: a mapping holds a file descriptor, and models have thousands of tensors."""
    info = {entry.key: entry.value for entry in header.external_data}
    location = info.get("location")
    if not location:
        raise InvalidModelError(f"initializer '{header.name}' has external data without a location")
    if not isinstance(location, str):
        raise InvalidModelError(f"initializer '{header.name}' has an external data location that is not UTF-8 text")
    folder = base_dir.resolve()
    target = (folder / location).resolve()
    # Refuse locations that climb out of the model's folder (absolute paths, '..', symlinks).
    if os.path.isabs(location) or not _inside(target, folder):
        raise InvalidModelError(
            f"initializer '{header.name}' external data location '{location}' is outside the model's folder"
        )
    if not target.is_file():
        raise InvalidModelError(f"external data file '{location}' for initializer '{header.name}' not found")
    dtype = np_dtype(header.data_type)
    if dtype is None:
        raise InvalidModelError(
            f"initializer '{header.name}' stores a packed or string type externally, which onnxprune does not read"
        )
    count = element_count(header)
    need = count * dtype.itemsize
    try:
        offset, length = int(info.get("offset", 0)), int(info.get("length", need))
    except ValueError:
        raise InvalidModelError(
            f"external data of initializer '{header.name}' has a non-numeric offset or length "
            f"({info.get('offset')!r}, {info.get('length')!r})"
        ) from None
    if offset < 0 or length < 0:
        raise InvalidModelError(f"external data of initializer '{header.name}' has a negative offset or length")
    size = target.stat().st_size
    if length != need or offset + length > size:
        raise InvalidModelError(
            f"external data of initializer '{header.name}' ({location}, offset {offset}, length {length}) "
            f"does not match its shape {list(header.dims)} or the file size {size}"
        )
    if count == 0:
        return np.zeros(tuple(header.dims), dtype=dtype), str(target), offset
    if target not in maps:
        with open(target, "rb") as handle:
            maps[target] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    array = np.frombuffer(maps[target], dtype=dtype.newbyteorder("<"), count=count, offset=offset)
    return array.reshape(tuple(header.dims)), str(target), offset


@dataclass
class LoadedModel:
    proto: onnx.ModelProto  # the model with an empty initializer list
    weights: list[WeightData]
    had_external_data: bool
    maps: list[mmap.mmap] = field(default_factory=list)  # the model file's and each data file's

    def release_pages(self) -> None:
        """Drop the mapped pages from this process's resident set (see release_mapped_pages)."""
        release_mapped_pages(self.maps)


def release_mapped_pages(maps: Iterable[mmap.mmap]) -> None:
    """Unmap the resident pages of read-only file mappings: they stay in the page cache and fault
    back in on the next read, but stop counting in this process's RSS. Scoring reads every weight,
    so after it a 14 GB model shows 14 GB resident, which validation's ORT sessions would add to."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None:
        return
    for mapping in maps:
        try:
            mapping.madvise(advice)
        except (OSError, ValueError):
            pass  # closed, or a platform that refuses: only the RSS figure differs


def read_model(path: str | os.PathLike) -> LoadedModel:
    """Parse `path` without copying initializer bytes; raise InvalidModelError on anything odd."""
    path = Path(path)
    if not path.exists():
        raise InvalidModelError(f"input model '{path}' does not exist")
    if not path.is_file():
        raise InvalidModelError(f"input model '{path}' is not a file")
    size = path.stat().st_size
    if size == 0:
        raise InvalidModelError(f"'{path}' is empty, not an ONNX model")
    with open(path, "rb") as handle:
        buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _parse(buf, size, path)
    except (ValueError, IndexError) as exc:
        raise InvalidModelError(f"'{path}' is not a valid ONNX model (protobuf: {exc})") from None


def _parse(buf: mmap.mmap, size: int, path: Path) -> LoadedModel:
    model_rest = bytearray()
    graph_range = None
    for number, wire_type, field_start, start, end in wire.fields(buf, 0, size):
        if number == wire.MODEL_GRAPH and wire_type == wire.LEN:
            if graph_range is not None:
                raise ValueError("two graph fields")
            graph_range = (start, end)
        else:
            model_rest += buf[field_start:end]
    if graph_range is None:
        raise ValueError("no graph")

    graph_rest = bytearray()
    tensor_ranges = []
    for number, wire_type, field_start, start, end in wire.fields(buf, *graph_range):
        if number == wire.GRAPH_INITIALIZER and wire_type == wire.LEN:
            tensor_ranges.append((start, end))
        else:
            graph_rest += buf[field_start:end]

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(bytes(model_rest))
        graph = onnx.GraphProto()
        graph.ParseFromString(bytes(graph_rest))
    except Exception as exc:  # protobuf's DecodeError has no stable import path
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    proto.graph.CopyFrom(graph)
    if not proto.opset_import or proto.ir_version == 0:
        raise ValueError("no ir_version or opset_import: not an ONNX model")

    weights = []
    had_external = False
    maps: dict[Path, mmap.mmap] = {}
    for start, end in tensor_ranges:
        header_bytes = bytearray()
        raw = None
        for number, wire_type, field_start, vstart, vend in wire.fields(buf, start, end):
            if number == wire.TENSOR_RAW_DATA and wire_type == wire.LEN:
                raw = (vstart, vend - vstart)
            else:
                header_bytes += buf[field_start:vend]
        header = TensorProto()
        try:
            header.ParseFromString(bytes(header_bytes))
        except Exception as exc:
            raise ValueError(f"initializer: {exc}") from None
        weight = WeightData(header)
        if header.data_location == TensorProto.EXTERNAL:
            had_external = True
            weight.array, file, offset = _external_view(header, path.parent, maps)
            if weight.array.size:
                weight.source, weight._mapped = (file, offset), weight.array
            del header.external_data[:]
            header.data_location = TensorProto.DEFAULT
        elif raw is not None and np_dtype(header.data_type) is None:
            weight.opaque = np.frombuffer(buf, dtype=np.uint8, count=raw[1], offset=raw[0])
            weight.source, weight._mapped = (str(path), raw[0]), weight.opaque
        elif raw is not None:
            weight.array = _raw_view(buf, raw[0], raw[1], header, f"in '{path.name}'")
            weight.source, weight._mapped = (str(path), raw[0]), weight.array
        elif header.data_type == TensorProto.STRING or np_dtype(header.data_type) is None:
            pass  # the header keeps its typed fields; nothing to map
        else:
            try:
                weight.array = numpy_helper.to_array(header)
            except Exception as exc:
                raise InvalidModelError(f"initializer '{header.name}' cannot be read: {exc}") from None
            clear_typed_data(header)
        weights.append(weight)
    return LoadedModel(proto, weights, had_external, [buf, *maps.values()])


def clear_typed_data(header: TensorProto) -> None:
    for typed in ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data"):
        header.ClearField(typed)
