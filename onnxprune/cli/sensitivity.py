"""`onnxprune sensitivity`: per-space sensitivity curves as JSON and, optionally, a plot."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import click

from ..api import PruneOptions, effective_criterion
from ..calib.data import load_calibration
from ..check.validate import validation_inputs
from ..errors import InvalidOptionError
from ..io.files import write_atomic
from ..io.model import Model
from ..pipeline import Context, run_pipeline
from .common import check_side_outputs, progress_log


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
            "error": "per output, the mean over its channels of ||y_pruned - y||^2 / ||y||^2 on the calibration "
                     "data, averaged over the outputs (scale-robust: see README, Validate)",
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


@click.command("sensitivity")
@click.argument("source", metavar="IN")
@click.option("--calib", metavar="DATA", help="Calibration inputs (.npz or a .py with load_data()).")
@click.option("--criterion", default=None, help="Score that picks the channels to drop at each ratio.")
@click.option("--shapes", multiple=True, metavar="NAME:DIMS", help="Shapes for symbolic dims.")
@click.option("--plot", "plot_path", metavar="PNG", help="Write the curves as a plot.")
@click.option("--json", "json_path", metavar="PATH", help="Write the curves as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def command(source, calib, criterion, shapes, plot_path, json_path, quiet) -> None:
    """Prune each channel space alone at several ratios and measure the output error."""
    from ..api import write_json
    from ..check.inputs import parse_shapes

    check_side_outputs({"--json": json_path, "--plot": plot_path}, [source])
    result = analyze(source, PruneOptions(criterion=criterion, calib=calib, shapes=parse_shapes(shapes)),
                     log=progress_log(quiet))
    for curve in result["curves"]:
        points = ", ".join(f"{r:.1f}:{e:.2g}" for r, e in zip(curve["ratios"], curve["errors"]))
        click.echo(f"[{curve['space']:>3}] {curve['label'][:60]:60} {points}")
    if json_path:
        write_json(result, json_path)
    if plot_path:
        plot(result, plot_path)
