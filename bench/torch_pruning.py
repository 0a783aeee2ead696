"""onnxprune against Torch-Pruning on the same PyTorch models, at the same channel budget.

    python -m bench.torch_pruning [--ratios 0.2,0.3,0.4] [--skip-minilm] [--skip-cnn]

Torch-Pruning (https://github.com/VainF/Torch-Pruning, ``pip install torch-pruning``) prunes the
torch module; onnxprune prunes the ONNX export of the same module (``models.build(name,
"torchscript", ...)``). Every pruned model, Torch-Pruning's included, is then exported to ONNX and
measured the same way in one process, under ONNX Runtime:

- all-MiniLM-L6-v2: only the FFN intermediate channels (``intermediate.dense`` outputs /
  ``output.dense`` inputs), ratio r per layer; mean and minimum cosine similarity of the sentence
  embeddings to the dense model's on 128 held-out real sentences;
- resnet, mobile, yolo: every prunable channel group except the output layers, ratio r per group;
  per-sample cosine of the flattened outputs and top-1 agreement (classifiers) with the dense
  model on 64 held-out random inputs;
- parameters and FLOPs (onnxprune.check.stats.model_stats on each ONNX file, batch 1), and ORT CPU
  latency of all variants, interleaved (onnxprune.measure.latency.measure_interleaved), next to the dense
  model and the dense model passed through onnxprune with nothing removed ("onnxprune r=0").

The CNNs (seeded random weights) also run at --cnn-low-ratios (0.05, 0.1): at 0.2 and above every
method's outputs agree with the dense model's at about chance level.

Methods: onnxprune ``l1`` (no data), ``wanda`` (calibration data, no compensation) and
``wanda+comp`` (``--calib``: the default wanda score plus least-squares compensation);
Torch-Pruning ``MagnitudeImportance(p=1)``, ``(p=2)`` and ``TaylorImportance()`` with
``global_pruning=False``. Budgets are matched channel for channel (see ``tp_ratio_dict``).
Results go to bench/results/torch_pruning.json.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._common import machine_facts, table, write_results
from ._tp_models import (
    CNNS,
    TAYLOR_LOSS,
    Case,
    cnn_case,
    minilm_case,
)

ONNXPRUNE_METHODS = ("onnxprune l1", "onnxprune wanda", "onnxprune wanda+comp")
TP_METHODS = ("tp l1", "tp l2", "tp taylor")
NOOP = "onnxprune r=0"  # latency reference: the dense model through onnxprune, no channel removed
WHY_NOT_MSE = ("MSE to the dense output is exactly 0 before pruning (the model still is the dense "
               "model), so its gradient is 0 and every Taylor score would be 0; MiniLM's output is "
               "L2-normalized, so its norm is constant and has no gradient either.")


# ---------------------------------------------------------------------------------------------
# budgets


def removal_count(size: int, ratio: float, round_to: int = 1) -> int:
    """onnxprune's count for a space of `size` channels under a local budget: floor(ratio * size),
    then the kept count rounded up to a multiple of `round_to` (onnxprune.plan.removal_count)."""
    from onnxprune.plan import Budget
    from onnxprune.plan import removal_count as count

    return count(size, Budget(ratio, round_to=round_to))


def tp_native_kept(size: int, ratio: float, round_to: int = 1) -> int:
    """What Torch-Pruning keeps of a local scope of `size` channels given the plain ratio:
    int(size * (1 - r)), rounded down to a multiple of `round_to` (BasePruner._round_to)."""
    kept = int(size * (1 - ratio))
    return kept - kept % round_to if round_to > 1 else kept


def _channel_groups(group) -> int:
    """The channel grouping Torch-Pruning applies to a group, as BasePruner detects it: a grouped,
    non-depthwise convolution among the members (input or output side) makes indices ranked within
    one of its `groups` and repeated in each; 1 otherwise."""
    from torch import nn

    found = [1]
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.modules.conv._ConvNd) and 1 < module.groups != module.out_channels:
            found.append(module.groups)
    return max(found)


def tp_groups(model, example, ignored, root_types) -> list[dict]:
    """Torch-Pruning's pruning groups for this model: root module, scope size (channels ranked
    together), channel grouping."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    names = {module: name for name, module in model.named_modules()}
    ignored_modules = [m for layer in ignored for m in layer.modules()]
    out = []
    for group in graph.get_all_groups(ignored_layers=ignored_modules, root_module_types=root_types):
        root = group[0].dep.source.module
        groups = _channel_groups(group)
        out.append({"root": root, "name": names.get(root, "?"), "groups": groups,
                    "size": graph.get_out_channels(root) // groups})
    return out


def tp_ratio_dict(groups: list[dict], ratio: float, round_to: int = 1) -> dict:
    """Per-root ratios (Torch-Pruning's ``pruning_ratio_dict``) that make Torch-Pruning remove
    exactly onnxprune's k channels from every group (``removal_count``): it removes size -
    int(size * (1 - r')), which for r' = (k - 0.5) / size is k."""
    ratios = {}
    for group in groups:
        k = removal_count(group["size"], ratio, round_to)
        ratios[group["root"]] = (k - 0.5) / group["size"] if k > 0 else 0.0
    return ratios


# ---------------------------------------------------------------------------------------------
# ONNX side: onnxprune, stats, agreement, latency


def _onnxprune(dense: Path, target: Path, method: str, ratio: float, calib: Path, round_to: int = 1) -> dict:
    import onnxprune

    options = {"onnxprune l1": dict(criterion="l1"),
               "onnxprune wanda": dict(calib=str(calib), compensate=False),
               "onnxprune wanda+comp": dict(calib=str(calib))}[method]
    report = onnxprune.prune(dense, target, onnxprune.PruneOptions(structured=ratio, round_to=round_to,
                                                                   validate=False, **options))
    prunable = [s for s in report["spaces"] if s.get("prunable") and s.get("kind") == "channels"]
    return {"spaces": len(prunable), "channels": sum(s["size"] for s in prunable),
            "kept": sum(s["kept"] for s in prunable)}


def _stats(path: Path, shapes: dict) -> dict:
    from onnxprune.check.stats import model_stats
    from onnxprune.io.model import Model

    stats = model_stats(Model.load(path), shapes)
    return {"params": stats["params"], "flops": stats["flops"]}


@dataclass(frozen=True)
class OrtConfig:
    threads: int | None = 1  # None: ORT's default
    disabled_optimizers: tuple[str, ...] = ()  # e.g. ("SkipLayerNormFusion",)


def _session(path: Path, ort_config: OrtConfig):
    """ORT CPU session, intra-op spinning off (see bench/README.md, speedup)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if ort_config.threads:
        options.intra_op_num_threads = ort_config.threads
    extra = {"disabled_optimizers": list(ort_config.disabled_optimizers)} if ort_config.disabled_optimizers else {}
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"], **extra)


def _outputs(path: Path, feed: dict, ort_config: OrtConfig) -> list[np.ndarray]:
    from onnxprune.check import runtime

    session = _session(path, ort_config)
    return list(runtime.run(session, feed).values())


def _agreement(reference: list[np.ndarray], got: list[np.ndarray], classifier: bool) -> dict:
    ref = np.concatenate([a.reshape(a.shape[0], -1) for a in reference], axis=1).astype(np.float64)
    out = np.concatenate([a.reshape(a.shape[0], -1) for a in got], axis=1).astype(np.float64)
    cosine = np.sum(ref * out, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1) + 1e-30)
    result = {"mean_cosine": float(np.mean(cosine)), "min_cosine": float(np.min(cosine))}
    if classifier:
        result["top1_agreement"] = float(np.mean(reference[0].argmax(1) == got[0].argmax(1)))
    return result


def _latency(paths: dict[str, Path], feed: dict, runs: int, ort_config: OrtConfig) -> dict:
    from onnxprune.measure import latency

    sessions = {label: _session(path, ort_config) for label, path in paths.items()}
    timing = latency.measure_interleaved(sessions, {label: feed for label in sessions}, warmup=3, runs=runs)
    dense = timing["dense"]
    return {label: {"median_ms": stats.median_ms, "speedup": latency.speedup(dense, stats)}
            for label, stats in timing.items()}


# ---------------------------------------------------------------------------------------------
# Torch-Pruning side


def _tp_prune(model, example, method: str, ratio: float, ignored: list, root_types: list,
              groups: list[dict] | None, taylor_loss=None, round_to: int = 1) -> None:
    """Prune `model` in place with Torch-Pruning's documented API (MetaPruner, local ranking)."""
    import torch_pruning as tp

    importance = {"tp l1": lambda: tp.importance.MagnitudeImportance(p=1),
                  "tp l2": lambda: tp.importance.MagnitudeImportance(p=2),
                  "tp taylor": lambda: tp.importance.TaylorImportance()}[method]()
    pruner = tp.pruner.MetaPruner(
        model, example, importance=importance, pruning_ratio=ratio,
        pruning_ratio_dict=tp_ratio_dict(groups, ratio, round_to) if groups is not None else None,
        # matched budgets carry onnxprune's rounding in the ratios; natively Torch-Pruning rounds itself
        round_to=round_to if groups is None and round_to > 1 else None,
        ignored_layers=ignored, root_module_types=root_types, global_pruning=False)
    if method == "tp taylor":
        model.zero_grad()
        taylor_loss(model)  # accumulates .grad over the calibration data
    pruner.step()
    model.zero_grad(set_to_none=True)


def _tp_kept(model, groups: list[dict]) -> dict:
    """Channels of each Torch-Pruning group after pruning (root module's outputs / grouping)."""
    from torch import nn

    names = dict(model.named_modules())
    kept = 0
    for group in groups:
        module = names[group["name"]]
        width = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        kept += width // group["groups"]
    return {"spaces": len(groups), "channels": sum(g["size"] for g in groups), "kept": kept}






def _map_groups(groups: list[dict], target) -> list[dict]:
    """The same groups with their roots looked up by name in another copy of the model."""
    modules = dict(target.named_modules())
    return [{**group, "root": modules[group["name"]]} for group in groups]




def compare(case: Case, work: Path, ratios: list[float], native: bool, latency_runs: int,
            ort_config: OrtConfig, round_to: int = 1) -> dict:
    """Every method at every ratio on one model; every result is an ONNX file measured alike."""
    import torch

    import onnxprune

    reference = _outputs(case.dense_path, case.feed, ort_config)
    # the dense model passed through onnxprune with nothing removed: what onnxprune's rewriting
    # alone (constants lifted to initializers, shapes re-inferred) does to ORT's speed
    noop = work / f"{case.label}_noop.onnx"
    onnxprune.prune(case.dense_path, noop, onnxprune.PruneOptions(structured=0.0, validate=False))
    reference_latency = []
    probe = copy.deepcopy(case.base)
    groups = tp_groups(probe, case.example, case.ignored(probe), case.roots)
    check_feed = {name: value[:8] for name, value in case.feed.items()}
    rows = []
    for ratio in ratios:
        paths = {"dense": case.dense_path, NOOP: noop}
        for method in ONNXPRUNE_METHODS + TP_METHODS:
            path = work / f"{case.label}_{ratio}_{method.replace(' ', '_').replace('+', '_')}.onnx"
            row = {"ratio": ratio, "method": method}
            started = time.perf_counter()
            if method in ONNXPRUNE_METHODS:
                row.update(_onnxprune(case.dense_path, path, method, ratio, case.calib, round_to))
                row["prune_s"] = time.perf_counter() - started
            else:
                model = copy.deepcopy(case.base)
                mine = _map_groups(groups, model)
                _tp_prune(model, case.example, method, ratio, case.ignored(model), case.roots,
                          None if native else mine, case.taylor_loss, round_to)
                row["prune_s"] = time.perf_counter() - started
                row.update(_tp_kept(model, mine))
                case.export(model, path)
                with torch.no_grad():  # the export is faithful: torch and ORT agree on the pruned model
                    out = model(*(torch.from_numpy(v) for v in check_feed.values()))
                out = [out] if isinstance(out, torch.Tensor) else list(out)
                got = _outputs(path, check_feed, ort_config)
                row["export_max_abs_diff"] = max(float(np.max(np.abs(a.numpy() - b))) for a, b in zip(out, got))
            paths[method] = path
            row.update(_stats(path, case.shapes))
            row.update(_agreement(reference, _outputs(path, case.feed, ort_config), case.classifier))
            rows.append(row)
        if latency_runs:
            timing = _latency(paths, case.latency_feed, latency_runs, ort_config)
            reference_latency.append({"ratio": ratio, "dense_ms": timing["dense"]["median_ms"],
                                      "noop_ms": timing[NOOP]["median_ms"], "noop_speedup": timing[NOOP]["speedup"]})
            for row in rows[-(len(paths) - 2):]:
                row.update(latency_ms=timing[row["method"]]["median_ms"],
                           latency_ms_dense=timing["dense"]["median_ms"], speedup=timing[row["method"]]["speedup"])
    budgets = [{"ratio": ratio, "channels": sum(g["size"] for g in groups),
                "onnxprune_kept": sum(g["size"] - removal_count(g["size"], ratio, round_to) for g in groups),
                "tp_native_kept": sum(tp_native_kept(g["size"], ratio, round_to) for g in groups)}
               for ratio in ratios]
    return {"dense": _stats(case.dense_path, case.shapes), "rows": rows, "reference_latency": reference_latency,
            "budgets": budgets,
            "tp_groups": [{k: v for k, v in g.items() if k != "root"} for g in groups]}


# ---------------------------------------------------------------------------------------------
# the models








# ---------------------------------------------------------------------------------------------
# report


def _print(label: str, result: dict, info: dict, classifier: bool) -> None:
    dense = result["dense"]
    print(f"\n{label}: dense {dense['params']:,} params, {dense['flops'] / 1e6:.1f} MFLOPs; "
          f"eval {info['eval']}; latency batch {info['latency_batch']}")
    headers = ["r", "method", "kept/chan", "params", "MFLOPs", "mean cos", "min cos"]
    headers += ["top-1 agr"] if classifier else []
    headers += ["ms", "speedup", "prune s"]
    rows = []
    for row in result["rows"]:
        cells = [row["ratio"], row["method"], f"{row['kept']}/{row['channels']}", row["params"],
                 row["flops"] / 1e6, row["mean_cosine"], row["min_cosine"]]
        cells += [row["top1_agreement"]] if classifier else []
        cells += [row.get("latency_ms"), row.get("speedup"), row["prune_s"]]
        rows.append(cells)
    print(table(headers, rows))
    kept = [f"r {b['ratio']}: {b['onnxprune_kept']} / {b['tp_native_kept']} of {b['channels']}"
            for b in result["budgets"]]
    print("channels kept, onnxprune's count (given to Torch-Pruning) / Torch-Pruning's own with the plain ratio: "
          + ", ".join(kept))
    if result.get("reference_latency"):
        print("ORT latency per ratio's interleaved run, dense / dense through onnxprune with nothing removed: "
              + ", ".join(f"r {ref['ratio']}: {ref['dense_ms']:.2f} / {ref['noop_ms']:.2f} ms"
                          for ref in result["reference_latency"]))
    for note in info.get("notes", []):
        print("note:", note)


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default="0.2,0.3,0.4", help="comma-separated channel ratios (default 0.2,0.3,0.4)")
    parser.add_argument("--cnn-low-ratios", default="0.05,0.1",
                        help="extra ratios for the CNNs only (default 0.05,0.1; '' for none): their weights are "
                             "seeded random, not trained, and at 0.2+ every method's outputs agree with the dense "
                             "model's at about chance level")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--models", default=",".join(CNNS), help="CNNs to run (default resnet,mobile,yolo)")
    parser.add_argument("--tp-native-rounding", action="store_true",
                        help="give Torch-Pruning the plain ratio (it then removes size - int(size*(1-r)) channels "
                             "per group, one more than onnxprune's floor(r*size) when r*size is fractional)")
    parser.add_argument("--round-to", type=int, default=1,
                        help="keep channel counts multiples of N (onnxprune --round-to: kept rounded up; matched "
                             "budgets give Torch-Pruning the same counts, --tp-native-rounding its round_to, which "
                             "rounds kept down)")
    parser.add_argument("--latency-runs", type=int, default=20, help="timed ORT runs per model (0: no latency)")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1; 0: ORT's default)")
    parser.add_argument("--ort-disabled-optimizers", default="",
                        help="comma-separated ORT graph transformers to turn off in every session, e.g. "
                             "SkipLayerNormFusion (see bench/README.md)")
    args = parser.parse_args(argv)
    try:
        import torch
        import torch_pruning
    except ImportError as exc:
        print(f"bench.torch_pruning: skipped, {exc.name or 'torch_pruning'} is not importable "
              f"(pip install torch-pruning -c constraints.txt)")
        return
    torch.manual_seed(0)
    ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    cnn_ratios = sorted({float(r) for r in args.cnn_low_ratios.split(",") if r.strip()} | set(ratios))
    threads = args.threads or None
    ort_config = OrtConfig(threads, tuple(n for n in args.ort_disabled_optimizers.split(",") if n))
    results: dict = {
        "machine": {**machine_facts(), "torch": torch.__version__, "torch_pruning": _version("torch-pruning"),
                    "torch_pruning_module_version": torch_pruning.__version__},
        "ratios": ratios,
        "round_to": args.round_to,
        "cnn_ratios": cnn_ratios,
        "budget": ("Torch-Pruning's own rounding (--tp-native-rounding)" if args.tp_native_rounding else
                   "matched: Torch-Pruning gets pruning_ratio_dict[root] = (k - 0.5) / size so it removes "
                   "k = floor(r * size) channels per group, onnxprune's count"),
        "taylor": {"why_not_mse": WHY_NOT_MSE, **TAYLOR_LOSS},
        "methods": {
            "onnxprune l1": "PruneOptions(structured=r, criterion='l1'), no data",
            "onnxprune wanda": "PruneOptions(structured=r, calib=..., compensate=False): wanda activation scores",
            "onnxprune wanda+comp": "PruneOptions(structured=r, calib=...): wanda + least-squares compensation",
            "tp l1": "MetaPruner(importance=MagnitudeImportance(p=1), global_pruning=False)",
            "tp l2": "MetaPruner(importance=MagnitudeImportance(p=2), global_pruning=False)",
            "tp taylor": "MetaPruner(importance=TaylorImportance(), global_pruning=False), "
                         "gradients of the loss in 'taylor'",
        },
        "latency": {"runs": args.latency_runs, "threads": threads, "spinning": False,
                    "disabled_optimizers": list(ort_config.disabled_optimizers),
                    "noop": "'onnxprune r=0': the dense model through onnxprune.prune(structured=0.0), "
                            "timed in the same interleaved runs"},
    }
    print(f"Torch-Pruning {_version('torch-pruning')} vs onnxprune at ratios {ratios} (CNNs {cnn_ratios}); budgets "
          f"{'Torch-Pruning native' if args.tp_native_rounding else 'matched channel for channel'}; "
          f"ORT threads {threads or 'default'}"
          + (f", disabled ORT optimizers {','.join(ort_config.disabled_optimizers)}"
             if ort_config.disabled_optimizers else ""))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as folder:
        work = Path(folder)
        jobs = [] if args.skip_minilm else ["minilm"]
        jobs += [] if args.skip_cnn else [n for n in args.models.split(",") if n]
        for name in jobs:
            t0 = time.perf_counter()
            case, info = minilm_case(work) if name == "minilm" else cnn_case(name, work)
            result = compare(case, work, ratios if name == "minilm" else cnn_ratios, args.tp_native_rounding,
                             args.latency_runs, ort_config, args.round_to)
            result.update(info, seconds=time.perf_counter() - t0)
            results[name] = result
            title = "all-MiniLM-L6-v2 (FFN intermediate channels only)" if name == "minilm" else name
            _print(title, result, info, case.classifier)
            del case
    results["seconds"] = time.perf_counter() - started
    print(f"\ntotal {results['seconds']:.0f} s; wrote {write_results('torch_pruning.json', results)}")


if __name__ == "__main__":
    main()
