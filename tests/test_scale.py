"""Scale: external-data models pruned without holding the model twice (the >2 GB case, made small).

The synthetic stack of bench/synthetic.py is streamed to disk with its weights in a .data file, as
models over 2 GB must be; the bench (bench/prune_time.py --gb 2.2) measures the real size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxprune
from bench.synthetic import make_stack
from onnxprune import api as api_module
from onnxprune.check import validate
from onnxprune.io import spill
from onnxprune.io.model import Model
from onnxprune.io.saving import save_model
from tests.oracle import max_relative_error, zero_channels

_REPO = Path(__file__).resolve().parent.parent


def _size(path: Path) -> int:
    data = Path(f"{path}.data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    """About 100 MB of float32 weights in stack.onnx.data (16 convs 512 wide, 2 matmuls 2048 wide)."""
    path = tmp_path_factory.mktemp("scale") / "stack.onnx"
    make_stack(path, 100_000_000, seed=1, external_data=True, conv_share=0.8)
    return path


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scale_small") / "small.onnx"
    make_stack(path, 6_000_000, seed=2, channels=64, hidden=256, external_data=True)
    return path


def _run(path: Path, batch: int = 1) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
    shape = [batch if not isinstance(d, int) else d for d in spec.shape]
    feed = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return session.run(None, {spec.name: feed})[0]


_CHILD = """
import json, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
from onnxprune import cli
import onnx, onnxruntime  # what the CLI imports anyway, so the baseline is the interpreter's
baseline = peak()
sys.argv = ["onnxprune", *sys.argv[1:]]
try:
    cli.run()
except SystemExit as exit:
    assert not exit.code, exit.code
