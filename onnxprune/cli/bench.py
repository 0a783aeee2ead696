"""`onnxprune bench REF [MODEL...]`: latency per execution provider, size, FLOPs and peak memory."""

from __future__ import annotations

import click

from .common import check_side_outputs, progress_log


@click.command("bench")
@click.argument("models", metavar="REF [MODEL]...", nargs=-1, required=True)
@click.option("--provider", "providers", multiple=True, type=click.Choice(["cpu", "cuda", "tensorrt"]),
              help="Execution provider to time on (repeatable; default cpu). One this onnxruntime lacks is "
                   "reported as skipped, unless nothing else can run.")
@click.option("--shapes", multiple=True, metavar="NAME:DIMS", help="Shapes for symbolic dims, e.g. x:8x3x224x224.")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs per model and provider.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed runs first (TensorRT builds here).")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's choice).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--fp16", is_flag=True, help="TensorRT: allow FP16 kernels (trt_fp16_enable, BuilderFlag.FP16).")
@click.option("--sparse/--no-sparse", default=None,
              help="TensorRT: allow 2:4 sparse kernels (default: for models whose onnxprune.sparsity metadata "
                   "says 2:4).")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Measure peak RSS in a child process per model and provider.")
@click.option("--json", "json_path", metavar="PATH", help="Write every figure as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
def command(models, providers, shapes, runs, warmup, threads, seed, fp16, sparse, memory, json_path,
            quiet) -> None:
    """Time REF and every MODEL interleaved in one process, per provider; speedups are against REF."""
    from ..api import write_json
    from ..check.inputs import parse_shapes
    from ..measure.bench import BenchOptions, bench, format_table

    check_side_outputs({"--json": json_path}, list(models))
    options = BenchOptions(providers=list(providers) or ["cpu"], shapes=parse_shapes(shapes), runs=runs,
                           warmup=warmup, threads=threads, seed=seed, fp16=fp16, sparse=sparse, memory=memory)
    result = bench(models, options, log=progress_log(quiet))
    if json_path:
        write_json(result, json_path)
    click.echo(format_table(result))
