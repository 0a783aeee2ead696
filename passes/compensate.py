"""Compensation: after choosing what to remove, refit what stays so the layer outputs barely move.

For each consumer layer y = X W + b that loses input channels R, the kept weights and the bias are
refit by least squares over calibration data, argmin ||[X, 1] [W; b] - [X_K, 1] [W'_K; b']||^2,
damped and in float64. With only the bias column this is bias compensation (the removed channels'
mean contribution moves into the bias); with the kept columns too it is the layer-wise
reconstruction of the LLM pruning literature. The damping is a ridge towards the current weights, so
what the calibration data does not constrain is left as it was. Spaces are processed in graph order and statistics
are captured on the already-compensated model, so later layers see pruned inputs. The refit writes
zeros into the removed columns; the rewrite then removes them exactly.

Consumers without a bias get one (a zero bias added before scoring, removed again if it stays zero).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnxprune.calib.data import CalibrationData
from onnxprune.calib.statistics import collect_stats
from onnxprune.io.model import Model
from onnxprune.pipeline import Context
from onnxprune.report import progress

from .activation import ConsumerPair, consumer_pairs

BIAS_SUFFIX = "_onnxprune_bias"
DAMPING = 1e-6  # of the mean diagonal: enough to keep the solve stable, small enough to stay exact
# A full refit solves for every kept input channel of a layer: below this many calibration rows per
# unknown it overfits them, and only the bias is refit (the removed channels' mean contribution).
ROWS_PER_UNKNOWN = 4


def _bias_of(model: Model, node: onnx.NodeProto) -> tuple[str, int] | None:
    """(bias initializer, number of outputs it covers) of a MatMul/Gemm/Conv, if it has one."""
    if node.op_type in ("Gemm", "Conv"):
        name = node.input[2] if len(node.input) > 2 else ""
        return (name, model.weights[name].numpy().size) if name and model.is_weight(name) else None
    consumers = model.consumers(node.output[0])
    if len(consumers) == 1 and consumers[0][0].op_type == "Add":
        add = consumers[0][0]
        for name in add.input:
            if name != node.output[0] and model.is_weight(name):
                return name, model.weights[name].numpy().size
    return None


class AddBiasSlots:
    """Give every weight layer a (zero) bias, so compensation has somewhere to put the mean."""

    name = "add-bias-slots"

    def run(self, context: Context) -> None:
        model = context.model
        added = 0
        for node in list(model.graph.node):
            weight = node.input[1] if len(node.input) > 1 else ""
            if node.op_type not in ("MatMul", "Gemm", "Conv") or not model.is_weight(weight):
                continue
            if model.is_weight(node.input[0]) or _bias_of(model, node) is not None:
                continue
            array = model.weight(weight)
            if array.dtype.kind != "f" or array.ndim < 2:
                continue
            if node.op_type == "Conv":
                outputs = array.shape[0]
            elif node.op_type == "Gemm":
                outputs = array.shape[0] if _flag(node, "transB") else array.shape[1]
            else:
                outputs = array.shape[1]
            bias = model.add_weight(f"{node.name or node.output[0]}{BIAS_SUFFIX}", np.zeros(outputs, array.dtype))
            if node.op_type == "MatMul":
                product = model.fresh_name(f"{node.output[0]}_product")
                final = node.output[0]
                node.output[0] = product
                add = helper.make_node("Add", [product, bias], [final], name=model.fresh_name(f"{node.name}_bias"))
                position = next(i for i, n in enumerate(model.graph.node) if list(n.output) == [product])
                model.graph.node.insert(position + 1, add)
            else:
                while len(node.input) < 3:
                    node.input.append("")
                node.input[2] = bias
            added += 1
        model.invalidate()
        context.report["bias_slots_added"] = added


class DropZeroBiases:
    """Remove the bias slots that compensation left at zero."""

    name = "drop-zero-biases"

    def run(self, context: Context) -> None:
        model = context.model
        dropped = 0
        for name in [n for n in model.weights if n.endswith(BIAS_SUFFIX)]:
            if np.any(model.weight(name)):
                continue
            for node, index in model.consumers(name):
                if node.op_type == "Add":
                    product = node.input[1 - index]
                    producer = model.producer(product)
                    producer.output[0] = node.output[0]
                    node.output[0] = model.fresh_name(f"{node.output[0]}_unused")
                else:
                    node.input[index] = ""
                    while node.input and not node.input[-1]:
                        del node.input[-1]
                dropped += 1
            model.invalidate()
        model.remove_unused()
        model.refresh_value_info()
        context.invalidate()
        context.report["zero_bias_slots_removed"] = dropped


def _flag(node: onnx.NodeProto, name: str) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), 0)


def refit(model: Model, pair: ConsumerPair, gram: np.ndarray, removed: np.ndarray, damping: float = DAMPING) -> None:
    """Refit the kept input channels (and the bias, when writable) of one consumer."""
    weight = pair.matrix(model)  # [K, out]
    channels = weight.shape[0]
    keep = np.setdiff1d(np.arange(channels), removed)
    bias = _bias_of(model, pair.node)
    writable_bias = bias is not None and len(model.consumers(bias[0])) == 1 and bias[1] == weight.shape[1]
    samples = float(gram[-1, -1])  # the constant column's sum of squares counts the rows
    if samples < ROWS_PER_UNKNOWN * (len(keep) + 1):
        # Too few calibration rows to refit the kept weights: the least-squares solution would fit
        # those rows and wreck every other input (an LLM's FFN refit on 8 windows took perplexity from
        # 82 to a million). Move only the removed channels' mean contribution into the bias (FLAP).
        if writable_bias and len(removed):
            mean = gram[-1, removed] / max(samples, 1.0)
            shift = mean @ weight[removed]
            original = model.weight(bias[0])
            updated = np.asarray(original, np.float64).reshape(-1) + shift
            model.set_weight(bias[0], updated.reshape(original.shape).astype(original.dtype))
        new = weight.copy()
        new[removed] = 0
        _write_matrix(model, pair, new)
        return
    if writable_bias:
        current = np.asarray(model.weight(bias[0]), np.float64).reshape(-1)
        target = np.vstack([weight, current[None]])
        rows = np.append(keep, channels)
    else:  # the bias stays as it is, so it cancels out of the objective
        target, rows = weight, keep
    rhs = gram[np.ix_(rows, np.arange(target.shape[0]))] @ target
    system = gram[np.ix_(rows, rows)]
    # The damping pulls towards the current weights, not towards zero: a direction the calibration
    # never excites (a channel dead on those inputs, fewer samples than channels) keeps its weight
    # instead of being wiped, and when the removed channels contribute nothing the refit is exact.
    damp = damping * max(float(np.mean(np.diag(system))), 1e-12)
    solution = np.linalg.solve(system + damp * np.eye(len(rows)), rhs + damp * target[rows])
    new = np.zeros_like(weight)
    new[keep] = solution[: len(keep)]
    _write_matrix(model, pair, new)
    if writable_bias:
        original = model.weight(bias[0])
        model.set_weight(bias[0], solution[-1].reshape(original.shape).astype(original.dtype))


def _write_matrix(model: Model, pair: ConsumerPair, matrix: np.ndarray) -> None:
    original = model.weight(pair.weight.tensor)
    if pair.node.op_type == "Conv":
        out_channels, in_channels = original.shape[:2]
        array = matrix.reshape(in_channels, out_channels, -1).transpose(1, 0, 2).reshape(original.shape)
    else:
        array = matrix if pair.weight.axis == 0 else matrix.T
    model.set_weight(pair.weight.tensor, np.ascontiguousarray(array).astype(original.dtype))


class Compensate:
    name = "compensate"

    def __init__(self, calibration: CalibrationData, damping: float = DAMPING):
        self.calibration = calibration
        self.damping = damping

    def run(self, context: Context) -> None:
        model, graph = context.model, context.channel_graph()
        refit_layers, skipped = 0, []
        planned = [space for space in graph.spaces if space.id in context.plan]
        with progress.bar(context.log, "compensation", total=len(planned), unit="space") as bar:
            for space in planned:
                # A weight shared by several layers (tied embeddings) cannot be refit for one of them.
                pairs = [pair for pair in consumer_pairs(model, space)
                         if pair.linear and len(model.consumers(pair.weight.tensor)) == 1]
                if not pairs:
                    skipped.append(space.id)
                requests = {pair.x: pair.x_axis for pair in pairs}
                stats = collect_stats(model, requests, self.calibration, set(requests)) if pairs else {}
                for pair in pairs:
                    removed = pair.x_member.indices(context.plan[space.id])
                    refit(model, pair, stats[pair.x].gram, removed, self.damping)
                    refit_layers += 1
                bar.update()
        context.report["compensation"] = {
            "method": "least-squares refit of kept inputs and bias, graph order, float64",
            "damping": self.damping,
            "layers_refit": refit_layers,
            "spaces_without_linear_consumer": skipped,
        }
