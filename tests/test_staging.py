"""The output path only ever receives a model that passed onnx's full check and, unless --no-validate,
loaded and ran in ONNX Runtime: every failure on the way leaves the folder as it was."""

from __future__ import annotations

import onnx
import pytest
from folders import listing
from onnx import helper
from test_bad_inputs import run_cli
from tiny import tiny_model

from onnxprune import PruneOptions, ValidationError, prune
from onnxprune import api as api_module
from onnxprune.io.model import Model
from onnxprune.io.staging import check_graph


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "in.onnx").write_bytes(tiny_model().SerializeToString())
    onnx.save(tiny_model(), str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    return tmp_path


def _custom_op_model(path) -> None:
    proto = tiny_model()
    proto.graph.node[2].op_type, proto.graph.node[2].domain = "MyRelu", "com.example"
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(proto, str(path))


@pytest.mark.parametrize("source", ["in.onnx", "ext.onnx"])
def test_failed_validation_writes_nothing(folder, source, monkeypatch):
    def broken_runtime(*args, **kwargs):
        raise ValidationError("onnxruntime cannot run 'pruned': simulated")

    monkeypatch.setattr(api_module, "compare_models", broken_runtime)
    before = listing(folder)
    with pytest.raises(ValidationError, match="simulated"):
        prune(folder / source, folder / "out.onnx", PruneOptions(structured=0.4))
    assert listing(folder) == before


def test_validation_sees_the_staged_model_with_its_data(folder, monkeypatch):
    """ORT checks the staged copy, external data included, before anything is at the output path."""
    seen = {}
    real = api_module.compare_models

    def spy(original, pruned, *args, **kwargs):
        seen["exists"] = (folder / "out.onnx").exists() or (folder / "out.onnx.data").exists()
        seen["staged"] = pruned
        return real(original, pruned, *args, **kwargs)

    monkeypatch.setattr(api_module, "compare_models", spy)
    report = prune(folder / "ext.onnx", folder / "out.onnx", PruneOptions(structured=0.4))
    assert seen["exists"] is False and seen["staged"].name == "out.onnx" and seen["staged"].parent != folder
    assert report["output"] == str(folder / "out.onnx")
    onnx.checker.check_model(str(folder / "out.onnx"), full_check=True)
    assert (folder / "out.onnx.data").is_file()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # the staging folder is gone


def test_graph_failing_the_full_check_is_never_written(folder, monkeypatch):
    """A rewrite bug that leaves an inconsistent graph stops at the check, before any file is written."""
    from onnxprune.passes import remove_channels

    real_run = remove_channels.RemoveChannels.run

    def run_then_break(self, context):
        real_run(self, context)
        conv = next(node for node in context.model.graph.node if node.op_type == "Conv")
        conv.input[1] = "nobody_makes_this"

    monkeypatch.setattr(remove_channels.RemoveChannels, "run", run_then_break)
    before = listing(folder)
    with pytest.raises(ValidationError, match="full check"):
        prune(folder / "in.onnx", folder / "out.onnx", PruneOptions(structured=0.4, validate=False))
    assert listing(folder) == before


def test_check_graph_accepts_what_onnx_accepts(folder):
    check_graph(Model.load(folder / "in.onnx"))
    check_graph(Model.load(folder / "ext.onnx"))


def test_model_onnxruntime_cannot_load_needs_no_validate(folder, monkeypatch, capsys):
    """Custom ops (TensorRT plugins, contrib ops ORT lacks): validation cannot run, so prune says so
    and writes nothing; with --no-validate it prunes around them (the op's channels are pinned)."""
    _custom_op_model(folder / "custom.onnx")
    before = listing(folder)
    code, _, err = run_cli(["custom.onnx", "out.onnx", "--structured", "0.4"], folder, monkeypatch, capsys)
    last = err.splitlines()[-1]  # after the progress lines of the pruning itself
    assert code == 2 and last.startswith("onnxprune: error: ") and "--no-validate" in last, err
    assert listing(folder) == before
    code, _, err = run_cli(["custom.onnx", "out.onnx", "--structured", "0.4", "--no-validate"], folder, monkeypatch,
                           capsys)
    assert code == 0, err
    onnx.checker.check_model(str(folder / "out.onnx"), full_check=True)
    assert {n.op_type for n in onnx.load(str(folder / "out.onnx")).graph.node} >= {"MyRelu"}


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(folder, monkeypatch, capsys):
    import errno

    from onnxprune.io import protowrite

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(protowrite, "write_model", full)
    before = listing(folder)
    code, _, err = run_cli(["ext.onnx", "out.onnx", "--structured", "0.4", "-q"], folder, monkeypatch, capsys)
    assert code == 2 and err.splitlines() == ["onnxprune: error: cannot read or write: No space left on device"], err
    assert listing(folder) == before
