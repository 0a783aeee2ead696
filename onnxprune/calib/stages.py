"""Block-by-block calibration: the model cut into stages along its residual stream, each stage run as a
small ONNX Runtime session on the cached outputs of the stages before it.

Why: capturing a tensor deep in a decoder through the model cut at that tensor reruns every earlier
layer for every request. SparseGPT and compensation change weights layer after layer and need the
next layer's input on the changed model, which made calibration quadratic in depth (over 15 minutes
on SmolLM2-135M). Here a request costs the stages from the first one whose weights changed up to the
one producing the tensor; one stage's weights sit in a session at a time; and only the tensors that
cross from a stage into later ones are kept (for a decoder: the residual stream, the attention mask,
the rotary tables), so one block's activations are held at a time, which is also how a 7B model's
calibration fits in 24 GB.

Cuts are found from the structure alone: after a node at which exactly one *state* tensor (one
downstream of a node that multiplies data by a weight matrix) is live, i.e. produced at or before the
node and read after it (or several that one node produced: a fused SkipSimplifiedLayerNormalization
hands on the residual sum and its normalized copy); masks, positions and rotary tables computed from
the inputs are side inputs. In a pre-norm transformer that is the residual stream after each residual
Add; in a plain CNN, every layer boundary. Every stage holds at least one such node. A model without
such a cut is one stage, which is the whole-model capture this replaces.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..check import runtime
from ..io.model import Model, subgraph_outer_inputs
from ..report import progress

# A stage proto bigger than this goes through a temporary file with external data (protobuf's 2 GB cap).
INLINE_BYTES = 1_500_000_000
# A stage of more weight layers than LONG_STAGE is also cut where at most FEW_STATES states are live.
LONG_STAGE, FEW_STATES = 16, 4


@dataclass
class Stage:
    index: int
    nodes: list[onnx.NodeProto]
    reads: list[str]  # tensors it reads from graph inputs or earlier stages
    crosses: list[str]  # tensors it produces that later stages read
    weights: list[str]
    produced: set[str] = field(default_factory=set)


def _reads(node: onnx.NodeProto) -> list[str]:
    return [name for name in node.input if name] + sorted(subgraph_outer_inputs(node))


# Ops that multiply data by a weight matrix. Lookups into a table (an embedding Gather, a rotary cache
# Sliced to the sequence length) read a weight matrix too but compute nothing with it: their outputs
# are side inputs of every block, not the state that flows through the blocks.
_COMPUTE = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "MatMulInteger", "ConvInteger", "QLinearMatMul",
            "QLinearConv", "LSTM", "GRU", "RNN", "MatMulNBits", "FusedMatMul", "FusedConv", "QGemm",
            "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "Attention", "MultiHeadAttention",
            "GroupQueryAttention", "PackedAttention", "DecoderMaskedMultiHeadAttention")


# Ops whose outputs may be sequences or optionals: the cache holds tensors, so no cut is made while
# one of their outputs is still to be read (control flow may return either).
_MAYBE_NOT_TENSOR = ("SequenceConstruct", "SequenceInsert", "SequenceErase", "SequenceEmpty", "SplitToSequence",
                     "SequenceMap", "Optional", "OptionalGetElement", "If", "Loop", "Scan")


def _compute_nodes(model: Model, nodes: list[onnx.NodeProto], reads: list[list[str]]) -> list[bool]:
    """Nodes that multiply data by a weight matrix (MatMul, Gemm, Conv, attention and quantized
    contrib ops...), the matrix read directly or through constant-only ops (Transpose, DequantizeLinear)."""
    const = set(model.weights)
    matrices = {name for name, weight in model.weights.items() if len(weight.shape) >= 2 and weight.data_type not in (
        TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL)}
    flags = []
    for node, names in zip(nodes, reads):
        constant = bool(names) and all(name in const for name in names)
        if constant:
            const.update(name for name in node.output if name)
            if any(name in matrices for name in names):
                matrices.update(name for name in node.output if name)
        flags.append(not constant and node.op_type in _COMPUTE and any(name in matrices for name in names))
    return flags


def plan_stages(model: Model) -> list[Stage]:
    """The graph's nodes (in their topological order) split at single-state cuts (module docstring)."""
    nodes = list(model.graph.node)
    reads = [_reads(node) for node in nodes]
    last_read: dict[str, int] = {}
    for position, names in enumerate(reads):
        for name in names:
            last_read[name] = position
    state: set[str] = set()
    matrix_node = _compute_nodes(model, nodes, reads)
    live: dict[str, int] = {}  # live state tensor -> position of the node that produced it
    risky: set[str] = set()  # live outputs of _MAYBE_NOT_TENSOR ops
    cuts, since_matrix = [], False
    few_cuts, since_few = [], False  # cuts with a few states live, for the stages too long otherwise
    for position, node in enumerate(nodes):
        if matrix_node[position] or any(name in state for name in reads[position]):
            state.update(name for name in node.output if name)
        for name in reads[position]:
            if last_read.get(name) == position:
                live.pop(name, None)
                risky.discard(name)
        later = [name for name in node.output if name and last_read.get(name, -1) > position]
        live.update((name, position) for name in later if name in state)
        if node.op_type in _MAYBE_NOT_TENSOR:
            risky.update(later)
        since_matrix |= matrix_node[position]
        # One state, possibly in several tensors of one node: a fused Skip*LayerNormalization hands on
        # both the residual sum and its normalized copy (ORT-optimized and GenAI decoders).
        if since_matrix and len(set(live.values())) == 1 and not risky and position < len(nodes) - 1:
            cuts.append(position + 1)
            since_matrix = False
        since_few |= matrix_node[position]
        if since_few and 1 <= len(set(live.values())) <= FEW_STATES and not risky and position < len(nodes) - 1:
            few_cuts.append(position + 1)
            since_few = False
    cuts = _split_long_stages(cuts, few_cuts, matrix_node)
    bounds = [0, *cuts, len(nodes)]
    stages = []
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        produced = {name for node in nodes[start:end] for name in node.output if name}
        stage_reads = {name for names in reads[start:end] for name in names}
        weights = sorted(name for name in stage_reads if model.is_weight(name))
        outside = sorted(name for name in stage_reads - produced if not model.is_weight(name))
        crosses = sorted(name for name in produced if last_read.get(name, -1) >= end)
        stages.append(Stage(index, nodes[start:end], outside, crosses, weights, produced))
    return stages