print("RESULT " + json.dumps({"baseline": baseline, "peak": peak()}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_cli_prunes_external_data_model_within_twice_its_size(stack: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned.onnx"
    done = subprocess.run([sys.executable, "-c", _CHILD, str(stack), str(out), "--structured", "0.4",
                           "--no-validate"], cwd=_REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    memory = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    model_size = _size(stack)
    # The memory of the work itself: the interpreter and libraries are ~60-250 MB whatever the model.
    assert memory["peak"] - memory["baseline"] < 2 * model_size, (memory, model_size)

    assert Path(f"{out}.data").stat().st_size > 0.25 * Path(f"{stack}.data").stat().st_size
    header = onnx.load(str(out), load_external_data=False)
    assert all(onnx.external_data_helper.uses_external_data(t) for t in header.graph.initializer
               if len(t.dims) > 1)
    onnx.checker.check_model(str(out), full_check=True)
    output = _run(out, batch=2)
    assert output.shape == (2, 10) and np.isfinite(output).all()


def _prune_capturing_spill(source: Path, target: Path, monkeypatch, budget: int) -> int:
    """Prune with `budget` bytes of changed weights held in memory; returns the bytes spilled."""
    monkeypatch.setattr(spill, "DEFAULT_BUDGET", budget)
    seen = {}
    original_save = api_module.save_model

    def save(model, *args, **kwargs):
        seen["spilled"] = model.held.spilled_bytes
        assert model.held.held_bytes <= budget
        return original_save(model, *args, **kwargs)

    monkeypatch.setattr(api_module, "save_model", save)
    onnxprune.prune(source, target, onnxprune.PruneOptions(structured=0.4, validate=False))
    monkeypatch.undo()
    return seen["spilled"]


def test_spilled_weights_save_byte_identical(stack: Path, tmp_path: Path, monkeypatch) -> None:
    held, spilled = tmp_path / "held" / "out.onnx", tmp_path / "spilled" / "out.onnx"
    held.parent.mkdir()
    spilled.parent.mkdir()
    assert _prune_capturing_spill(stack, held, monkeypatch, budget=2**40) == 0
    spilled_bytes = _prune_capturing_spill(stack, spilled, monkeypatch, budget=0)
    # Nearly every changed weight went to disk (those under 1 MiB stay: biases).
    assert spilled_bytes > 0.9 * (Path(f"{held}.data").stat().st_size)
    assert held.read_bytes() == spilled.read_bytes()
    assert Path(f"{held}.data").read_bytes() == Path(f"{spilled}.data").read_bytes()


def test_zero_oracle_and_fp16(small_stack: Path, tmp_path: Path, monkeypatch) -> None:
    """Spilled or not, the pruned model computes what the original does with those channels zeroed."""
    monkeypatch.setattr(spill, "MIN_SPILL_BYTES", 0)
    monkeypatch.setattr(spill, "DEFAULT_BUDGET", 0)
    out = tmp_path / "pruned.onnx"
    report = onnxprune.prune(small_stack, out, onnxprune.PruneOptions(structured=0.4, validate=False))
    plan = {space["id"]: np.array(space["removed"], np.int64) for space in report["spaces"] if space["removed"]}
    assert plan
    zeroed = Model.load(small_stack)
    zero_channels(zeroed, plan)
    reference = tmp_path / "zeroed.onnx"
    save_model(zeroed, reference)
    assert max_relative_error({"y": _run(reference, 3)}, {"y": _run(out, 3)}) < 1e-4

    half = tmp_path / "half.onnx"
    make_stack(half, 3_000_000, seed=3, channels=64, hidden=256, external_data=True, dtype="float16")
    onnxprune.prune(half, tmp_path / "half_pruned.onnx", onnxprune.PruneOptions(structured=0.4, validate=False))
    pruned = onnx.load(str(tmp_path / "half_pruned.onnx"))
    assert {t.data_type for t in pruned.graph.initializer} == {onnx.TensorProto.FLOAT16}
    output = _run(tmp_path / "half_pruned.onnx", 2)
    assert output.dtype == np.float16 and output.shape == (2, 10) and np.isfinite(output).all()


def test_large_models_are_validated_one_session_at_a_time(small_stack: Path, tmp_path: Path, monkeypatch) -> None:
    options = onnxprune.PruneOptions(structured=0.4, latency_runs=2)
    together = onnxprune.prune(small_stack, tmp_path / "a.onnx", options)["validation"]
    monkeypatch.setattr(validate, "INTERLEAVE_MAX_BYTES", 0)
    created = []
    original = validate.runtime.create_session

    def create_session(path, *args, **kwargs):
        # One session alive at a time: the previous one is gone when the next is made.
        assert all(ref() is None for ref in created)
        session = original(path, *args, **kwargs)
        import weakref

        created.append(weakref.ref(session))
        return session

    monkeypatch.setattr(validate.runtime, "create_session", create_session)
    apart = onnxprune.prune(small_stack, tmp_path / "b.onnx", options)["validation"]
    assert len(created) == 2
    assert (together["latency_mode"], apart["latency_mode"]) == ("interleaved", "sequential")
    assert [o["max_abs"] for o in together["outputs"]] == [o["max_abs"] for o in apart["outputs"]]
    assert set(apart["latency_ms"]) == {"original", "pruned"}


def test_spill_file_round_trips(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(spill, "_WINDOW", 4096)  # several mappings, tensors across their edges
    store = spill.SpillFile(tmp_path)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((33, 70)).astype(np.float32), np.arange(5000, dtype=">i8").reshape(50, 100),
              rng.standard_normal(3).astype(np.float16)[::-1], np.zeros((0, 4), np.float32),
              np.asfortranarray(rng.standard_normal((40, 30)))]
    stored = [store.store(array) for array in arrays]
    for array, (view, offset) in zip(arrays, stored):
        assert view.shape == array.shape and np.array_equal(view, array) and not view.flags.writeable
        assert view.dtype.byteorder in "<=|" and offset % 64 == 0
    assert list(tmp_path.iterdir()) == []  # the file has no name
    assert spill.file_backed(stored[0][0]) and not spill.file_backed(arrays[0])
