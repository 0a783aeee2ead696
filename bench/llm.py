"""SmolLM2-135M-Instruct through every prune mode of issue 17, as a user runs it: perplexity vs dense.

    python -m bench.llm [--forms plain] [--modes ffn20,ffn30,...] [--calib-windows 16]
                        [--eval-windows N] [--validate] [--torch-reference] [--onnxsim | --only-onnxsim]
                        [--skip-dense] [--timeout 1800] [--out llm.json] [--table]

For each form (models/llm: cached ONNX exports of the real model, built on first use) the bench writes
the calibration windows of `calib_texts()` as an .npz, then for every mode runs
`python -m onnxprune prune IN OUT ARGS --calib CALIB --json R.json --no-validate -q` in a subprocess
and records its wall time, its CPU time (user + system, whatever the load), its own peak RSS (the
child's VmHWM, written at exit: wait4's ru_maxrss folds in this parent's high-water mark at exec), the
1-minute load average before and after, whether the written model passes onnx's full check as
onnxprune applies it (ops only ONNX Runtime defines in the default domain moved aside; without the
strict shape inference where the dense export already fails it) and loads in ONNX Runtime, and its
perplexity on the held-out `eval_texts()` windows against the dense model's on the same windows
(`--eval-windows`: the first N windows; default all 70). `--validate` lets prune run its own
validation. `--torch-reference` adds the issue's 20-line PyTorch reference (Wanda channel scores
||W_down[:, j]||_1 * ||X_j||_2 over the same calibration windows, lowest channels zeroed, nothing
else) at FFN 20% and 30%. `--onnxsim` adds onnxsim's pruning functions (ONNXSIM below) on the same
model and windows. `--table` prints a results file as markdown.

Goals (issue 17, calibrated, held-out text): FFN 20% <= 1.3x dense perplexity, FFN 30% <= 1.6x,
3 blocks <= 1.2x, 2:4 SparseGPT <= 2.5x (and under 10 minutes), 50% unstructured SparseGPT <= 1.4x.
Results go to bench/results/<--out> after every run; runs of an earlier invocation with the same
window counts are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import machine_facts, write_results

ROOT = Path(__file__).resolve().parent.parent
# name -> (prune arguments, goal as a multiple of dense perplexity or None, wall-time goal in seconds)
MODES: dict[str, tuple[list[str], float | None, float | None]] = {
    "ffn20": (["--structured", "0.2"], 1.3, None),
    "ffn30": (["--structured", "0.3"], 1.6, None),
    "kv1": (["--heads", "0.34"], None, None),  # 1 of the 3 KV groups of every layer (uniform)
    "blocks3": (["--drop-layers", "3"], 1.2, None),
    "2:4-magnitude": (["--sparse", "2:4", "--criterion", "magnitude"], None, None),
    "2:4-wanda": (["--sparse", "2:4", "--criterion", "wanda"], None, None),
    "2:4-sparsegpt": (["--sparse", "2:4", "--criterion", "sparsegpt"], 2.5, 600.0),
    "50%-sparsegpt": (["--sparse", "0.5", "--criterion", "sparsegpt"], 1.4, None),
    "target-params-0.8": (["--target-params", "0.8"], None, None),
}
DATA_FREE = {"2:4-magnitude"}  # modes that read no activations: run without --calib, as a user would
# onnxsim 0.8.1's pruning functions for the same modes (their C++ ports, same results, faster), fed the same
# calibration windows, one window a feed. It has nothing like --target-params. Its block pruning drops
# residual sub-blocks (attention or MLP), as --drop-layers does.
ONNXSIM: dict[str, tuple[str, dict[str, Any]]] = {
    "ffn20": ("apply_structured_wanda_pruning_cpp", {"sparsity": 0.2}),
    "ffn30": ("apply_structured_wanda_pruning_cpp", {"sparsity": 0.3}),
    "kv1": ("apply_attention_head_wanda_pruning_cpp", {"sparsity": 0.34}),
    "blocks3": ("apply_transformer_block_pruning_cpp", {"num_blocks_to_drop": 3}),
    "2:4-magnitude": ("prune_magnitude_cpp", {"sparsity": 0.5, "n": 2, "m": 4}),
    "2:4-wanda": ("apply_wanda_pruning_cpp", {"sparsity": 0.5, "n": 2, "m": 4}),
    "2:4-sparsegpt": ("apply_sparsegpt_pruning_cpp", {"sparsity": 0.5, "n": 2, "m": 4}),
    "50%-sparsegpt": ("apply_sparsegpt_pruning_cpp", {"sparsity": 0.5}),
}
_ONNXSIM_CHILD = """
import json, sys
import numpy as np, onnx, onnxsim
job = json.loads(sys.argv[1])
kwargs = dict(job["kwargs"])
if job.get("calib"):
    with np.load(job["calib"]) as data:
        arrays = {name: data[name] for name in data.files}
    count = len(next(iter(arrays.values())))
    kwargs["calibration_data"] = [{k: v[i:i + 1] for k, v in arrays.items()} for i in range(count)]
    kwargs["num_samples"] = count
