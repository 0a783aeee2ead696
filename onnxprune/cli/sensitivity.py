"""`onnxprune sensitivity`: per-space sensitivity curves as JSON and, optionally, a plot."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

from ..api import PruneOptions, effective_criterion
from ..calib.data import load_calibration
from ..check.validate import validation_inputs
from ..errors import InvalidOptionError
from ..io.files import write_atomic
from ..io.model import Model
from ..pipeline import Context, run_pipeline


def analyze(source: str | os.PathLike, options: PruneOptions,
            log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    from onnxprune.passes import ACTIVATION_CRITERIA, CRITERIA, ActivationScores
    from onnxprune.passes.sensitivity import sensitivity_curves

    options.check()
    model = Model.load(source)
    specs, shapes, notes = validation_inputs(model, options.shapes, options.seed)
    calibration = load_calibration(options.calib, specs, shapes, seed=options.seed, batch=options.calib_batch,
                                   random_batches=options.samples, log=log)
    criterion = effective_criterion(options)
    context = Context(model, options={"exclude": options.exclude}, log=log)
    scores = ActivationScores(criterion, calibration) if criterion in ACTIVATION_CRITERIA else CRITERIA[criterion]()
    run_pipeline([scores], context)
    curves = sensitivity_curves(model, context.channel_graph(), context.scores, calibration, log=log)
    return {"input": str(source), "criterion": criterion, "calibration": calibration.source, "notes": notes,
            "error": "relative output error ||y_pruned - y||^2 / ||y||^2 over the calibration data",
            "curves": [curve.to_dict() for curve in curves]}


def plot(result: dict[str, Any], path: str | os.PathLike) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidOptionError("--plot needs matplotlib: pip install matplotlib") from None
    figure, axis = plt.subplots(figsize=(8, 5))
    for curve in result["curves"]:
        if curve["ratios"]:
            axis.plot(curve["ratios"], curve["errors"], marker="o", linewidth=1,
                      label=f"[{curve['space']}] {curve['label'][:40]}")
    axis.set_xlabel("fraction of the space removed")
    axis.set_ylabel("relative output error")
    axis.set_yscale("symlog", linthresh=1e-4)
    axis.set_title(f"sensitivity per channel space ({result['criterion']} scores)")
    if len(result["curves"]) <= 16:
        axis.legend(fontsize=6)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    write_atomic(path, buffer.getvalue())
