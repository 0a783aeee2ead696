"""onnxprune against Torch-Pruning and onnxsim, side by side, every model in one run.

    python -m bench.suite [--quick] [--threads 1] [--models resnet,mobile,yolo,mlp,minilm,tinylm]

For every model (the `models/` CNNs and MLP, all-MiniLM-L6-v2, tinylm) and every mode (channels;
for the transformers also heads and whole blocks; 2:4 sparsity when `onnxprune prune --help`
lists `--sparse`), each tool runs at the same FLOPs budget in its own child process (its wall time
and peak RSS are its own), and every result is measured alike in this process: validity
(onnx.checker full_check + ONNX Runtime), parameters and FLOPs, fidelity to the dense model, and
ORT CPU latency of the dense model and every result interleaved run by run. Writes
bench/results/suite.json and bench/results/suite.md (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _suite_measure as measure
from ._common import machine_facts, markdown_table, table, write_results, write_text
from ._suite_rows import (
    GROUP_BUDGET,
    child_job,
    onnxprune_has_sparse,
    onnxsim_call,
    rows_for,
    run_child,
    search_sparsity,
)
from ._suite_tp import SCOPE, TAYLOR_LOSS

MODELS = ("resnet", "mobile", "yolo", "mlp", "minilm", "tinylm")
NOOP = "onnxprune r=0"


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def run_model(name: str, args: argparse.Namespace, work: Path, sparse: bool) -> dict[str, Any]:
    """Every row of one model: run the tools, then measure every result in this process."""
    started = time.perf_counter()
    calib_samples = args.calib_samples or measure.CALIB_SAMPLES.get(name, 64)
    bench = measure.prepare(name, work, args.eval_samples, calib_samples)
    measure.subset_calibration(bench, min(args.sparse_calib_samples or calib_samples, calib_samples))
    dense = measure.stats(bench.dense, bench.shapes)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else []
    rows = rows_for(name, args.ratio, args.quick and not methods, sparse)
    if methods:
        rows = [row for row in rows if row["method"] in methods]
    elif not args.quick:  # the dense model through onnxprune, nothing removed: what rewriting alone does to ORT
        rows.insert(0, {"group": "reference", "method": NOOP, "tool": "onnxprune", "arg": "--structured 0",
                        "options": {"structured": 0.0}})
    anchors: dict[str, float] = {}
    for index, row in enumerate(rows):
        row["path"] = work / f"{name}_{index}.onnx"
        if row["tool"] == "onnxsim" and row.get("search", True):
            target = anchors.get(row["group"])
            if target is None:
                row["sparsity"] = args.ratio  # no anchor to match (it failed): the nominal ratio
            else:
                row["search"] = search_sparsity(row, bench, target, dense["flops"], work, args.search_steps)
                row["sparsity"] = row["search"]["sparsity"] if row["search"]["sparsity"] is not None else args.ratio
        if row["tool"] == "onnxsim":
            row["call"] = onnxsim_call(row)
        row["run"] = run_child(child_job(row, bench, row["path"]), work, f"{name}_{index}")
        print(f"  {name} {row['method']}: {'ok' if row['run']['ok'] else row['run'].get('error')} "
              f"({row['run']['process_s']:.1f} s)", flush=True)
        if row["run"]["ok"]:
            row.update(measure.validity(row["path"], bench))
            row.update(measure.stats(row["path"], bench.shapes))
            if row["group"] not in anchors and row["group"] != "reference" and row.get("matched", True):
                anchors[row["group"]] = row["flops"] / dense["flops"]
            if row["group"] == "2:4":
                row["zero_fraction"] = measure.zero_fraction(row["path"])
    reference = measure.reference_outputs(bench, args.threads)
    dense_fidelity = measure.fidelity(bench, bench.dense, reference, args.threads)
    timed = {"dense": bench.dense}
    for row in rows:
        if row.get("ort") == "ok":
            row["fidelity"] = measure.fidelity(bench, row["path"], reference, args.threads)
            timed[row["method"]] = row["path"]
    timing = measure.latency(timed, bench.latency_feed, args.latency_runs, args.threads) if args.latency_runs else {}
    for row in rows:
        row.pop("path")
        if row["method"] in timing:
            row["latency"] = timing[row["method"]]
        if "flops" in row:
            row["flops_reduction"] = dense["flops"] / row["flops"] if row["flops"] else None
            speedup = row.get("latency", {}).get("speedup")
            row["speedup_per_flops_reduction"] = speedup / row["flops_reduction"] if speedup and \
                row["flops_reduction"] else None
    return {"dense": {**dense, "fidelity": dense_fidelity, "latency": timing.get("dense")}, "rows": rows,
            "data": bench.info, "taylor_loss": TAYLOR_LOSS[name],
            "torch_pruning_scope": SCOPE.get(name, "every channel group except the output layers"),
            "seconds": time.perf_counter() - started}


def _fidelity_headers(name: str) -> list[str]:
    if name == "tinylm":
        return ["ppl"]
    return ["mean cos", "min cos"] + (["top-1"] if name in measure.CLASSIFIERS else [])


def _fidelity_cells(name: str, fidelity: dict | None) -> list[Any]:
    fidelity = fidelity or {}
    if name == "tinylm":
        return [fidelity.get("perplexity")]
    cells = [fidelity.get("mean_cosine"), fidelity.get("min_cosine")]
    return cells + ([fidelity.get("top1_agreement")] if name in measure.CLASSIFIERS else [])


def _arg(row: dict) -> str:
    if row["tool"] == "onnxsim":
        arg = f"sparsity={row.get('sparsity', row['kwargs'].get('sparsity'))}"
    elif row["tool"] == "torch_pruning":
        arg = f"r={row['ratio']} matched, {row['arg']}"
    else:
        arg = row.get("arg", "")
    return arg + (f"; {100 * row['zero_fraction']:.1f}% zeros" if "zero_fraction" in row else "")


def _status(row: dict, width: int = 0, dense: dict | None = None) -> str:
    if not row["run"]["ok"]:
        status = "FAILED: " + row["run"].get("error", "")
    elif not row.get("valid"):
        status = "invalid: " + (row["checker"] if row["checker"] != "ok" else "ORT " + row["ort"])
    elif dense and row["group"] in ("channels", "heads", "blocks") and row["params"] == dense["params"] \
            and row["flops"] == dense["flops"]:
        status = "removed nothing"
    elif isinstance(row.get("search"), dict) and not row["search"].get("reached", True):
        status = "budget not reached"
    else:
        status = "ok"
    return status if not width or len(status) <= width else status[:width - 3] + "..."


def model_table(name: str, result: dict, width: int = 0) -> tuple[list[str], list[list[Any]]]:
    """One model's table; `width` > 0 shortens status lines (the JSON keeps them whole)."""
    headers = ["group", "method", "argument", "params", "MFLOPs", "FLOPs red."] + _fidelity_headers(name)
    headers += ["ms", "speedup", "spd/red.", "tool s", "peak MB", "status"]
    dense = result["dense"]
    rows = [["-", "dense", "", dense["params"], dense["flops"] / 1e6, 1.0, *_fidelity_cells(name, dense["fidelity"]),
             (dense.get("latency") or {}).get("median_ms"), None, None, None, None, "ok"]]
    for row in result["rows"]:
        run = row["run"]
        rows.append([row["group"], row["method"], _arg(row), row.get("params"),
                     row["flops"] / 1e6 if "flops" in row else None, row.get("flops_reduction"),
                     *_fidelity_cells(name, row.get("fidelity")), row.get("latency", {}).get("median_ms"),
                     row.get("latency", {}).get("speedup"), row.get("speedup_per_flops_reduction"),
                     run.get("tool_s"), run.get("peak_rss_mb"), _status(row, width, dense)])
    return headers, rows