model = getattr(onnxsim, job["function"])(job["source"], **kwargs)
big = model.ByteSize() > 1_900_000_000 if hasattr(model, "ByteSize") else False
onnx.save(model, job["target"], save_as_external_data=big)
"""


def _calib_npz(form: str, windows: int, folder: Path) -> Path:
    import numpy as np

    import models.llm as llm

    feeds = llm.calibration_feeds(form, n_windows=windows, window=128)
    arrays = {name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]}
    path = folder / f"calib_{form}.npz"
    np.savez(path, **arrays)
    return path


# The child reports its own VmHWM at exit: ru_maxrss from wait4 folds in the parent's high-water mark at
# exec (Linux keeps the larger of the two), and this parent holds ORT sessions of the whole model.
_CHILD = ("import runpy, sys\n"
          "sys.argv.pop(1)\n"
          "sys.argv[0] = 'onnxprune'\n"
          "runpy.run_module('onnxprune', run_name='__main__', alter_sys=True)\n")
_HWM = ("import atexit, os\n"
        "def _hwm():\n"
        "    line = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "    open(os.environ['ONNXPRUNE_HWM'], 'w').write(line.split()[1])\n"
        "atexit.register(_hwm)\n")


def _hwm_wrapped(script: str) -> str:
    return _HWM + script


def _run_prune(args: list[str], timeout: float, script: str = _CHILD) -> dict[str, Any]:
    """The CLI (or `script` with `args`) in a child process: exit code, wall time, peak RSS of that child,
    the last stderr lines, the 1-minute load average before and after."""
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile(suffix=".hwm") as hwm:
        head = [hwm.name, "prune"] if script is _CHILD else []
        child = subprocess.Popen([sys.executable, "-c", _hwm_wrapped(script), *head, *args], cwd=ROOT,
                                 stderr=err, stdout=subprocess.DEVNULL, env={**os.environ, "ONNXPRUNE_HWM": hwm.name})
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.5)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = [line for line in err.read().decode(errors="replace").splitlines() if line.strip()]
        own = Path(hwm.name).read_text().strip()
    peak_kb = int(own) if own else usage.ru_maxrss  # a killed child wrote nothing: the folded figure, an upper bound
    return {"exit": child.returncode, "seconds": round(time.perf_counter() - started, 1),
            # CPU seconds of the child (user + system): what the run costs whatever the load of the machine;
            # on 2 idle cores the wall time would be about this over the threads it keeps busy.
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(peak_kb / 1024, 1), "peak_rss_source": "VmHWM" if own else "ru_maxrss",
            "timed_out": time.perf_counter() > deadline, "stderr_tail": lines[-3:],
            "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def _check_error(path: Path, full: bool = True) -> str | None:
    """onnx's check as onnxprune applies it (io.staging): on the light graph (weights declared by type),
    with the ops only ONNX Runtime defines in the default domain (the SimplifiedLayerNormalization of
    ORT-optimized and GenAI models) moved to a domain of their own; the first line of the complaint."""
    import onnx

    from onnxprune.io.model import Model
    from onnxprune.io.staging import full_check_error
    from onnxprune.io.wellformed import checkable

    model = Model.load(path)
    if full:
        return full_check_error(model)
    try:
        onnx.checker.check_model(checkable(model.light_proto()), full_check=False)
    except onnx.checker.ValidationError as exc:
        return str(exc).strip().splitlines()[0]
    return None


def _valid(path: Path, source_error: str | None) -> tuple[bool, str | None]:
    """onnx's full check (without its strict shape inference where the dense model already fails that,
    as onnxprune's own check does), then an ONNX Runtime session."""
    try:
        error = _check_error(path)
        if error is not None and source_error is not None:
            error = _check_error(path, full=False)
    except Exception as exc:  # the checker's exceptions share no useful base
        return False, f"onnx check: {str(exc).splitlines()[0]}"
    if error is not None:
        return False, f"onnx full check: {error}"
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return False, f"onnxruntime: {str(exc).splitlines()[0]}"
    return True, None


