"""`onnxprune IN OUT [options]` (the default command, also `onnxprune prune`): prune and write the result."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import check_side_outputs, progress_log


@click.command("prune")
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
@click.option("--sparse-any-shape", is_flag=True,
              help="With --sparse: also zero weights whose shape TensorRT's sparse kernels cannot speed up "
                   "(output rows not a multiple of 8 or sparse axis not a multiple of 16; left dense by default).")
@click.option("--sparse-lm-head", is_flag=True,
              help="With --sparse: also sparsify a language model's LM head and embedding table (kept dense by "
                   "default; a table tied to the LM head is then sparse for both, stored once).")
@click.option("--calib", metavar="DATA", help="Calibration inputs: an .npz (input name -> [N, ...]) or a .py "
                                              "script with load_data() yielding feed dicts.")
@click.option("--calib-batch", type=int, default=8, show_default=True, help="Samples per batch from an .npz.")
@click.option("--target-flops", type=float, help="Keep this fraction of the FLOPs; per-space ratios from sensitivity.")
@click.option("--target-params", type=float, help="Keep this fraction of the parameters.")
@click.option("--target-latency", type=float, help="Keep this fraction of the ORT latency measured here.")
@click.option("--max-error", type=float, metavar="E",
              help="Remove as much as possible (FLOPs) while the outputs stay within E of the original on a "
                   "held-out quarter of --calib: mean over output channels of the relative squared error "
                   "(0.01 = 20 dB SNR per channel). Chooses the ratios itself; needs --calib.")
@click.option("--compensate/--no-compensate", default=None,
              help="Refit kept weights and biases by least squares on calibration data (default: on with --calib).")
@click.option("--recover", is_flag=True,
              help="After pruning, train the kept weights to reproduce the original model on the --calib data "
                   "(distillation with PyTorch: CPU, or CUDA when torch sees a GPU).")
@click.option("--recover-steps", type=int, help="Training steps of --recover, all rounds together (default 200 "
                                                "unless --recover-time is given).")
@click.option("--recover-time", type=float, metavar="SECONDS", help="Wall-clock budget of --recover's training.")
@click.option("--recover-lr", type=float, help="--recover's step size relative to each weight's RMS (default 0.01).")
@click.option("--recover-rounds", type=int, default=1, show_default=True,
              help="Progressive pruning with --recover: K rounds of (prune 1/K of the way, recover).")
@click.option("--allocation", type=click.Choice(["auto", "uniform", "llm"]), default="auto", show_default=True,
              help="How --structured, --heads and --target-params/--target-flops spread over layers. llm: first and "
                   "last blocks kept whole, OWL outlier-weighted ratios elsewhere; auto: llm for a decoder language "
                   "model (found by its structure), else uniform.")
@click.option("--global", "global_ranking", is_flag=True,
              help="Rank channels of all spaces together (normalized scores) instead of the same ratio everywhere.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="Runtime the pruned model is for: channel counts become the multiples its kernels run fast "
                   "(ORT CPU: 8 or 16 for Conv, 16 for MatMul; CUDA: 8; TensorRT: 16); the FLOPs removed stay "
                   "as asked.")
@click.option("--round-to", type=int, default=None,
              help="Keep channel counts multiples of N in every space instead of --device's (1: exact counts).")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave spaces touching matching node names alone.")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Compare outputs and latency of both models in ONNX Runtime.")
@click.option("--shapes", multiple=True, metavar="NAME:DIMS", help="Shapes for symbolic dims, e.g. x:1x3x224x224.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random validation inputs.")
@click.option("--val-range", "val_range", multiple=True, metavar="[NAME:]LO,HI",
              help="Draw random inputs uniformly from [LO, HI] (integers: both ends included); a bare range is "
                   "the default for every input. Default: ids inside the table they index, 0/1 masks, normal floats.")
@click.option("--load-inputs", metavar="FILE",
              help="Validate on these feeds: a JSON list of feeds (Polygraphy's --save-inputs) or an .npz holding "
                   "one feed. Default: the --calib data, else seeded random inputs.")
@click.option("--json", "--report", "report_path", metavar="PATH",
              help="Write the JSON report here (--report is the older name, still accepted).")
@click.option("--html", "html_path", metavar="PATH", help="Write the report as a self-contained HTML page with plots.")
@click.option("--external-data/--no-external-data", default=None,
              help="Store weights in OUT.data (default: as the input did, or when over 2 GB).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors and warnings.")
@click.option("--fail-on-warning", is_flag=True,
              help="Exit 1 when a warning fired (collapsed output, nothing removed, target missed, random "
                   "validation inputs, demo model); the model is still written.")
def command(source, target, structured, heads, drop_layers, criterion, sparse, sparse_min_params, sparse_any_shape,
            sparse_lm_head, calib,
                  calib_batch, target_flops,
                  target_params, target_latency, max_error, compensate, recover, recover_steps, recover_time,
                  recover_lr,
                  recover_rounds,
                  allocation, global_ranking, device, round_to, exclude,
                  validate, shapes, seed, val_range, load_inputs, report_path, html_path, external_data, quiet,
            fail_on_warning) -> None:
    """Remove channels from IN and write the smaller model to OUT."""
    from ..api import PruneOptions, check_paths, prune, write_json
    from ..check.inputs import parse_shapes
    from ..check.validate import parse_val_ranges
    from ..report.summary import summary

    # Every path is checked before any work: the input, then OUT (and OUT.data), then the reports.
    check_paths(Path(source), Path(target))
    check_side_outputs({"--json": report_path, "--html": html_path}, [source], produced=[target])
    log = progress_log(quiet)
    options = PruneOptions(
        structured=structured, heads=heads, drop_layers=drop_layers, criterion=criterion, calib=calib,
        calib_batch=calib_batch, compensate=compensate, target_flops=target_flops, target_params=target_params,
        target_latency=target_latency, max_error=max_error,
        global_ranking=global_ranking, device=device, round_to=round_to,
        exclude=list(exclude), validate=validate, shapes=parse_shapes(shapes), seed=seed,
        external_data=external_data, sparse=sparse, sparse_min_params=sparse_min_params,
        sparse_any_shape=sparse_any_shape, sparse_lm_head=sparse_lm_head, allocation=allocation,
        val_ranges=parse_val_ranges(val_range), load_inputs=load_inputs,
        recover=recover, recover_steps=recover_steps, recover_time=recover_time, recover_lr=recover_lr,
        recover_rounds=recover_rounds,
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
    from ..check.guards import print_warnings

    print_warnings(report["warnings"])
    if fail_on_warning and report["warnings"]:
        click.echo(f"onnxprune: {len(report['warnings'])} warning(s) with --fail-on-warning: exit 1 "
                   f"({target} was written)", err=True)
        sys.exit(1)
