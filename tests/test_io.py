"""Model.load, save_model and the streaming protobuf reader/writer (onnxprune.io.protoio, protowrite).

Every model here is built with onnx.helper: Conv-BN-Relu-Conv, then GlobalAveragePool, Flatten, Gemm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from folders import listing
from io_files import (
    REFERENCE,
    assert_same_weights,
    check_full,
    external_files,
    initializers,
    run,
    save_external,
    save_inline,
)
from tiny import tiny_model, tiny_weights

import onnxprune
from onnxprune import Model, OnnxPruneError, PruneOptions, UnsupportedModelError
from onnxprune.io import protowrite
from onnxprune.io.saving import save_model

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