def _report_facts(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    facts = {"params_ratio": round(report["after"]["params"] / report["before"]["params"], 4),
             "flops_ratio": round(report["after"]["flops"] / max(report["before"]["flops"], 1), 4),
             "pass_seconds": report.get("pass_seconds"), "prune_seconds": report.get("prune_seconds"),
             "warnings": report.get("warnings", [])}
    if "allocation" in report:
        facts["allocation"] = {key: report["allocation"][key] for key in ("method", "means", "protected")}
    if "layers" in report:
        facts["blocks_removed"] = report["layers"].get("removed")
    if "sparsity" in report:
        facts["sparse_weights"] = report["sparsity"]["sparse_weights"]
    if facts["pass_seconds"] and facts["prune_seconds"]:  # the rest: loading, counting, saving, validation
        facts["outside_passes_seconds"] = round(facts["prune_seconds"] - sum(facts["pass_seconds"].values()), 1)
    return facts


def run_form(form: str, modes: list[str], calib_windows: int, eval_windows: int | None, validate: bool,
             timeout: float, folder: Path, results: dict[str, Any], out: str, onnxsim: bool = False,
             skip_onnxprune: bool = False, skip_dense: bool = False) -> None:
    import models.llm as llm

    source = llm.build(form)
    texts = llm.eval_texts()
    entry = results["forms"].setdefault(form, {"runs": {}})
    started = time.perf_counter()
    if not (skip_dense and "dense_perplexity" in entry):
        entry["dense_perplexity"] = round(llm.perplexity(source, texts, form=form, max_windows=eval_windows), 4)
        entry["dense_eval_seconds"] = round(time.perf_counter() - started, 1)
    print(f"[{form}] dense perplexity {entry['dense_perplexity']:.3f} ({entry['dense_eval_seconds']:.0f} s)",
          flush=True)
    # The dense export itself may fail onnx's strict shape inference (the GenAI builder's typed Constants):
    # then its pruned forms are checked without it, as onnxprune checks them.
    entry["dense_full_check"] = _check_error(source)
    calib = _calib_npz(form, calib_windows, folder)
    for mode in [] if skip_onnxprune else modes:
        arguments, goal, time_goal = MODES[mode]
        target, report = folder / f"{form}_{mode.replace(':', '-')}.onnx", folder / "report.json"
        report.unlink(missing_ok=True)
        args = [str(source), str(target), *arguments, "--json", str(report), "-q"]
        args += [] if mode in DATA_FREE else ["--calib", str(calib)]
        args += [] if validate else ["--no-validate"]
        run = {"args": ["onnxprune", "prune", "IN", "OUT", *args[2:]]}
        run.update(_run_prune(args, timeout))
        _judge(run, target, form, entry["dense_perplexity"], eval_windows, goal, entry["dense_full_check"])
        if run["exit"] == 0 and target.exists():
            run.update(_report_facts(report))
            if time_goal is not None:
                run["time_goal_seconds"], run["meets_time_goal"] = time_goal, run["seconds"] <= time_goal
        _finish(run, target, entry["runs"], mode, form, results, out)
    if onnxsim:
        for mode in [m for m in modes if m in ONNXSIM]:
            function, kwargs = ONNXSIM[mode]
            target = folder / f"{form}_onnxsim_{mode.replace(':', '-')}.onnx"
            job = {"function": function, "kwargs": kwargs, "source": str(source), "target": str(target),
                   "calib": None if mode in DATA_FREE else str(calib)}
            run = {"call": f"onnxsim.{function}(model, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}"
                           f"{'' if mode in DATA_FREE else ', calibration_data=<the same windows>'})"}
            run.update(_run_prune([json.dumps(job)], timeout, script=_ONNXSIM_CHILD))
            _judge(run, target, form, entry["dense_perplexity"], eval_windows, MODES[mode][1],
                   entry["dense_full_check"])
            _finish(run, target, entry.setdefault("onnxsim", {}), f"{mode}", f"{form} onnxsim", results, out)


def _judge(run: dict[str, Any], target: Path, form: str, dense: float, eval_windows: int | None,
           goal: float | None, source_error: str | None = None) -> None:
    """Valid (checker + ORT load) and perplexity against the dense model's, into `run`."""
    import models.llm as llm

    if run["exit"] != 0 or not target.exists():
        return
    run["valid"], run["invalid_reason"] = _valid(target, source_error)
    if run["valid"]:
        try:
            ppl = llm.perplexity(target, llm.eval_texts(), form=form, max_windows=eval_windows)
        except Exception as exc:  # a model ORT loads but cannot run on real text is a result too
            run["valid"], run["invalid_reason"] = False, f"perplexity run: {str(exc).splitlines()[0][:200]}"
            return
        run["perplexity"] = round(ppl, 4)
        run["x_dense"] = round(ppl / dense, 4)
        run["goal_x_dense"] = goal
        run["meets_goal"] = None if goal is None else run["x_dense"] <= goal


def _finish(run: dict[str, Any], target: Path, table: dict[str, Any], mode: str, label: str,
            results: dict[str, Any], out: str) -> None:
    for path in (target, Path(f"{target}.data")):
        path.unlink(missing_ok=True)
    table[mode] = run
    write_results(out, results)
    print(f"[{label}] {mode:18s} exit {run['exit']}  valid {run.get('valid')}  ppl {run.get('perplexity')}  "
          f"x{run.get('x_dense')}  {run['seconds']:.0f} s (cpu {run['cpu_seconds']:.0f} s)  "
          f"{run['peak_rss_mb']:.0f} MB  load {run['load_1min']}", flush=True)


def torch_reference(ratios: tuple[float, ...], calib_windows: int, eval_windows: int | None) -> dict[str, Any]:
    """The issue's PyTorch reference: Wanda channel scores of every down_proj, lowest zeroed, no compensation."""
    import numpy as np
    import torch

    import models.llm as llm
    from models.llm.evaluate import perplexity_torch
    from models.llm.fetch import load_torch
    from models.llm.texts import token_windows

    model = load_torch("eager").eval()
    layers = model.model.layers
    squares = [torch.zeros(layer.mlp.down_proj.in_features, dtype=torch.float64) for layer in layers]

    def hook(index):
        def record(module, inputs):
            rows = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
            squares[index] += (rows * rows).sum(0)
        return record

    handles = [layer.mlp.down_proj.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    windows = torch.from_numpy(token_windows(llm.calib_texts(), 128, calib_windows))
    with torch.no_grad():
        for start in range(0, len(windows), 8):
            ids = windows[start:start + 8]
            model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    for handle in handles:
        handle.remove()
    originals = [layer.mlp.down_proj.weight.detach().clone() for layer in layers]
    out = {}
    for ratio in ratios:
        for layer, weight, sq in zip(layers, originals, squares):
            score = weight.double().abs().sum(0) * sq.sqrt()
            pruned = weight.clone()
            pruned[:, np.argsort(score.numpy(), kind="stable")[:int(ratio * score.numel())]] = 0
            layer.mlp.down_proj.weight.data = pruned
        out[f"ffn{round(ratio * 100)}"] = round(perplexity_torch(llm.eval_texts(), max_windows=eval_windows,
                                                                 model=model), 4)
        for layer, weight in zip(layers, originals):
            layer.mlp.down_proj.weight.data = weight
    return out


def table(results: dict[str, Any]) -> str:
    """The results as markdown: one table per form, onnxprune's rows then onnxsim's."""
    lines = []
    for form, entry in results.get("forms", {}).items():
        lines += [f"**{form}** (dense perplexity {entry.get('dense_perplexity')})", "",
                  "| tool | mode | valid | ppl | x dense | goal | wall s | CPU s | peak RSS MB | load 1 min | params | "
                  "FLOPs |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for tool, runs in (("onnxprune", entry.get("runs", {})), ("onnxsim", entry.get("onnxsim", {}))):
            for mode, run in runs.items():
                valid = run.get("valid")
                if run.get("timed_out"):
                    valid = "timeout"
                elif run.get("exit") not in (0, None):
                    valid = f"exit {run['exit']}"
                goal = run.get("goal_x_dense")
                met = "" if goal is None or run.get("meets_goal") is None else (
                    f"<= {goal} {'met' if run['meets_goal'] else 'MISSED'}")
                load = "-".join(str(x) for x in run.get("load_1min", []))
                lines.append(f"| {tool} | {mode} | {valid} | {run.get('perplexity', '')} | {run.get('x_dense', '')} | "
                             f"{met} | {run.get('seconds', '')} | {run.get('cpu_seconds', '')} | "
                             f"{run.get('peak_rss_mb', '')} | {load} | {run.get('params_ratio', '')} | "
                             f"{run.get('flops_ratio', '')} |")
        lines.append("")
    if results.get("torch_reference"):
        lines.append(f"PyTorch reference (Wanda channel scores, zeroed, no compensation): {results['torch_reference']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--forms", default="plain", help="comma-separated models.llm forms (default: plain)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated, from " + ", ".join(MODES).replace("%", "%%"))
    parser.add_argument("--calib-windows", type=int, default=16, help="128-token calibration windows")
    parser.add_argument("--eval-windows", type=int, default=None, help="first N evaluation windows (default all)")
    parser.add_argument("--validate", action="store_true", help="let prune validate too (default --no-validate)")
    parser.add_argument("--torch-reference", action="store_true", help="the issue's PyTorch reference at 20/30%%")
    parser.add_argument("--onnxsim", action="store_true", help="also onnxsim's pruning functions, same modes and data")
    parser.add_argument("--only-onnxsim", action="store_true", help="onnxsim's rows only (onnxprune's kept from --out)")
    parser.add_argument("--skip-dense", action="store_true", help="reuse the dense perplexity from --out")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per prune run")
    parser.add_argument("--out", default="llm.json", help="file name in bench/results/")
    parser.add_argument("--table", action="store_true", help="print --out as markdown tables and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads((ROOT / "bench" / "results" / args.out).read_text())))
        return 0
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}")
    results: dict[str, Any] = {"machine": machine_facts(), "calib_windows": args.calib_windows,
                               "eval_windows": args.eval_windows or "all", "window": 128,
                               "validate": args.validate, "forms": {}}
    previous = ROOT / "bench" / "results" / args.out
    if previous.exists():  # runs of other forms or modes from an earlier invocation stay
        old = json.loads(previous.read_text())
        if (old.get("calib_windows"), old.get("eval_windows")) == (args.calib_windows, results["eval_windows"]):
            results["forms"] = old.get("forms", {})
            results["torch_reference"] = old.get("torch_reference")
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-llm-") as folder:
        for form in [f.strip() for f in args.forms.split(",") if f.strip()]:
            run_form(form, modes, args.calib_windows, args.eval_windows, args.validate, args.timeout, Path(folder),
                     results, args.out, onnxsim=args.onnxsim or args.only_onnxsim, skip_onnxprune=args.only_onnxsim,
                     skip_dense=args.skip_dense)
    if args.torch_reference:
        results["torch_reference"] = torch_reference((0.2, 0.3), args.calib_windows, args.eval_windows)
        print(f"torch reference: {results['torch_reference']}")
    path = write_results(args.out, results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