def _split_long_stages(cuts: list[int], few_cuts: list[int], matrix_node: list[bool]) -> list[int]:
    """`cuts` with the few-state cuts added inside every stage of more than LONG_STAGE weight layers.

    A detector's feature pyramid keeps three or four scales live from the backbone to the heads, so it
    has no single-state cut there: PicoDet's neck and heads were one stage of 499 nodes, rerun for every
    compensation request. Caching a few live tensors is cheap for one image; a decoder's layers stay as
    they were (they are short), so their activations are still held one block at a time."""
    bounds = [0, *cuts, len(matrix_node)]
    added = []
    for start, end in itertools.pairwise(bounds):
        if sum(matrix_node[start:end]) > LONG_STAGE:
            added += [cut for cut in few_cuts if start < cut < end]
    return sorted({*cuts, *added})


def structure_key(model: Model) -> str:
    """Changes when nodes, their wiring or attributes change (not when weight values do)."""
    digest = hashlib.blake2b(digest_size=16)
    for node in model.graph.node:
        digest.update(node.SerializeToString())
    digest.update(repr(sorted(model.input_names)).encode())
    return digest.hexdigest()


def _value_info(name: str, array: np.ndarray) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), [None] * array.ndim)


class StagedRunner:
    """Runs one model's stages on fixed feeds, keeping the tensors that cross stages.

    Cached crosses stay valid while the weights of every stage up to theirs are the same arrays
    (weights are replaced, never written in place: Model.set_weight), so a pass may change weights
    between requests and the next request reruns exactly the stages that changed and those after.
    """

    def __init__(self, model: Model, feeds: Iterable[dict[str, np.ndarray]],
                 log: Callable[[str], None] = lambda message: None):
        self.model = model
        self.feeds = list(feeds)
        self.log = log
        self.key = structure_key(model)
        self.stages = plan_stages(model)
        self.stage_of = {name: stage.index for stage in self.stages for name in stage.produced}
        self.last_reader: dict[str, int] = {}
        for stage in self.stages:
            for name in stage.reads:
                self.last_reader[name] = stage.index
        self.cache: dict[str, list[np.ndarray]] = {}  # cross tensor -> value per feed
        self.computed: list[tuple | None] = [None] * len(self.stages)  # weight arrays each stage last ran with
        self.valid = 0  # stages [0, valid) have up-to-date crosses in the cache (where still kept)
        self._session: tuple | None = None

    def _signature(self, stage: Stage) -> tuple:
        return tuple(self.model.weights[name].array if self.model.weights[name].array is not None
                     else self.model.weights[name].opaque for name in stage.weights)

    def _unchanged(self, stage: Stage) -> bool:
        then = self.computed[stage.index]
        now = self._signature(stage)
        if then is None or len(then) != len(now):
            return False
        for name, a, b in zip(stage.weights, then, now):
            if a is not b and not _spilled_copy(self.model.weights[name], a, b):
                return False
        self.computed[stage.index] = now  # a spilled copy stands for its original from now on (frees it)
        return True

    def capture(self, tensors: Iterable[str], label: str = "calibration") -> Iterator[tuple[int, dict]]:
        """(feed index, {tensor: value}) for every requested tensor and feed, stage by stage: a tensor's
        values for all feeds come before the next stage's. Graph inputs come straight from the feeds."""
        wanted = sorted(set(tensors))
        inputs = [name for name in wanted if name not in self.stage_of]
        for name in inputs:
            if name not in self.model.input_names:
                raise KeyError(f"no tensor '{name}' is produced in the graph")
        if inputs:
            for index, feed in enumerate(self.feeds):
                yield index, {name: feed[name] for name in inputs}
        by_stage: dict[int, list[str]] = {}
        for name in wanted:
            if name in self.stage_of:
                by_stage.setdefault(self.stage_of[name], []).append(name)
        if not by_stage:
            return
        for stage in self.stages[:self.valid]:
            if not self._unchanged(stage):
                self.valid = stage.index
                break
        todo = self._schedule(by_stage)
        bar = progress.bar(self.log if len(todo) > 2 else None, label, total=len(todo), unit="block")
        for index in todo:
            stage = self.stages[index]
            captured = by_stage.get(index, [])
            for feed_index, values in self._run(stage, captured):
                if captured:
                    yield feed_index, {name: values[name] for name in captured}
            self.computed[index] = self._signature(stage)
            self._drop_before(index)
            bar.update()
        bar.close()
        ran = set(todo)
        while self.valid < len(self.stages) and self.valid in ran:
            self.valid += 1

    def _available(self, name: str) -> bool:
        return name in self.cache and self.stage_of[name] < self.valid

    def _schedule(self, by_stage: dict[int, list[str]]) -> list[int]:
        """Stages to run, in order: those producing a requested tensor, and before them those whose
        crosses a scheduled stage reads but the cache lacks (changed weights, or dropped)."""
        todo, needed, first = [], set(), min(by_stage)
        for index in range(max(by_stage), -1, -1):
            stage = self.stages[index]
            if index in by_stage or any(name in needed and not self._available(name) for name in stage.crosses):
                todo.append(index)
                needed.update(name for name in stage.reads if name in self.stage_of)
            if index <= first and not any(self.stage_of[name] < index and not self._available(name)
                                          for name in needed):
                break
        return todo[::-1]

    def _run(self, stage: Stage, captured: list[str]) -> Iterator[tuple[int, dict]]:
        outputs = list(dict.fromkeys([*stage.crosses, *captured]))
        session = self._stage_session(stage, outputs)
        fresh: dict[str, list[np.ndarray]] = {name: [] for name in stage.crosses}
        for index, feed in enumerate(self.feeds):
            inputs = {name: (self.cache[name][index] if name in self.stage_of else feed[name]) for name in stage.reads}
            values = runtime.run(session, inputs, label="the calibration data")
            for name in stage.crosses:
                fresh[name].append(values[name])
            yield index, values
        self.cache.update(fresh)

    def _drop_before(self, index: int) -> None:
        """Forget crosses no stage after `index` reads (the memory of one block at a time)."""
        for name in [n for n in self.cache if self.last_reader.get(n, -1) < index]:
            del self.cache[name]

    def _stage_session(self, stage: Stage, outputs: list[str]):
        signature = self._signature(stage)
        if self._session is not None:
            index, then, names, session = self._session
            if index == stage.index and names == outputs and all(a is b for a, b in zip(then, signature)):
                return session
        self._session = None  # the previous stage's session goes before the next one is built
        declared_inputs = {value.name: value for value in self.model.graph.input}
        inputs = []
        for name in stage.reads:  # graph inputs as the model declares them; crosses from their values
            inputs.append(declared_inputs[name] if name in declared_inputs else
                          _value_info(name, np.asarray(self.cache[name][0])))
        # Outputs without a type: ONNX Runtime infers it, and shape inference on a big graph (seconds
        # to minutes) is not needed for that.
        declared = [onnx.ValueInfoProto(name=name) for name in outputs]
        initializers = [self.model.initializer(name) for name in stage.weights]
        graph = helper.make_graph(stage.nodes, f"stage_{stage.index}", inputs, declared, initializers)
        proto = helper.make_model(graph, opset_imports=list(self.model.proto.opset_import))
        proto.ir_version = self.model.proto.ir_version
        proto.functions.extend(self.model.proto.functions)
        session = _session(proto)
        self._session = (stage.index, signature, outputs, session)
        return session


