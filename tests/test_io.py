"""Model.load, save_model and the streaming protobuf reader/writer (onnxprune.io.protoio, protowrite).

Every model here is built with onnx.helper: Conv-BN-Relu-Conv, then GlobalAveragePool, Flatten, Gemm.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from folders import listing
from onnx import TensorProto, helper, numpy_helper
from tiny import INPUT_SHAPE, tiny_model, tiny_weights

import onnxprune
from onnxprune import InvalidModelError, Model, OnnxPruneError, PruneOptions, UnsupportedModelError
from onnxprune.io import protowrite
from onnxprune.io.saving import save_model


def save_inline(path: Path, **kwargs) -> Path:
    onnx.save(tiny_model(**kwargs), str(path))
    return path


def save_external(path: Path, location: str | None = None, **kwargs) -> Path:
    onnx.save(tiny_model(**kwargs), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=location or f"{path.name}.data", size_threshold=0)
    return path


FEED = {"x": np.random.default_rng(42).standard_normal(INPUT_SHAPE).astype(np.float32)}


def run(model: Path | onnx.ModelProto) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, FEED)[0]


REFERENCE = run(tiny_model())


def initializers(path: Path) -> dict[str, np.ndarray]:
    """Initializer arrays as onnx itself reads them (external data included)."""
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def assert_same_weights(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, array in expected.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def check_full(path: Path) -> None:
    onnx.checker.check_model(str(path), full_check=True)


def external_files(path: Path) -> set[str]:
    """Locations of the external data a saved model refers to."""
    proto = onnx.load(str(path), load_external_data=False)
    return {
        entry.value
        for tensor in proto.graph.initializer
        if tensor.data_location == TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }


# ---------------------------------------------------------------- round trip


def test_round_trip_keeps_nodes_weights_and_outputs(tmp_path: Path) -> None:
    source = save_inline(tmp_path / "in.onnx")
    model = Model.load(source)
    assert not model.had_external_data
    out = save_model(model, tmp_path / "out.onnx")
    assert out == tmp_path / "out.onnx"

    original, saved = onnx.load(str(source)), onnx.load(str(out))
    assert list(saved.graph.node) == list(original.graph.node)
    assert list(saved.graph.input) == list(original.graph.input)
    assert list(saved.graph.output) == list(original.graph.output)
    assert list(saved.opset_import) == list(original.opset_import)
    assert saved.ir_version == original.ir_version
    assert_same_weights(initializers(out), initializers(source))
    assert not external_files(out)
    check_full(out)
    np.testing.assert_array_equal(run(out), run(source))


def test_save_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    model = Model.load(save_inline(tmp_path / "in.onnx"))
    first = save_model(model, tmp_path / "a.onnx").read_bytes()
    second = save_model(model, tmp_path / "a.onnx").read_bytes()
    assert first == second
    # Same bytes whatever the file name, and loading a saved model then saving it changes nothing.
    assert save_model(model, tmp_path / "b.onnx").read_bytes() == first
    assert save_model(Model.load(tmp_path / "a.onnx"), tmp_path / "c.onnx").read_bytes() == first


def test_external_save_is_deterministic(tmp_path: Path) -> None:
    model = Model.load(save_external(tmp_path / "in.onnx"))
    out = tmp_path / "out.onnx"
    data = tmp_path / "out.onnx.data"
    save_model(model, out)
    first = out.read_bytes(), data.read_bytes()
    save_model(model, out)
    assert (out.read_bytes(), data.read_bytes()) == first


def test_to_proto_matches_file(tmp_path: Path) -> None:
    model = Model.load(save_external(tmp_path / "in.onnx"))
    np.testing.assert_array_equal(run(model.to_proto()), REFERENCE)


# ---------------------------------------------------------------- external data


def test_external_data_model_loads_and_keeps_layout(tmp_path: Path) -> None:
    source = save_external(tmp_path / "in.onnx")
    model = Model.load(source)
    assert model.had_external_data
    out = save_model(model, tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx.data").is_file()
    assert external_files(out) == {"out.onnx.data"}
    check_full(out)
    assert_same_weights(initializers(out), tiny_weights())
    np.testing.assert_array_equal(run(out), REFERENCE)
    # The original's data file is still what it was.
    assert_same_weights(initializers(source), tiny_weights())


@pytest.mark.parametrize("source_layout", ["inline", "external"])
@pytest.mark.parametrize("external_data", [True, False])
def test_external_data_flag_forces_layout(tmp_path: Path, source_layout: str, external_data: bool) -> None:
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    save = save_external if source_layout == "external" else save_inline
    model = Model.load(save(source_dir / "in.onnx"))
    out = save_model(model, tmp_path / "out.onnx", external_data=external_data)
    data = tmp_path / "out.onnx.data"
    if external_data:
        assert data.is_file() and data.stat().st_size > 0
        assert external_files(out) == {"out.onnx.data"}
    else:
        assert not data.exists()
        assert not external_files(out)
    check_full(out)
    assert_same_weights(initializers(out), tiny_weights())
    np.testing.assert_array_equal(run(out), REFERENCE)


def test_external_data_in_subfolder_and_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    save_external(tmp_path / "m" / "model.onnx", location="weights.bin")
    monkeypatch.chdir(tmp_path / "m")
    model = Model.load("model.onnx")
    out = save_model(model, "copy.onnx")
    assert (tmp_path / "m" / "copy.onnx.data").is_file()
    check_full(tmp_path / "m" / out)
    np.testing.assert_array_equal(run(tmp_path / "m" / "copy.onnx"), REFERENCE)


def test_external_data_symlink_inside_folder_is_fine(tmp_path: Path) -> None:
    source = save_external(tmp_path / "in.onnx", location="real.data")
    proto = onnx.load(str(source), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "link.data"
    onnx.save(proto, str(source))
    (tmp_path / "link.data").symlink_to("real.data")
    out = save_model(Model.load(source), tmp_path / "out.onnx")
    np.testing.assert_array_equal(run(out), REFERENCE)


# ---------------------------------------------------------------- Constant weights


def test_constant_weights_are_lifted_to_initializers(tmp_path: Path) -> None:
    source = save_inline(tmp_path / "in.onnx", constants=True)
    model = Model.load(source)
    assert not [node for node in model.graph.node if node.op_type == "Constant"]
    assert set(tiny_weights()) <= set(model.weights)
    out = save_model(model, tmp_path / "out.onnx")
    saved = onnx.load(str(out))
    assert not [node for node in saved.graph.node if node.op_type == "Constant"]
    assert_same_weights(initializers(out), tiny_weights())
    check_full(out)
    np.testing.assert_array_equal(run(out), run(source))
    np.testing.assert_array_equal(run(out), REFERENCE)


# ---------------------------------------------------------------- opsets


@pytest.mark.parametrize("opset", range(11, 22))
def test_supported_opsets_round_trip(tmp_path: Path, opset: int) -> None:
    source = save_inline(tmp_path / "in.onnx", opset=opset)
    model = Model.load(source)
    assert model.opset == opset
    out = save_model(model, tmp_path / "out.onnx")
    check_full(out)
    assert onnx.load(str(out)).opset_import[0].version == opset
    np.testing.assert_array_equal(run(out), run(source))


@pytest.mark.parametrize("opset", [9, 10, 24])
def test_unsupported_opsets_are_refused(tmp_path: Path, opset: int) -> None:
    source = save_inline(tmp_path / "in.onnx", opset=opset)
    with pytest.raises(UnsupportedModelError, match=f"opset {opset}\\b"):
        Model.load(source)
    assert issubclass(UnsupportedModelError, OnnxPruneError)


def test_model_without_default_opset_is_refused(tmp_path: Path) -> None:
    proto = tiny_model()
    proto.opset_import[0].domain = "com.example"
    path = tmp_path / "in.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(OnnxPruneError, match="opset"):
        Model.load(path)


# ---------------------------------------------------------------- atomic save


class _Boom(Exception):
    pass


def _failing_writer(real, complete: bool):
    def write_model(proto, weights, out, *, external=None, **kwargs):
        if complete:  # everything written, the failure comes before the rename
            real(proto, weights, out, external=external, **kwargs)
        else:  # a few bytes of the model (and of the data file), then the disk "fills up"
            out.write(b"\x08\x07\x12\x04half")
            if external is not None:
                external[0].write(b"\0" * 100)
        raise _Boom("disk full")

    return write_model


@pytest.mark.parametrize("complete", [False, True], ids=["partial", "complete"])
@pytest.mark.parametrize("external_data", [False, True])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_failed_save_leaves_folder_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, complete: bool,
                                             external_data: bool, existing: bool) -> None:
    model = Model.load(save_inline(tmp_path / "in.onnx"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "model.onnx"
    if existing:
        target.write_bytes(b"previous model")
        (out_dir / "model.onnx.data").write_bytes(b"previous data")
    before = listing(tmp_path)
    monkeypatch.setattr(protowrite, "write_model", _failing_writer(protowrite.write_model, complete))
    with pytest.raises(_Boom):
        save_model(model, target, external_data=external_data)
    assert listing(tmp_path) == before  # no temp file, target and its data untouched


def test_save_replaces_symlink_not_its_target(tmp_path: Path) -> None:
    model = Model.load(save_inline(tmp_path / "in.onnx"))
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "victim.onnx").write_bytes(b"do not touch")
    (victims / "victim.data").write_bytes(b"do not touch either")
    target = tmp_path / "out.onnx"
    target.symlink_to(victims / "victim.onnx")
    (tmp_path / "out.onnx.data").symlink_to(victims / "victim.data")

    save_model(model, target, external_data=True)
    assert not target.is_symlink() and target.is_file()
    assert not (tmp_path / "out.onnx.data").is_symlink()
    assert (victims / "victim.onnx").read_bytes() == b"do not touch"
    assert (victims / "victim.data").read_bytes() == b"do not touch either"
    check_full(target)
    np.testing.assert_array_equal(run(target), REFERENCE)


def test_save_over_dangling_symlink(tmp_path: Path) -> None:
    model = Model.load(save_inline(tmp_path / "in.onnx"))
    target = tmp_path / "out.onnx"
    target.symlink_to(tmp_path / "nowhere" / "x.onnx")
    save_model(model, target)
    assert not target.is_symlink()
    assert not (tmp_path / "nowhere").exists()
    np.testing.assert_array_equal(run(target), REFERENCE)


def test_save_refuses_the_source_and_missing_folders(tmp_path: Path) -> None:
    source = save_inline(tmp_path / "in.onnx")
    model = Model.load(source)
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    with pytest.raises(OnnxPruneError, match="input model"):
        save_model(model, tmp_path / "sub" / ".." / "in.onnx")
    with pytest.raises(OnnxPruneError, match="does not exist"):
        save_model(model, tmp_path / "missing" / "out.onnx")
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["in.onnx", "sub"]


# ---------------------------------------------------------------- the input is never modified


def _snapshot(paths: list[Path]) -> list[tuple[bytes, int]]:
    return [(p.read_bytes(), p.stat().st_mtime_ns) for p in paths]


@pytest.mark.parametrize("layout", ["inline", "external"])
def test_prune_never_modifies_the_input(tmp_path: Path, layout: str) -> None:
    if layout == "inline":
        source = save_inline(tmp_path / "in.onnx")
        files = [source]
    else:
        source = save_external(tmp_path / "in.onnx")
        files = [source, tmp_path / "in.onnx.data"]
    before = _snapshot(files)
    onnxprune.prune(source, tmp_path / "out.onnx", PruneOptions(structured=0.4, latency_runs=2))
    assert _snapshot(files) == before


def test_prune_does_not_overwrite_the_inputs_data_file(tmp_path: Path) -> None:
    # a.onnx keeps its weights in b.onnx.data (e.g. a renamed copy of b.onnx); writing b.onnx must not
    # clobber them. Refusing (an OnnxPruneError) or writing elsewhere would both be fine.
    source = save_external(tmp_path / "a.onnx", location="b.onnx.data")
    data = tmp_path / "b.onnx.data"
    before = data.read_bytes()
    try:
        onnxprune.prune(source, tmp_path / "b.onnx", PruneOptions(structured=0.4, validate=False))
    except OnnxPruneError:
        pass
    assert data.read_bytes() == before
    np.testing.assert_array_equal(run(source), REFERENCE)


def test_prune_refuses_output_onto_the_inputs_data_file(tmp_path: Path) -> None:
    source = save_external(tmp_path / "in.onnx")
    data = tmp_path / "in.onnx.data"
    before = data.read_bytes()
    with pytest.raises(OnnxPruneError):
        onnxprune.prune(source, data, PruneOptions(structured=0.4, validate=False))
    assert data.read_bytes() == before


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


# ---------------------------------------------------------------- prune over external data


def test_prune_external_data_model(tmp_path: Path) -> None:
    source = save_external(tmp_path / "in.onnx")
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(source, out, PruneOptions(structured=0.4, latency_runs=2))
    assert (tmp_path / "out.onnx.data").is_file()
    assert external_files(out) == {"out.onnx.data"}
    check_full(out)
    result = run(out)
    assert result.shape == REFERENCE.shape and np.isfinite(result).all()
    assert report["after"]["weight_bytes"] <= report["before"]["weight_bytes"]
    assert [o["ok"] for o in report["validation"]["outputs"]] == [True]
    # Saved output loads again and round-trips.
    again = save_model(Model.load(out), tmp_path / "again.onnx", external_data=False)
    np.testing.assert_array_equal(run(again), result)


@pytest.mark.parametrize("external_data", [True, False])
def test_prune_external_data_option(tmp_path: Path, external_data: bool) -> None:
    source = save_inline(tmp_path / "in.onnx")
    out = tmp_path / "out.onnx"
    onnxprune.prune(source, out, PruneOptions(structured=0.4, validate=False, external_data=external_data))
    assert (tmp_path / "out.onnx.data").exists() == external_data
    assert bool(external_files(out)) == external_data
    check_full(out)
    assert run(out).shape == REFERENCE.shape
