"""Fine-grained sparsity: zero weights in TensorRT's N:M pattern (2:4 by default) or unstructured.

The zeros are the only signal TensorRT sees (nothing in ONNX marks a sparse weight), so every
eligible weight is written to satisfy the pattern exactly along TensorRT's axis, the rest is left
untouched, and the model's metadata lists what was made sparse.

Criteria: magnitude |W|; Wanda |W| * ||X_j|| (the input channel's norm over calibration data);
SparseGPT (OBS with H = X^T X, error propagated to the columns not yet pruned). With calibration
data, layers are processed in waves along the graph: a layer's statistics are captured on the model
whose earlier layers are already sparse, as SparseGPT and Wanda do block by block (the capture runs
block by block too, calib/stages.py, so each wave costs the blocks it changed, not the whole model).

A decoder LLM's LM head and embedding tables stay dense unless asked (`lm_head=True`,
--sparse-lm-head), as the Wanda and SparseGPT papers do; asked, a weight tied between the embedding
lookup and the LM head is made sparse in place (the lookup reads the same table, now sparse), so
the file never holds it twice.
"""

from __future__ import annotations

import fnmatch
import json

import numpy as np
import onnx

from onnxprune.calib.data import CalibrationData
from onnxprune.calib.statistics import collect_stats
from onnxprune.deps.decoder import find_decoder_parts
from onnxprune.errors import InvalidOptionError, ValidationError
from onnxprune.io.model import Model
from onnxprune.pipeline import Context
from onnxprune.report import progress
from onnxprune.sparsity import METADATA_KEY
from onnxprune.sparsity.check import pattern_status
from onnxprune.sparsity.eligibility import Candidate, apply_policy, find_candidates
from onnxprune.sparsity.hessian import collect_grams, conv_rows, conv_unrows
from onnxprune.sparsity.pattern import (
    Pattern,
    from_rows,
    nm_mask,
    satisfies,
    to_rows,
    unstructured_mask,
)
from onnxprune.sparsity.solvers import row_unstructured_mask, sparsegpt

SPARSE_CRITERIA = ("magnitude", "wanda", "sparsegpt")
# SparseGPT's Hessian X^T X [K, K] wants many more rows than K. SmolLM2-135M, 50% unstructured, held-out
# perplexity vs dense with 128-token windows (bench/results/llm_sgpt_w*.json): 2048 rows (1.3 per input
# of down_proj's 1536) x1.53, 4096 (2.7) x1.38, 8192 x1.38; the SparseGPT paper uses 128 x 2048 tokens.
# More damping than the reference's 0.01 is no substitute: 0.1 gave x1.45 at 2048 rows but x1.42 at 4096.
ROWS_PER_INPUT = 4


def sparse_criterion(criterion: str | None, calibrated: bool) -> str:
    """The --criterion name in sparse terms: SparseGPT by default with data, magnitude without."""
    if criterion is None:
        return "sparsegpt" if calibrated else "magnitude"
    aliases = {"l1": "magnitude", "l2": "magnitude", "magnitude": "magnitude", "wanda": "wanda",
               "sparsegpt": "sparsegpt", "obs": "sparsegpt"}
    if criterion not in aliases:
        raise InvalidOptionError(f"--criterion '{criterion}' does not apply to --sparse "
                                 f"(choose from {', '.join(SPARSE_CRITERIA)})")
    return aliases[criterion]


def build_lines(path: str, pattern: Pattern) -> dict[str, str]:
    """Ready-to-run commands that build a TensorRT engine using the sparse weights."""
    if not pattern.structured or (pattern.keep, pattern.group) != (2, 4):
        return {"note": "TensorRT's sparse tensor cores run 2:4 only; this pattern speeds up nothing there"}
    return {
        "trtexec": f"trtexec --onnx={path} --sparsity=enable --fp16",
        "polygraphy": f"polygraphy run {path} --trt --fp16 --sparse-weights",
        "onnxruntime_tensorrt_ep": (
            f"onnxruntime.InferenceSession('{path}', providers=[('TensorrtExecutionProvider', "
            "{'trt_fp16_enable': True, 'trt_sparsity_enable': True})])"),
    }


