"""`onnxprune check-sparsity IN`: which weights are N:M sparse, which are eligible but not, and why."""

from __future__ import annotations

import sys

import click

from .common import check_side_outputs


@click.command("check-sparsity")
@click.argument("source", metavar="IN")
@click.option("--pattern", default="2:4", show_default=True, metavar="N:M", help="Pattern to check.")
@click.option("--require", metavar="N:M", help="Exit 1 unless every eligible weight follows this pattern.")
@click.option("--json", "json_path", metavar="PATH", help="Write the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the verdict of --require.")
def command(source, pattern, require, json_path, quiet) -> None:
    """Check every Conv/MatMul/Gemm weight against TensorRT's sparsity rule (as Polygraphy's
    `inspect sparsity` does): eligible or not and why, pattern followed or not."""
    from onnxprune.api import write_json
    from onnxprune.errors import InvalidOptionError
    from onnxprune.sparsity.check import check_model, table
    from onnxprune.sparsity.pattern import Pattern

    from ..io.model import Model

    wanted = Pattern.parse(require or pattern)
    if not wanted.structured:
        raise InvalidOptionError(f"--{'require' if require else 'pattern'} takes N:M (2:4), got '{wanted}'")
    check_side_outputs({"--json": json_path}, [source])
    result = check_model(Model.load(source), wanted)
    if json_path:
        write_json(result, json_path)
    if not quiet:
        click.echo(table(result))
    if require and (result["dense"] or not result["eligible"]):
        first = next((w["name"] for w in result["weights"] if w["eligible"] and not w["pattern_ok"]), None)
        detail = (f"{result['dense']} of {result['eligible']} eligible weights are not {wanted} (first: '{first}')"
                  if result["eligible"] else "no weight is eligible for sparse math")
        click.echo(f"onnxprune: check-sparsity failed: {detail}", err=True)
        sys.exit(1)