def _title(name: str, result: dict, threads: int) -> str:
    data = result["data"]
    return (f"{name}: fidelity = {data['fidelity']} on {data['eval']}; latency batch {data['latency_batch']}, "
            f"ORT CPU {threads} thread(s)" + (f". {data['caveat']}" if "caveat" in data else ""))


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [f"Machine: {results['machine']['cpu_count']} CPUs ({results['machine']['cpu_model']}), ONNX Runtime "
             f"{results['machine']['onnxruntime']}, Torch-Pruning {results['machine']['torch_pruning']}, onnxsim "
             f"{results['machine']['onnxsim']}; `python -m bench.suite{' --quick' if settings['quick'] else ''}` "
             f"took {results['seconds'] / 60:.1f} min. Latency: median of {settings['latency_runs']} runs of the dense "
             f"model and every result interleaved in one process, {settings['threads']} ORT thread(s), on a shared "
             "machine: read the ratios, not the absolute times. Budgets (channel ratio r = "
             f"{settings['ratio']}), matched on FLOPs:", ""]
    lines += [f"- {group}: {text}" for group, text in results["budget"].items()]
    lines += ["", "`FLOPs red.` = dense FLOPs / FLOPs; `spd/red.` = speedup / FLOPs red.; `tool s` = the tool's "
              "own call (load, prune, save; Torch-Pruning: pruner and step, without the export); `peak MB` = peak "
              "RSS of the tool's child process, imports included; `status`: `removed nothing`, `budget not "
              "reached` (onnxsim's closest sparsity is more than 0.02 of the dense FLOPs off), `FAILED:` / "
              "`invalid:` with the first line of the error.", ""]
    for name in results["models"]:
        result = results[name]
        if "error" in result:
            lines += [f"**{name}**: failed: {result['error']}", ""]
            continue
        headers, rows = model_table(name, result)
        lines += [f"**{_title(name, result, settings['threads'])}**", "", markdown_table(headers, rows), ""]
        calls = [f"`{row['call']}`" for row in result["rows"] if "call" in row]
        if calls:
            lines += ["onnxsim calls, in order: " + "; ".join(calls) + ".", ""]
    if not settings["sparse_rows"]:
        lines += ["2:4 rows left out: `onnxprune prune --help` has no `--sparse` in this checkout.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 4 methods per model (onnxprune l1 and wanda+comp, tp l1, onnxsim l1), "
                             "channels only, 8 samples, 5 latency runs, 3 search steps")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default {','.join(MODELS)})")
    parser.add_argument("--methods", default="", help="comma-separated method names to run (default: all; names "
                                                      "as in the tables, e.g. 'onnxprune l1,tp l1,onnxsim l1')")
    parser.add_argument("--ratio", type=float, default=0.3, help="channel ratio r of the anchor (default 0.3)")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads of the latency runs (default 1)")
    parser.add_argument("--latency-runs", type=int, default=None, help="timed runs per model (default 20; quick 5)")
    parser.add_argument("--eval-samples", type=int, default=None, help="evaluation inputs (default 128; quick 8)")
    parser.add_argument("--calib-samples", type=int, default=None,
                        help="calibration inputs (default 64, mlp 512; quick 8)")
    parser.add_argument("--sparse-calib-samples", type=int, default=None,
                        help="calibration inputs of the calibrated 2:4 rows: the first of the set (default: "
                             "all of it; quick 4)")
    parser.add_argument("--search-steps", type=int, default=None, help="bisection steps of onnxsim's sparsity "
                                                                       "(default 6; quick 3)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only rewrite suite.md (in --out) from an existing suite.json")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text())
        print(f"wrote {write_text('suite.md', markdown(results) + chr(10), args.out)}")
        return
    defaults = {"latency_runs": (5, 20), "eval_samples": (8, 128), "calib_samples": (8, None), "search_steps": (3, 6),
                "sparse_calib_samples": (4, None)}
    for key, (quick, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; expected some of {', '.join(MODELS)}")
    import onnxruntime
    import torch

    onnxruntime.set_default_logger_severity(3)  # onnxsim's 2:4 outputs keep unused initializers: a warning each
    sparse = onnxprune_has_sparse()
    results: dict[str, Any] = {
        "machine": {**machine_facts(), "torch": torch.__version__, "torch_pruning": _version("torch-pruning"),
                    "onnxsim": _version("onnxsim")},
        "settings": {"quick": args.quick, "ratio": args.ratio, "threads": args.threads,
                     "latency_runs": args.latency_runs, "eval_samples": args.eval_samples,
                     "calib_samples": args.calib_samples, "sparse_calib_samples": args.sparse_calib_samples,
                     "search_steps": args.search_steps, "sparse_rows": sparse},
        "budget": GROUP_BUDGET,
        "models": names,
    }
    print(f"bench.suite: models {', '.join(names)}; r = {args.ratio}; ORT {args.threads} thread(s), "
          f"{args.latency_runs} interleaved runs; 2:4 rows {'on' if sparse else 'off (no onnxprune --sparse)'}",
          flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnxprune-suite-") as folder:
        for name in names:
            try:
                result = run_model(name, args, Path(folder), sparse)
            except Exception as exc:  # one model's failure must not lose the others
                result = {"error": measure.first_line(exc)}
                print(f"\n{name}: failed: {result['error']}", flush=True)
            else:
                headers, rows = model_table(name, result, width=60)
                print(f"\n{_title(name, result, args.threads)} ({result['seconds']:.0f} s)")
                print(table(headers, rows), flush=True)
            results[name] = result
    results["seconds"] = time.perf_counter() - started
    results = _finite(results)
    json_path = write_results("suite.json", results, args.out)
    md_path = write_text("suite.md", markdown(results) + "\n", args.out)
    print(f"\ntotal {results['seconds']:.0f} s; wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