class SparsifyWeights:
    """Rewrite pass: every eligible weight gets the pattern, chosen by the criterion."""

    name = "sparsify"

    def __init__(self, pattern: Pattern, criterion: str = "magnitude", calibration: CalibrationData | None = None,
                 exclude: list[str] | None = None, min_params: int = 0, global_ranking: bool = False,
                 any_shape: bool = False, lm_head: bool = False):
        if criterion != "magnitude" and calibration is None:
            raise InvalidOptionError(f"--criterion {criterion} with --sparse reads activations: give --calib")
        self.pattern = pattern
        self.criterion = criterion
        self.calibration = calibration
        self.exclude = list(exclude or [])
        self.min_params = min_params
        self.any_shape = any_shape  # also weights TensorRT's sparse tiles cannot speed up (eligibility.py)
        self.global_ranking = global_ranking
        self.lm_head = lm_head
        self._used: dict[str, str] = {}  # weight -> criterion actually applied (fallbacks differ)
        self._fewest_rows: tuple[int, int] | None = None  # SparseGPT: (rows, inputs) of the thinnest Hessian

    def run(self, context: Context) -> None:
        model = context.model
        _check_exclude(model, self.exclude)
        candidates = find_candidates(model, self.pattern.group if self.pattern.structured else 1)
        apply_policy(model, candidates, self.exclude, self.min_params, self.any_shape)
        if not self.lm_head:
            parts = find_decoder_parts(model)
            _keep_vocabulary_dense(candidates, parts.head_weights | set(parts.embeddings))
        targets = [c for c in candidates if c.eligible]
        if not targets:
            context.report.setdefault("notes", []).append(
                f"--sparse {self.pattern}: no weight is eligible ({len(candidates)} Conv/MatMul/Gemm weight(s) "
                "checked; see the report's sparsity.weights for why): nothing was made sparse")
        notes: dict[str, str] = {}
        self._used = {}
        for candidate in targets:
            _separate_dense_readers(model, candidate, notes, in_place_lookups=self.lm_head)
        if self.global_ranking and not self.pattern.structured and self.criterion == "magnitude":
            self._global_magnitude(model, targets)
        else:
            waves = _waves(model, targets)
            with progress.bar(context.log, f"sparsity ({self.criterion})", total=sum(map(len, waves)),
                              unit="weight") as bar:
                for wave in waves:
                    self._sparsify_wave(model, wave, notes, context, bar)
        _annotate(model, self.pattern, self.criterion, targets)
        if self._fewest_rows and self._fewest_rows[0] < ROWS_PER_INPUT * self._fewest_rows[1]:
            rows, columns = self._fewest_rows
            note = (f"SparseGPT estimated X^T X of a weight with {columns} inputs from {rows} calibration rows "
                    f"(tokens or positions); below {ROWS_PER_INPUT} rows per input the estimate is noisy and "
                    "the pruned weights fit the calibration data rather than the task: give more --calib data")
            context.log(f"note: {note}")
            context.report.setdefault("notes", []).append(note)
        context.invalidate()
        context.report["sparsity"] = self._report(model, candidates, notes, context)

    # ------------------------------------------------------------------ criteria

    def _sparsify_wave(self, model: Model, wave: list[Candidate], notes: dict[str, str], context: Context,
                       bar: progress.NullBar | None = None) -> None:
        bar = bar or progress.NullBar()
        plans = {c.name: _plan(model, c, self.criterion) for c in wave}
        for name, plan in plans.items():
            self._used[name] = plan.criterion
            if plan.note:
                notes[name] = f"{notes[name]}; {plan.note}" if name in notes else plan.note
        norms = {p.activation: p.activation_axis for p in plans.values() if p.criterion == "wanda"}
        stats = collect_stats(model, norms, self.calibration) if norms else {}
        hessians = {name: p.gram_request() for name, p in plans.items() if p.criterion == "sparsegpt"}
        rows_seen: dict[str, int] = {}
        grams = collect_grams(model, hessians, self.calibration, context.log, rows_seen) if hessians else {}
        for name, rows in rows_seen.items():
            columns = grams[name].shape[0]
            self._fewest_rows = min(self._fewest_rows or (rows, columns), (rows, columns),
                                    key=lambda pair: pair[0] / pair[1])
        for candidate in wave:
            plan = plans[candidate.name]
            original = model.weight(candidate.name)
            rows = plan.rows(np.asarray(original, dtype=np.float64))
            if plan.criterion == "sparsegpt":
                try:
                    new_rows = sparsegpt(rows, grams[candidate.name], self.pattern, log=context.log)
                except ValueError as exc:  # X^T X not positive definite even with heavy damping
                    raise ValidationError(f"SparseGPT on weight '{candidate.name}': {exc}") from None
            else:
                scores = np.abs(rows)
                if plan.criterion == "wanda":
                    scores = scores * plan.column_scale(stats[plan.activation].norm)
                new_rows = rows * self._mask(scores, plan.criterion)
            weight = plan.unrows(new_rows).astype(original.dtype)
            model.set_weight(candidate.name, np.ascontiguousarray(weight))
            bar.update()

    def _mask(self, scores: np.ndarray, criterion: str) -> np.ndarray:
        if self.pattern.structured:
            return nm_mask(scores, self.pattern.keep, self.pattern.group)
        if criterion == "wanda":  # Wanda compares weights within one output row
            return row_unstructured_mask(scores, self.pattern.ratio)
        return unstructured_mask(scores, self.pattern.ratio)

    def _global_magnitude(self, model: Model, targets: list[Candidate]) -> None:
        """One threshold over all eligible weights: layers with small weights lose more."""
        if not targets:
            return
        magnitudes = np.concatenate([np.abs(model.weight(c.name).astype(np.float64)).reshape(-1) for c in targets])
        drop = round(self.pattern.ratio * magnitudes.size)
        if drop == 0:
            return
        threshold = np.partition(magnitudes, drop - 1)[drop - 1]
        # Ties at the threshold: drop just enough of them, in order, so the count is exact.
        budget = drop - int((magnitudes < threshold).sum())
        for candidate in targets:
            original = model.weight(candidate.name)
            magnitude = np.abs(original.astype(np.float64))
            keep = magnitude > threshold
            ties = np.flatnonzero(magnitude.reshape(-1) == threshold)
            taken = ties[:budget]
            budget -= len(taken)
            keep_flat = keep.reshape(-1)
            keep_flat[np.setdiff1d(ties, taken)] = True
            model.set_weight(candidate.name, np.ascontiguousarray(np.where(keep, original, 0).astype(original.dtype)))

    # ------------------------------------------------------------------ report

    def _report(self, model: Model, candidates: list[Candidate], notes: dict[str, str], context: Context) -> dict:
        weights, sparse_params = [], 0
        for candidate in candidates:
            entry = candidate.to_dict()
            if candidate.eligible:
                entry.update(pattern_status(model.weight(candidate.name), candidate.axis, self.pattern))
                entry["criterion"] = self._used.get(candidate.name, "magnitude")
                if candidate.name in notes:
                    entry["note"] = notes[candidate.name]
                sparse_params += candidate.size
            weights.append(entry)
        total = sum(w.numpy().size for w in model.weights.values())
        return {
            "pattern": str(self.pattern),
            "criterion": self.criterion,
            "global": self.global_ranking and not self.pattern.structured and self.criterion == "magnitude",
            "weights": weights,
            "sparse_weights": sum(1 for c in candidates if c.eligible),
            "ineligible_weights": sum(1 for c in candidates if not c.eligible),
            "sparse_params": sparse_params,
            "total_params": int(total),
            "build": build_lines(str(context.report.get("output", "out.onnx")), self.pattern),
        }


