"""Command line: `onnxprune IN OUT [options]` prunes; `onnxprune inspect IN` lists channel spaces."""

from __future__ import annotations

import json
import os
import sys

import click

from ..errors import OnnxPruneError
from .common import check_side_outputs
from .common import progress_log as _progress_log

_DEBUG_ENV = "ONNXPRUNE_DEBUG"


class DefaultToPrune(click.Group):
    """`onnxprune in.onnx out.onnx` means `onnxprune prune in.onnx out.onnx`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # No arguments at all is a usage error of `prune` (one line), not a page of help.
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = ["prune", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultToPrune, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnxprune")
def main() -> None:
    """Prune exported ONNX models: smaller, faster, still valid."""


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"onnxprune: error: {message}", err=True)
    sys.exit(code)


@main.command("prune")
@click.argument("source", metavar="IN")
@click.argument("target", metavar="OUT")
@click.option("--structured", type=float, default=0.0, show_default=True,
              help="Fraction of the channels of every prunable space to remove (0 <= r < 1).")
@click.option("--heads", type=float, default=0.0, show_default=True,
              help="Fraction of the attention heads (or KV groups, with GQA) of every attention to remove.")
@click.option("--drop-layers", type=float, default=0.0, show_default=True,
              help="Residual blocks to remove: a count (2) or a fraction of all blocks (0.25).")
@click.option("--criterion", default=None,
              help="Channel score: l1, l2, bn-scale (weights only) or wanda, fluctuation, obs, contribution "
                   "(with activations). Default: wanda with --calib, else l1. With --sparse: magnitude, wanda or "
                   "sparsegpt (default: sparsegpt with --calib, else magnitude).")
@click.option("--sparse", metavar="N:M|FRACTION",
              help="Zero weights of Conv/MatMul/Gemm in TensorRT's N:M pattern (2:4) or a fraction unstructured (0.5).")
@click.option("--sparse-min-params", type=int, default=0, show_default=True,
              help="With --sparse: leave weights with fewer parameters dense (too small to gain).")
@click.option("--calib", metavar="DATA", help="Calibration inputs: an .npz (input name -> [N, ...]) or a .py "
                                              "script with load_data() yielding feed dicts.")
@click.option("--calib-batch", type=int, default=8, show_default=True, help="Samples per batch from an .npz.")
@click.option("--target-flops", type=float, help="Keep this fraction of the FLOPs; per-space ratios from sensitivity.")
@click.option("--target-params", type=float, help="Keep this fraction of the parameters.")
@click.option("--target-latency", type=float, help="Keep this fraction of the ORT latency measured here.")
@click.option("--compensate/--no-compensate", default=None,
              help="Refit kept weights and biases by least squares on calibration data (default: on with --calib).")
@click.option("--global", "global_ranking", is_flag=True,
              help="Rank channels of all spaces together (normalized scores) instead of the same ratio everywhere.")
@click.option("--round-to", type=int, default=1, show_default=True, help="Keep channel counts multiples of N.")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave spaces touching matching node names alone.")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Compare outputs and latency of both models in ONNX Runtime.")
@click.option("--shapes", multiple=True, metavar="NAME:DIMS", help="Shapes for symbolic dims, e.g. x:1x3x224x224.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random validation inputs.")
@click.option("--report", "report_path", metavar="PATH", help="Write the JSON report here.")
@click.option("--html", "html_path", metavar="PATH", help="Write the report as a self-contained HTML page with plots.")
@click.option("--external-data/--no-external-data", default=None,
              help="Store weights in OUT.data (default: as the input did, or when over 2 GB).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def prune_command(source, target, structured, heads, drop_layers, criterion, sparse, sparse_min_params, calib,
                  calib_batch, target_flops,
                  target_params, target_latency, compensate,
                  global_ranking, round_to, exclude,
                  validate, shapes, seed, report_path, html_path, external_data, quiet) -> None:
    """Remove channels from IN and write the smaller model to OUT."""
    from ..api import PruneOptions, prune, write_json
    from ..check.inputs import parse_shapes
    from ..report.summary import summary

    check_side_outputs({"--report": report_path, "--html": html_path}, [source], produced=[target])
    log = (lambda message: None) if quiet else _progress_log
    options = PruneOptions(
        structured=structured, heads=heads, drop_layers=drop_layers, criterion=criterion, calib=calib,
        calib_batch=calib_batch, compensate=compensate, target_flops=target_flops, target_params=target_params,
        target_latency=target_latency,
        global_ranking=global_ranking, round_to=round_to,
        exclude=list(exclude), validate=validate, shapes=parse_shapes(shapes), seed=seed,
        external_data=external_data, sparse=sparse, sparse_min_params=sparse_min_params,
    )
    report = prune(source, target, options, log=log)
    if report_path:
        write_json(report, report_path)
    if html_path:
        from ..report.html import write_html

        write_html(report, html_path)
    if not quiet:
        click.echo(summary(report))
        click.echo(f"wrote {target}")


@main.command("inspect")
@click.argument("source", metavar="IN")
@click.option("--json", "as_json", is_flag=True, help="Print the channel spaces as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="List every member and every pin reason.")
def inspect_command(source, as_json, verbose) -> None:
    """List the channel spaces of IN: size, members, prunable or pinned and why."""
    from ..deps import build_channel_graph
    from ..io.model import Model
    from ..report.summary import inspect_table

    graph = build_channel_graph(Model.load(source))
    spaces = [space.to_dict() for space in graph.spaces]
    click.echo(json.dumps(spaces, indent=2) if as_json else inspect_table(spaces, verbose))


@main.command("sensitivity")
@click.argument("source", metavar="IN")
@click.option("--calib", metavar="DATA", help="Calibration inputs (.npz or a .py with load_data()).")
@click.option("--criterion", default=None, help="Score that picks the channels to drop at each ratio.")
@click.option("--shapes", multiple=True, metavar="NAME:DIMS", help="Shapes for symbolic dims.")
@click.option("--plot", "plot_path", metavar="PNG", help="Write the curves as a plot.")
@click.option("--json", "json_path", metavar="PATH", help="Write the curves as JSON.")
def sensitivity_command(source, calib, criterion, shapes, plot_path, json_path) -> None:
    """Prune each channel space alone at several ratios and measure the output error."""
    from ..api import PruneOptions, write_json
    from ..check.inputs import parse_shapes
    from .sensitivity import analyze, plot

    check_side_outputs({"--json": json_path, "--plot": plot_path}, [source])
    result = analyze(source, PruneOptions(criterion=criterion, calib=calib, shapes=parse_shapes(shapes)),
                     log=_progress_log)
    for curve in result["curves"]:
        points = ", ".join(f"{r:.1f}:{e:.2g}" for r, e in zip(curve["ratios"], curve["errors"]))
        click.echo(f"[{curve['space']:>3}] {curve['label'][:60]:60} {points}")
    if json_path:
        write_json(result, json_path)
    if plot_path:
        plot(result, plot_path)


def _add_subcommands() -> None:
    from . import bench, check_sparsity, validate

    for module in (validate, bench, check_sparsity):
        main.add_command(module.command)


_add_subcommands()


def run() -> None:
    """Console entry point: user errors become one line and exit code 2, never a traceback."""
    try:
        main(standalone_mode=False)
    except OnnxPruneError as exc:
        _fail(str(exc))
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code if exc.exit_code != 1 else 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as exc:  # disk full, permissions, a file vanishing under us: the system's words, one line
        where = f" '{exc.filename}'" if exc.filename else ""
        _fail(f"cannot read or write{where}: {exc.strerror or exc}")
    except Exception as exc:
        if os.environ.get(_DEBUG_ENV):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        _fail(f"internal error: {type(exc).__name__}: {first} (set {_DEBUG_ENV}=1 for a traceback)", 70)
