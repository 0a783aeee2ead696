"""Output paths: a symlink where onnxprune writes is replaced, never followed; reports never land on a
model file the command reads or writes; planted temporary files are never opened."""

from __future__ import annotations

import onnx
import pytest
from folders import listing
from test_bad_inputs import run_cli
from tiny import tiny_model

VICTIM = b"precious: must survive every command\n"


@pytest.fixture
def folder(tmp_path):
    """in.onnx (inline), ext.onnx (+ ext.onnx.data), and a victim file outside the working folder."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "in.onnx").write_bytes(tiny_model().SerializeToString())
    onnx.save(tiny_model(), str(work / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    (tmp_path / "victim.txt").write_bytes(VICTIM)
    return work


def _victim(folder):
    return (folder.parent / "victim.txt").read_bytes()


SYMLINKED_OUTPUTS = {
    "model": (["in.onnx", "out.onnx", "--structured", "0.4", "--no-validate"], ["out.onnx"]),
    "external-data": (["in.onnx", "out.onnx", "--structured", "0.4", "--no-validate", "--external-data"],
                      ["out.onnx", "out.onnx.data"]),
    "report": (["in.onnx", "out.onnx", "--no-validate", "--report", "r.json"], ["r.json"]),
    "html": (["in.onnx", "out.onnx", "--no-validate", "--html", "r.html"], ["r.html"]),
    "validate-json": (["validate", "in.onnx", "ext.onnx", "--json", "v.json"], ["v.json"]),
    "check-sparsity-json": (["check-sparsity", "in.onnx", "--json", "s.json"], ["s.json"]),
}


@pytest.mark.parametrize("case", list(SYMLINKED_OUTPUTS))
def test_symlinked_output_is_replaced_not_followed(folder, case, monkeypatch, capsys):
    args, links = SYMLINKED_OUTPUTS[case]
    for name in links:
        (folder / name).symlink_to(folder.parent / "victim.txt")
    code, _, err = run_cli(args, folder, monkeypatch, capsys)
    assert code == 0, err
    assert _victim(folder) == VICTIM
    for name in links:
        assert not (folder / name).is_symlink() and (folder / name).stat().st_size > 0


@pytest.mark.parametrize("name", ["r.json", "r.html"])
def test_planted_temporary_name_is_never_opened(folder, name, monkeypatch, capsys):
    """Earlier versions wrote reports through `.NAME.tmp`; a link planted there must not be followed."""
    (folder / f".{name}.tmp").symlink_to(folder.parent / "victim.txt")
    option = "--report" if name.endswith(".json") else "--html"
    code, _, err = run_cli(["in.onnx", "out.onnx", "--no-validate", option, name], folder, monkeypatch, capsys)
    assert code == 0, err
    assert _victim(folder) == VICTIM
    assert (folder / name).is_file() and not (folder / name).is_symlink()


CLOBBERING = {
    "report-onto-input": (["in.onnx", "out.onnx", "--report", "in.onnx"], "would overwrite the model file"),
    "html-onto-input": (["in.onnx", "out.onnx", "--html", "./in.onnx"], "would overwrite the model file"),
    "report-onto-output": (["in.onnx", "out.onnx", "--report", "out.onnx"], "would overwrite the model file"),
    "report-onto-output-data": (["in.onnx", "out.onnx", "--external-data", "--report", "out.onnx.data"],
                                "would overwrite the model file"),
    "report-onto-input-data": (["ext.onnx", "out.onnx", "--report", "ext.onnx.data"],
                               "would overwrite the model file"),
    "report-and-html-same": (["in.onnx", "out.onnx", "--report", "r.out", "--html", "r.out"], "same file"),
    "validate-json-onto-model": (["validate", "in.onnx", "ext.onnx", "--json", "ext.onnx.data"],
                                 "would overwrite the model file"),
    "check-sparsity-json-onto-model": (["check-sparsity", "in.onnx", "--json", "in.onnx"],
                                       "would overwrite the model file"),
    "bench-json-onto-model": (["bench", "in.onnx", "ext.onnx", "--json", "ext.onnx", "--no-memory"],
                              "would overwrite the model file"),
    "sensitivity-json-onto-model": (["sensitivity", "in.onnx", "--json", "in.onnx"], "would overwrite the model file"),
}


@pytest.mark.parametrize("case", list(CLOBBERING))
def test_report_never_overwrites_a_model(folder, case, monkeypatch, capsys):
    args, message = CLOBBERING[case]
    before = listing(folder)
    code, _, err = run_cli(args, folder, monkeypatch, capsys)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert listing(folder) == before
