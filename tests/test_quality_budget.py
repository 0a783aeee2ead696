"""--max-error: the deepest cut whose error on held-out calibration data stays within the bound."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnxprune.passes.quality_budget import HeldOutCompensation, QualityBudget, split_calibration

import models
from onnxprune.api import PruneOptions, prune
from onnxprune.calib.data import CalibrationData
from onnxprune.check.fidelity import choose_layout, relative_error
from onnxprune.errors import InvalidOptionError
from onnxprune.io.model import Model
from onnxprune.pipeline import Context


def _calib(tmp_path, name: str = "resnet", samples: int = 16):
    path = tmp_path / "calib.npz"
    feed = models.example_inputs(name, batch=samples, seed=3)
    np.savez(path, **feed)
    return path, feed


def _error(original, pruned, feeds) -> float:
    runs = [[ort.InferenceSession(str(path)).run(None, feed) for feed in feeds] for path in (original, pruned)]
    return relative_error([choose_layout(np.asarray(v)) for v in runs[0][0]], runs[0], runs[1])


def test_the_bound_holds_on_held_out_data_and_a_looser_bound_cuts_deeper(zoo, tmp_path):
    source = zoo("resnet")
    calib, feed = _calib(tmp_path)
    removed = {}
    # models/ nets have random weights: their outputs move a lot for small cuts, hence bounds this loose.
    for bound in (0.6, 3.0):
        out = tmp_path / f"out_{bound}.onnx"
        report = prune(source, out, PruneOptions(max_error=bound, calib=str(calib), calib_batch=4, compensate=False,
                                                 round_to=1))
        budget = report["budget"]
        # Without compensation the zeroed estimate is the pruned model itself (the zero-oracle).
        assert budget["achieved_error"] == pytest.approx(budget["estimated_error"], rel=1e-4, abs=1e-9)
        assert budget["achieved_error"] <= bound
        assert budget["held_out"]["samples"] == 4 and budget["fit"]["samples"] == 12
        assert report["validation"]["inputs"].endswith("(held out)")
        held = [{name: value[12:] for name, value in feed.items()}]  # batches of 4: the last one is held out
        assert _error(source, out, held) == pytest.approx(budget["achieved_error"], rel=1e-3, abs=1e-9)
        assert any(t["passed"] is False for t in report["quality_search"]) or budget["flops_kept_planned"] <= 0.2
        removed[bound] = report["after"]["flops"]
    assert removed[3.0] < removed[0.6] < report["before"]["flops"]


def test_options_that_cannot_work_are_refused_before_any_work(tmp_path, zoo):
    calib, _ = _calib(tmp_path, samples=4)
    for options, words in ((PruneOptions(max_error=0.01), "give --calib"),
                           (PruneOptions(max_error=0.01, calib=str(calib), structured=0.3), "leave out --structured"),
                           (PruneOptions(max_error=0.01, calib=str(calib), target_flops=0.5), "only one of"),
                           (PruneOptions(max_error=0.0, calib=str(calib)), "must be > 0")):
        with pytest.raises(InvalidOptionError, match=words):
            options.check()
    # One batch cannot be split into fit and held-out parts.
    with pytest.raises(InvalidOptionError, match="smaller --calib-batch"):
        prune(zoo("resnet"), tmp_path / "o.onnx", PruneOptions(max_error=0.01, calib=str(calib), calib_batch=8))
    result = subprocess.run([sys.executable, "-m", "onnxprune", str(zoo("resnet")), str(tmp_path / "o.onnx"),
                             "--max-error", "0.01"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().endswith("give --calib")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_split_holds_out_every_fourth_batch_from_the_end():
    feeds = [{"x": np.full((1, 2), i, np.float32)} for i in range(9)]
    fit, held = split_calibration(CalibrationData(feeds, "d", 9))
    assert [int(f["x"][0, 0]) for f in held] == [0, 4, 8]
    assert [int(f["x"][0, 0]) for f in fit] == [1, 2, 3, 5, 6, 7]
    assert (fit.samples, held.samples) == (6, 3)


class _Scrambler:
    """A 'compensation' that ruins a kept weight: the held-out judge must undo it."""

    name = "scramble"

    def __init__(self, tensor: str):
        self.tensor = tensor

    def run(self, context: Context) -> None:
        weight = context.model.weight(self.tensor)
        context.model.set_weight(self.tensor, (weight * -3.0).astype(weight.dtype))


def test_a_refit_that_raises_the_held_out_error_is_undone(zoo, tmp_path):
    from onnxprune.passes import ActivationScores

    model = Model.load(zoo("resnet"))
    feed = models.example_inputs("resnet", batch=8, seed=1)
    batches = [{name: value[i:i + 2] for name, value in feed.items()} for i in range(0, 8, 2)]
    fit, held = split_calibration(CalibrationData(batches, "t", 8))
    context = Context(model)
    ActivationScores("wanda", fit).run(context)
    budget = QualityBudget(fit, held, 100.0, {"input": (2, 3, 64, 64)})  # any cut passes: tests the refit judge
    budget.run(context)
    assert context.plan
    tensor = next(m.tensor for s in context.channel_graph().prunable if s.id in context.plan
                  for m in s.weight_members)
    kept = model.weight(tensor)
    HeldOutCompensation(_Scrambler(tensor), budget).run(context)
    assert np.array_equal(model.weight(tensor), kept)
    record = context.report["compensation"]
    assert record["kept"] is False and record["held_out_error"]["refit"] > record["held_out_error"]["zeroed"]
    assert any("undone" in note for note in context.report["notes"])
