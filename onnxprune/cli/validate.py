"""`onnxprune validate REF PRUNED`: the pipeline gate. Exit 0 when every gate passes, 1 when one fails
(or, with --fail-on-warning, when a warning fired).

Usage and IO errors raise onnxprune.errors.* (exit 2 through `onnxprune.cli.run`). A failed gate
prints the per-output table on stdout and ONE line on stderr:
`onnxprune: validate failed: output 'logits': cosine 0.93 < --min-cosine 0.99`; each warning
(check/guards.py) is one more `onnxprune: warning: ...` line.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import check_side_outputs, progress_log

_PER_OUTPUT = "[OUTPUT:]VALUE"


@click.command("validate")
@click.argument("reference", metavar="REF")
@click.argument("pruned", metavar="PRUNED")
@click.option("--calib", metavar="DATA", help="Inputs from an .npz (input name -> [N, ...]) or a .py script with "
                                              "load_data() yielding feed dicts. Default: seeded random data.")
@click.option("--calib-batch", type=int, default=None,
              help="Samples per batch from an .npz (default: the model's fixed batch dim, else 8).")
@click.option("--samples", type=int, default=None,
              help="Random data: number of batches (default 4). --calib: read at most this many samples.")
@click.option("--seed", type=int, default=None, help="Seed of the random inputs (default 0).")
@click.option("--shapes", multiple=True, metavar="NAME:DIMS", help="Shapes for symbolic dims, e.g. x:1x3x224x224.")
@click.option("--val-range", "val_range", multiple=True, metavar="[NAME:]LO,HI",
              help="Draw random inputs uniformly from [LO, HI] (integers: both ends included); "
                   "a bare range is the default for every input. Default: standard normal floats, 0/1 integers.")
@click.option("--atol", multiple=True, metavar=_PER_OUTPUT,
              help="Absolute tolerance of the element check. An element fails only when it exceeds both --atol "
                   "and --rtol (the other defaults to 1e-5). The check runs when either is given, or with 1e-5 "
                   "for both when no gate at all is given. Repeat with OUTPUT: to set one output.")
@click.option("--rtol", multiple=True, metavar=_PER_OUTPUT,
              help="Relative tolerance (|ref - pruned| / |ref|) of the element check (see --atol).")
@click.option("--max-mean-abs", multiple=True, metavar=_PER_OUTPUT, help="Fail when the mean abs error is above.")
@click.option("--min-cosine", multiple=True, metavar=_PER_OUTPUT,
              help="Fail when the cosine similarity of the worst channel (or row) is below. The whole-output "
                   "cosine is shown beside it.")
@click.option("--min-snr", multiple=True, metavar="[OUTPUT:]DB",
              help="Fail when the signal-to-noise ratio (dB) of the worst channel (or row) is below.")
@click.option("--min-top1", multiple=True, metavar=_PER_OUTPUT,
              help="Fail when the top-1 agreement (fraction of rows) of a classifier-like output is below.")
@click.option("--min-topk", multiple=True, metavar=_PER_OUTPUT,
              help="Fail when the fraction of rows whose reference class is in the pruned top-k is below.")
@click.option("--top-k", type=int, default=5, show_default=True, help="k of --min-topk.")
@click.option("--classifier", multiple=True, metavar="OUTPUT",
              help="Compare this output's last axis as classes (default: every rank-2 [batch, classes] float output "
                   "and every output whose last axis holds probabilities).")
@click.option("--channel-axis", "channel_axis", multiple=True, metavar="[OUTPUT:]AXIS",
              help="Judge channels along this axis (default: the feature axis, see README).")
@click.option("--fail-on-warning", is_flag=True,
              help="Exit 1 when any warning fired (collapsed output, random inputs, demo model).")
@click.option("--json", "json_path", metavar="PATH", help="Write the full result as JSON (also when a gate fails).")
@click.option("--quiet", "-q", is_flag=True, help="Print no table; only the failure line and warnings, if any.")
def command(reference, pruned, calib, calib_batch, samples, seed, shapes, val_range, atol, rtol, max_mean_abs,
            min_cosine, min_snr, min_top1, min_topk, top_k, classifier, channel_axis, fail_on_warning, json_path,
            quiet) -> None:
    """Run REF and PRUNED on the same inputs and check every output against the gates.

    \b
    Exit status: 0 every gate passed (warnings allowed); 1 a gate failed (one
    line on stderr names the output and the gate), or a warning fired with
    --fail-on-warning; 2 usage or IO error (models that cannot be compared
    included).
    """
    from ..api import write_json
    from ..check.gates import Gates
    from ..check.guards import print_warnings
    from ..check.inputs import parse_shapes
    from ..check.validate import ValidateOptions, parse_channel_axes, parse_val_ranges, run_validation

    check_side_outputs({"--json": json_path}, [reference, pruned])
    gates = Gates.from_options(atol=atol, rtol=rtol, max_mean_abs=max_mean_abs, min_cosine=min_cosine,
                               min_snr=min_snr, min_top1=min_top1, min_topk=min_topk, top_k=top_k)
    options = ValidateOptions(gates=gates, calib=calib, calib_batch=calib_batch, samples=samples, seed=seed,
                              shapes=parse_shapes(shapes), val_ranges=parse_val_ranges(val_range),
                              classifiers=list(dict.fromkeys(classifier)),
                              channel_axes=parse_channel_axes(channel_axis))
    result = run_validation(reference, pruned, options, log=progress_log(quiet))
    if json_path:
        write_json(result, json_path)
    if not quiet:
        click.echo(format_table(result))
    if not result["passed"]:
        click.echo(f"onnxprune: validate failed: {result['failure']}", err=True)
    print_warnings(result["warnings"])
    if not result["passed"]:
        sys.exit(1)
    if fail_on_warning and result["warnings"]:
        click.echo(f"onnxprune: validate failed: {len(result['warnings'])} warning(s) with --fail-on-warning",
                   err=True)
        sys.exit(1)


_COLUMNS = ("output", "shape", "max abs", "mean abs", "cosine", "worst channel", "cos", "SNR dB", "top-1",
            "over tol", "result")


def format_table(result: dict[str, Any]) -> str:
    """A compact per-output table, then the inputs used and the overall verdict.

    `cosine` is the whole output's; `worst channel` says which channel (or row) has the lowest
    cosine, `cos` is that cosine (what --min-cosine judges) and `SNR dB` the lowest channel SNR."""
    from ..check.guards import worst_phrase

    rows = [_COLUMNS]
    for out in result["outputs"]:
        over = "-" if out["elem_violations"] is None else f"{out['elem_violations']}/{out['compared']}"
        rows.append((
            out["name"], "x".join(map(str, out["shape"] or [])) or "scalar", _g(out["max_abs"]), _g(out["mean_abs"]),
            _f(out["cosine"], 6), worst_phrase(out) or "-", _f(out.get("worst_channel_cosine"), 6),
            _f(out.get("min_channel_snr_db"), 1), _f(out["top1_agreement"], 3), over,
            "ok" if out["passed"] else "FAIL " + ",".join(g["gate"] for g in out["gates"] if not g["passed"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    inputs = result["inputs"]
    source = f"random (seed {inputs['seed']})" if inputs["source"] == "random" else inputs["source"]
    shapes = ", ".join(f"{name} {'x'.join(map(str, dims)) or 'scalar'}" for name, dims in inputs["shapes"].items())
    lines.append(f"inputs: {source}, {inputs['batches']} batch(es), {inputs['samples']} sample(s); {shapes}")
    elemwise = {"asked": "on", "default": "on (the default gate: no gate given)",
                "off": "off (a gate was given; pass --atol/--rtol to add it)"}.get(result["gates"].get("elemwise"))
    if elemwise:
        lines.append(f"element check (--atol/--rtol): {elemwise}")
    lines += [f"note: {note}" for note in inputs["notes"]]
    count = len(result["outputs"])
    lines.append(f"validate: {'passed' if result['passed'] else 'FAILED'} ({count} output(s))")
    return "\n".join(lines)


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
