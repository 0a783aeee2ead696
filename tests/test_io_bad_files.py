"""Broken, truncated, mutated and hostile model files: every one is an onnxprune error, never a crash."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from io_files import (
    save_external,
)
from onnx import TensorProto, helper, numpy_helper
from tiny import tiny_model

from onnxprune import InvalidModelError, Model, OnnxPruneError

# ---------------------------------------------------------------- bad inputs


def _real_model_bytes() -> bytes:
    return tiny_model().SerializeToString()


def _model_without_opset() -> bytes:
    proto = tiny_model()
    del proto.opset_import[:]
    return proto.SerializeToString()


def _wrong_raw_length() -> bytes:
    proto = tiny_model()
    proto.graph.initializer[0].raw_data = proto.graph.initializer[0].raw_data[:-4]
    return proto.SerializeToString()


BAD_FILES = {
    "empty": (lambda: b"", "empty"),
    "text": (lambda: b"hello, this is not an ONNX model\n", "not a valid ONNX model"),
    "random-bytes": (lambda: np.random.default_rng(0).bytes(4096), "not a valid ONNX model"),
    "zeros": (lambda: bytes(1000), "not a valid ONNX model"),
    "truncated": (lambda: _real_model_bytes()[: len(_real_model_bytes()) // 2], "not a valid ONNX model"),
    "one-byte-short": (lambda: _real_model_bytes()[:-1], "not a valid ONNX model"),
    "tensor-proto": (lambda: numpy_helper.from_array(np.arange(6, dtype=np.float32), "t").SerializeToString(),
                     "not a valid ONNX model"),
    "int64-tensor-proto": (lambda: helper.make_tensor("t", TensorProto.INT64, [3], [1, 2, 3]).SerializeToString(),
                           "not a valid ONNX model"),
    "graph-proto": (lambda: tiny_model().graph.SerializeToString(), "not a valid ONNX model"),
    "node-proto": (lambda: tiny_model().graph.node[0].SerializeToString(), "not a valid ONNX model"),
    "model-without-opset": (_model_without_opset, "opset"),
    "initializer-length-wrong": (_wrong_raw_length, "w1"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_is_invalid_model_error(tmp_path: Path, kind: str) -> None:
    make, message = BAD_FILES[kind]
    path = tmp_path / "bad.onnx"
    path.write_bytes(make())
    with pytest.raises(InvalidModelError, match=message) as info:
        Model.load(path)
    assert isinstance(info.value, OnnxPruneError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_are_invalid_model_error(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path = tmp_path / "bad.onnx"
    path.write_bytes(rng.bytes(int(rng.integers(1, 3000))))
    with pytest.raises(InvalidModelError):
        Model.load(path)


def test_every_truncation_is_invalid_model_error(tmp_path: Path) -> None:
    data = _real_model_bytes()
    path = tmp_path / "bad.onnx"
    for length in range(0, len(data), 7):
        path.write_bytes(data[:length])
        with pytest.raises(InvalidModelError):
            Model.load(path)


def test_missing_path_and_folder_are_invalid_model_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="does not exist"):
        Model.load(tmp_path / "nothere.onnx")
    with pytest.raises(InvalidModelError, match="not a file"):
        Model.load(tmp_path)


def _rewrite_external(path: Path, key: str, value: str | None, which: int | None = 0) -> None:
    """Set (or with value None, drop) one external_data entry of initializer `which` (None: all)."""
    proto = onnx.load(str(path), load_external_data=False)
    tensors = list(proto.graph.initializer)
    for tensor in tensors if which is None else [tensors[which]]:
        entries = [(e.key, e.value) for e in tensor.external_data if e.key != key]
        if value is not None:
            entries.append((key, value))
        del tensor.external_data[:]
        for k, v in entries:
            entry = tensor.external_data.add()
            entry.key, entry.value = k, v
    onnx.save(proto, str(path))


def _bad_external(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    source = save_external(folder / "in.onnx")
    data = folder / "in.onnx.data"
    outside = tmp_path / "outside.data"
    shutil.copy(data, outside)  # the escaping locations point at a real file with the right bytes
    if case == "missing-file":
        data.unlink()
    elif case == "missing-location":
        _rewrite_external(source, "location", "other.data")
    elif case == "truncated-file":
        data.write_bytes(data.read_bytes()[:100])
    elif case == "length-short":
        _rewrite_external(source, "length", "4")
    elif case == "length-long":
        _rewrite_external(source, "length", str(10**6))
    elif case == "offset-past-end":
        _rewrite_external(source, "offset", str(10**6))
    elif case == "offset-not-a-number":
        _rewrite_external(source, "offset", "12abc")
    elif case == "empty-location":
        _rewrite_external(source, "location", "")
    elif case == "dotdot":
        _rewrite_external(source, "location", "../outside.data", which=None)
    elif case == "absolute":
        _rewrite_external(source, "location", str(outside), which=None)
    elif case == "absolute-inside":
        _rewrite_external(source, "location", str(data.resolve()), which=None)
    elif case == "symlink-outside":
        (folder / "link.data").symlink_to(outside)
        _rewrite_external(source, "location", "link.data", which=None)
    elif case == "location-is-folder":
        (folder / "sub").mkdir()
        _rewrite_external(source, "location", "sub")
    else:
        raise AssertionError(case)
    return source


EXTERNAL_CASES = {
    "missing-file": "not found",
    "missing-location": "not found",
    "truncated-file": "does not match",
    "length-short": "does not match",
    "length-long": "does not match",
    "offset-past-end": "does not match",
    "offset-not-a-number": "12abc",
    "empty-location": "location",
    "dotdot": "outside the model's folder",
    "absolute": "outside the model's folder",
    "absolute-inside": "outside the model's folder",
    "symlink-outside": "outside the model's folder",
    "location-is-folder": "not found",
}


@pytest.mark.parametrize("case", list(EXTERNAL_CASES))
def test_bad_external_data_is_invalid_model_error(tmp_path: Path, case: str) -> None:
    source = _bad_external(tmp_path, case)
    with pytest.raises(InvalidModelError, match=EXTERNAL_CASES[case]) as info:
        Model.load(source)
    assert "\n" not in str(info.value)


def test_negative_external_offset_is_invalid_model_error(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    source = save_external(folder / "in.onnx")
    _rewrite_external(source, "offset", "-4")
    with pytest.raises(InvalidModelError, match="offset"):
        Model.load(source)


def test_non_utf8_external_location_is_invalid_model_error(tmp_path: Path) -> None:
    source = save_external(tmp_path / "in.onnx", location="w.data")
    # Same length, so the protobuf stays well formed: only the string is not UTF-8 any more.
    source.write_bytes(source.read_bytes().replace(b"w.data", b"\xff.data"))
    (tmp_path / "w.data").rename(tmp_path / "x.data")
    with pytest.raises(InvalidModelError):
        Model.load(source)


def test_non_utf8_constant_name_is_handled(tmp_path: Path) -> None:
    path = tmp_path / "in.onnx"
    path.write_bytes(tiny_model(constants=True).SerializeToString().replace(b"bn_scale", b"\xffn_scale"))
    try:
        Model.load(path)
    except InvalidModelError:
        pass


def test_constant_with_wrong_dims_is_invalid_model_error(tmp_path: Path) -> None:
    proto = tiny_model(constants=True)
    constant = next(node for node in proto.graph.node if node.output[0] == "b1")
    constant.attribute[0].t.dims[:] = [3]  # raw_data still holds 8 floats
    path = tmp_path / "in.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(InvalidModelError, match="b1"):
        Model.load(path)


def _sparse_model() -> onnx.ModelProto:
    values = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "s")
    indices = numpy_helper.from_array(np.array([0, 3], np.int64), "s_indices")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "s"], ["y"], name="add")], "sparse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        sparse_initializer=[helper.make_sparse_tensor(values, indices, [4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_sparse_initializer_model_loads(tmp_path: Path) -> None:
    path = tmp_path / "sparse.onnx"
    onnx.save(_sparse_model(), str(path))
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.zeros(4, np.float32)})[0]
    np.testing.assert_array_equal(expected, [1, 0, 0, 2])
    try:
        Model.load(path)
    except OnnxPruneError:  # refusing politely would be acceptable too
        pass


def _mutations(data: bytes, seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            mutated[int(rng.integers(len(mutated)))] = int(rng.integers(256))
        yield bytes(mutated)


def test_mutated_files_raise_only_onnxprune_errors(tmp_path: Path) -> None:
    """Random byte flips in a structure-heavy file: loading either works or raises an OnnxPruneError."""
    external = save_external(tmp_path / "ext.onnx")
    constants = tiny_model(constants=True).SerializeToString()
    leaks: dict[str, int] = {}
    path = tmp_path / "f.onnx"
    for seed, data in ((0, external.read_bytes()), (1, constants)):
        for mutated in _mutations(data, seed, 300):
            path.write_bytes(mutated)
            try:
                Model.load(path)
            except OnnxPruneError:
                pass
            except Exception as exc:  # collecting every leak is the point
                key = f"{type(exc).__name__}: {str(exc)[:60]}"
                leaks[key] = leaks.get(key, 0) + 1
    assert not leaks, leaks