def _spilled_copy(weight, before: np.ndarray | None, now: np.ndarray | None) -> bool:
    """True when `now` is `before` moved to the spill file (io/spill.py): the Model writes its oldest
    changed weights there beyond a memory budget, which replaces the array object but not its values.
    Without this, every spill looked like a weight change: once SparseGPT or Wanda had changed ~256 MB,
    each wave reran the model from the stage whose weight had just been spilled (SmolLM2 2:4: ~1,000
    stage runs instead of ~180)."""
    if before is None or now is None or weight.spilled is None or now is not weight.array:
        return False
    return before.shape == now.shape and before.dtype == now.dtype and np.array_equal(before, now)


def _session(proto: onnx.ModelProto):
    if proto.ByteSize() < INLINE_BYTES:
        try:
            import onnxruntime as ort

            return ort.InferenceSession(proto.SerializeToString(), runtime.session_options(),
                                        providers=[runtime.CPU])
        except Exception as exc:  # ORT's pybind exceptions share no base but Exception
            from ..errors import ValidationError

            raise ValidationError(f"onnxruntime cannot run a block of the model on the calibration data: "
                                  f"{runtime.first_line(exc)}") from None
    with tempfile.TemporaryDirectory(prefix="onnxprune-stage-") as folder:
        path = Path(folder) / "stage.onnx"
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="stage.onnx.data")
        return runtime.create_session(path)


def runner_for(model: Model, feeds: Iterable[dict[str, np.ndarray]],
               log: Callable[[str], None] = lambda message: None) -> StagedRunner:
    """The model's runner for these feeds, reused while its structure stays the same.

    Kept on the Model (one per feed list) so that passes which capture again and again on the
    model they are changing (compensation, SparseGPT) share the cached crosses without passing a
    runner around; a structural rewrite (channels removed, blocks dropped) builds a new one."""
    feeds = getattr(feeds, "feeds", feeds)  # CalibrationData or a list of feed dicts
    feeds = feeds if isinstance(feeds, list) else list(feeds)
    runners: dict = model.__dict__.setdefault("_staged_runners", {})
    entry = runners.get(id(feeds))
    if entry is not None and entry[0] is feeds and entry[1].key == structure_key(model):
        entry[1].log = log
        return entry[1]
    runner = StagedRunner(model, feeds, log)
    runners.clear()  # one cache at a time: a runner holds a block's activations
    runners[id(feeds)] = (feeds, runner)
    return runner