class _Plan:
    """How one weight is scored: its [rows, K] layout and the activation its K axis reads."""

    def __init__(self, candidate: Candidate, criterion: str, activation: str | None, activation_axis: int,
                 node: onnx.NodeProto, note: str | None = None):
        self.candidate = candidate
        self.criterion = criterion
        self.activation = activation
        self.activation_axis = activation_axis
        self.node = node
        self.note = note
        # The [O, *k, C] layout needs the weight as Conv reads it; one stored transposed is scored in rows.
        self.conv = node.op_type == "Conv" and "Transpose" not in candidate.uses[0].via

    def rows(self, weight: np.ndarray) -> np.ndarray:
        """[outputs, K]: for Conv [O, C, *k] -> [O, *k, C] flattened (TensorRT's axis, groups of C)."""
        if self.conv:
            return conv_rows(weight)
        return to_rows(weight, self.candidate.axis)

    def unrows(self, rows: np.ndarray) -> np.ndarray:
        if self.conv:
            return conv_unrows(rows, self.candidate.shape)
        return from_rows(rows, self.candidate.shape, self.candidate.axis)

    def column_scale(self, norm: np.ndarray) -> np.ndarray:
        """Per-column activation norms in the rows layout (grouped convs: each row its group's)."""
        if not self.conv:
            return norm[None, :]
        out_channels, in_per_group = self.candidate.shape[0], self.candidate.shape[1]
        positions = int(np.prod(self.candidate.shape[2:], dtype=np.int64))
        groups = norm.size // in_per_group
        per_group = norm.reshape(groups, in_per_group)[np.arange(out_channels) // (out_channels // groups)]
        return np.tile(per_group, (1, positions))

    def gram_request(self):
        from onnxprune.sparsity.hessian import ConvGeometry, GramRequest

        geometry = ConvGeometry.from_node(self.node, self.candidate.shape) if self.conv else None
        return GramRequest(self.activation, self.activation_axis, geometry)


def _activation_of(node: onnx.NodeProto, operand: int) -> tuple[str, int]:
    """The tensor the weight's K axis meets, and that tensor's K axis."""
    if node.op_type == "Conv":
        return node.input[0], 1
    attrs = {a.name: a.i for a in node.attribute}
    if node.op_type == "Gemm":
        if operand == 1:
            return node.input[0], 0 if attrs.get("transA", 0) else 1
        return node.input[1], 1 if attrs.get("transB", 0) else 0
    return (node.input[0], -1) if operand == 1 else (node.input[1], -2)


def _plan(model: Model, candidate: Candidate, criterion: str) -> _Plan:
    use = candidate.uses[0]
    activation, axis = _activation_of(use.node, use.operand)
    if criterion == "magnitude":
        return _Plan(candidate, criterion, None, 0, use.node)
    reason = None
    if len(candidate.uses) > 1:
        reason = f"read by {len(candidate.uses)} nodes: no single input to score against"
    elif model.is_weight(activation):
        reason = "both operands are constants"
    elif use.node.op_type == "Conv" and "Transpose" in use.via and _conv_groups(use.node) > 1:
        reason = "grouped Conv weight stored transposed"
    elif use.node.op_type == "Conv" and criterion == "sparsegpt" and (
            _conv_groups(use.node) > 1 or "Transpose" in use.via):
        return _Plan(candidate, "wanda", activation, axis, use.node,
                     note="Wanda scores: SparseGPT takes Conv weights stored [O, C, k] with one group")
    if reason:
        return _Plan(candidate, "magnitude", None, 0, use.node, note=f"magnitude: {reason}")
    return _Plan(candidate, criterion, activation, axis, use.node)


def _conv_groups(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _waves(model: Model, targets: list[Candidate]) -> list[list[Candidate]]:
    """Targets grouped so that no target's input depends on another target of its wave or a later one."""
    first_use = {id(c.uses[0].node): c for c in targets}
    sparse_nodes = {id(use.node) for c in targets for use in c.uses}
    depth: dict[str, int] = {}
    waves: dict[int, list[Candidate]] = {}
    for node in model.graph.node:
        level = max((depth.get(name, 0) for name in node.input if name), default=0)
        if id(node) in first_use:
            waves.setdefault(level, []).append(first_use[id(node)])
        if id(node) in sparse_nodes:
            level += 1
        for name in node.output:
            depth[name] = level
    return [waves[level] for level in sorted(waves)]


def _keep_vocabulary_dense(candidates: list[Candidate], weights: set[str]) -> None:
    for candidate in candidates:
        if candidate.eligible and candidate.name in weights:
            candidate.reason = ("LM head / embedding table (the projection to the vocabulary): kept dense, as the "
                                "LLM pruning literature does; --sparse-lm-head includes it")


def _lookup_only(model: Model, node: onnx.NodeProto, tensor: str) -> bool:
    """`node` reads `tensor` only as an embedding lookup's table (Gather data), maybe through a
    Transpose/Cast first: such a reader takes the sparse table as well as the dense one."""
    if node.op_type == "Gather":
        return list(node.input).index(tensor) == 0 and tensor not in node.input[1:]
    if node.op_type in ("Transpose", "Cast", "Identity"):
        readers = model.consumers(node.output[0])
        return bool(readers) and all(_lookup_only(model, reader, node.output[0]) for reader, _ in readers)
    return False


def _separate_dense_readers(model: Model, candidate: Candidate, notes: dict[str, str],
                            in_place_lookups: bool = False) -> None:
    """A weight that other ops also read gets a copy for its sparse-math uses, so those ops keep the
    dense values. Not so for a tied embedding (Gather and the LM head's MatMul) when the LM head was
    asked for (`in_place_lookups`): the lookup reads the sparse table too, and the file holds one copy."""
    heads = []
    for use in candidate.uses:
        node, tensor = use.node, use.node.input[use.operand]
        while tensor != candidate.name:  # walk the Transpose/Cast/Q/DQ chain back to the weight
            node = model.producer(tensor)
            tensor = node.input[0]
        heads.append(node)
    others = [n for n, _ in model.consumers(candidate.name) if all(n is not head for head in heads)]
    if not others and candidate.name not in model.output_names:
        return
    if in_place_lookups and candidate.name not in model.output_names and all(
            _lookup_only(model, node, candidate.name) for node in others):
        notes[candidate.name] = "tied with an embedding lookup, which reads the sparse table too (one copy)"
        return
    copy = model.add_weight(f"{candidate.name}_sparse", np.array(model.weight(candidate.name)))
    for head in heads:
        for index, name in enumerate(head.input):
            if name == candidate.name:
                head.input[index] = copy
    model.invalidate()
    reader = model.node_label(others[0]) if others else "a graph output"
    notes[copy] = f"copy of '{candidate.name}', which {reader} also reads and keeps dense"
    candidate.name = copy


def refresh_annotation(model: Model) -> str | None:
    """After other rewrites (channels removed from a 2:4 weight shift its groups), keep only the listed
    weights that still follow the pattern; returns a note when some no longer do."""
    entry = next((e for e in model.proto.metadata_props if e.key == METADATA_KEY), None)
    if entry is None:
        return None
    try:
        value = json.loads(entry.value)
        pattern = Pattern.parse(value["pattern"])
        listed = [w for w in value["weights"] if isinstance(w, dict)]
    except (ValueError, KeyError, TypeError, InvalidOptionError):
        return None
    if not pattern.structured:
        return None
    still = [w for w in listed if model.is_weight(w.get("name", ""))
             and satisfies(to_rows(model.weight(w["name"]), int(w["axis"])), pattern.keep, pattern.group)]
    if len(still) == len(listed):
        return None
    value["weights"] = still
    entry.value = json.dumps(value, separators=(",", ":"))
    return (f"{len(listed) - len(still)} weight(s) annotated {pattern} no longer follow it after this rewrite; "
            f"run with --sparse {pattern} again to restore it")


def _check_exclude(model: Model, patterns: list[str]) -> None:
    names = [node.name for node in model.graph.node]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise InvalidOptionError(f"--exclude '{pattern}' matches no node name in the model")


def _annotate(model: Model, pattern: Pattern, criterion: str, targets: list[Candidate]) -> None:
    """metadata_props['onnxprune.sparsity']: the pattern and the weights that carry it (JSON)."""
    props = model.proto.metadata_props
    kept = [entry for entry in props if entry.key != METADATA_KEY]
    del props[:]
    props.extend(kept)
    value = {"pattern": str(pattern), "criterion": criterion,
             "weights": [{"name": c.name, "axis": c.axis} for c in targets]}
    props.append(onnx.StringStringEntryProto(key=METADATA_KEY, value=json.dumps(value, separators=(",", ":"))))
