"""Every command, every mode, every broken or hostile file: one line on stderr naming the problem,
exit status 2, no traceback, and the folder exactly as it was (no output, no temporary file).

The CLI runs in this process (`onnxprune.cli.run` with patched argv) so the corpus x commands grid
stays fast; tests/test_cli.py checks the same contract through real subprocesses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from bad_models import CORPUS
from folders import listing
from tiny import tiny_model

from onnxprune.cli import app as cli

# {bad} is the broken model, {good} a valid one beside it.
COMMANDS = {
    "structured": ["{bad}", "out.onnx", "--structured", "0.4"],
    "heads": ["{bad}", "out.onnx", "--heads", "0.5"],
    "drop-layers": ["{bad}", "out.onnx", "--drop-layers", "1"],
    "calibrated": ["{bad}", "out.onnx", "--structured", "0.3", "--criterion", "wanda", "--compensate"],
    "target-flops": ["{bad}", "out.onnx", "--target-flops", "0.7", "--report", "r.json", "--html", "r.html"],
    "sparse": ["{bad}", "out.onnx", "--sparse", "2:4", "--external-data"],
    "inspect": ["inspect", "{bad}"],
    "check-sparsity": ["check-sparsity", "{bad}", "--json", "s.json"],
    "sensitivity": ["sensitivity", "{bad}", "--json", "s.json"],
    "validate-ref": ["validate", "{bad}", "{good}", "--json", "v.json"],
    "validate-pruned": ["validate", "{good}", "{bad}"],
    "bench": ["bench", "{good}", "{bad}", "--runs", "1", "--warmup", "0", "--no-memory", "--json", "b.json"],
}


def run_cli(args: list[str], folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[
        int, str, str]:
    monkeypatch.chdir(folder)
    monkeypatch.delenv("ONNXPRUNE_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["onnxprune", *args])
    try:
        cli.run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, str]]:
    """Each broken model in its own folder (its own external data, links...), with a valid model beside it."""
    built = {}
    for kind, build in CORPUS.items():
        folder = tmp_path_factory.mktemp(kind)
        name, message = build(folder)
        (folder / "good.onnx").write_bytes(tiny_model().SerializeToString())
        built[kind] = (folder, name, message)
    return built


# Commands that only run models accept any opset ONNX Runtime runs; only rewriting needs 11 to 23.
RUNS_OLD_OPSETS = {"validate-ref", "validate-pruned", "bench"}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", list(CORPUS))
def test_bad_model_is_one_line_exit_2_and_writes_nothing(corpus, kind: str, command: str, monkeypatch, capsys):
    folder, name, message = corpus[kind]
    if kind == "old-opset" and command in RUNS_OLD_OPSETS:
        pytest.skip("an opset-9 model is valid input here: test_old_opset_runs_in_validate_and_bench")
    args = [arg.format(bad=name, good="good.onnx") for arg in COMMANDS[command]]
    outside = folder.parent / f"{folder.name}-outside"
    before, before_outside = listing(folder), listing(outside) if outside.exists() else None
    code, out, err = run_cli(args, folder, monkeypatch, capsys)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("onnxprune: error: "), (code, err)
    assert message in lines[0], lines[0]
    assert "internal error" not in lines[0]
    assert listing(folder) == before
    if before_outside is not None:
        assert listing(outside) == before_outside


def test_corpus_really_is_broken(corpus):
    """Guard against a builder that silently produces a loadable model (the grid would then test nothing):
    every corpus file is refused by onnx's own checker or parser too, except where onnx does not look
    (external-data locations, which only the loader checks) and the opsets onnx accepts but onnxprune
    does not rewrite."""
    import onnx

    lenient = {"old-opset", "future-opset", "external-dotdot", "external-absolute", "external-symlink",
               "external-symlinked-folder"}
    for kind, (folder, name, _) in corpus.items():
        if kind in lenient:
            continue
        with pytest.raises(Exception):  # noqa: B017 - onnx raises many types
            onnx.checker.check_model(onnx.load(str(folder / name)), full_check=True)


@pytest.mark.parametrize("command", sorted(RUNS_OLD_OPSETS))
def test_old_opset_runs_in_validate_and_bench(corpus, command: str, monkeypatch, capsys):
    folder, name, _ = corpus["old-opset"]
    args = [arg.format(bad=name, good="good.onnx") for arg in COMMANDS[command]]
    code, _, err = run_cli(args, folder, monkeypatch, capsys)
    assert code == 0, err  # the same weights at opset 9 and 17: validate passes, bench times both
    for produced in ("v.json", "b.json"):
        (folder / produced).unlink(missing_ok=True)
