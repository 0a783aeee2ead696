"""Whole residual blocks: find `x + f(x)`, score each by how much it changes x, remove the least useful.

Block influence (ShortGPT's Block Influence) is 1 - cos(x_t, x_t + f(x)_t) averaged over every
position t (a token, a pixel) and input, the cosine taken over the feature axis: a block whose output
barely turns the residual stream can go. Per position, as ShortGPT defines it: one cosine over the
whole flattened tensor is dominated by the few massive-activation channels of an LLM's stream and
ranks blocks by almost nothing (SmolLM2-135M, 3 of 60 sublayers: perplexity 1.27x dense with the
flattened cosine, 1.10x per token). Removing one replaces its Add by Identity(x);
the branch then has no consumers and is swept away.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from onnxprune.calib.capture import capture
from onnxprune.errors import InvalidOptionError
from onnxprune.io.model import Model
from onnxprune.pipeline import Context


@dataclass
class ResidualBlock:
    add: str  # output of the Add
    skip: str  # x
    branch: str  # f(x)
    nodes: list[str] = field(default_factory=list)  # the branch's nodes (names)
    influence: float | None = None
    fused: bool = False  # the add is inside a Skip(Simplified)LayerNormalization named by `add` (its output 0)

    @property
    def label(self) -> str:
        return f"{self.add} = {self.skip} + f(...) ({len(self.nodes)} nodes)"

    def to_dict(self) -> dict:
        return {"add": self.add, "skip": self.skip, "branch": self.branch, "nodes": len(self.nodes),
                "influence": self.influence}


# Residual adds that ORT's optimizer and the GenAI builder fuse with the next norm (outputs: normalized,
# two statistics, the sum): the plain norm and how many inputs it takes after the two summands (gamma,
# beta). A further input is a bias added into the sum too: such a node is left alone.
FUSED_NORMS = {"SkipSimplifiedLayerNormalization": ("SimplifiedLayerNormalization", 1),
               "SkipLayerNormalization": ("LayerNormalization", 2)}


def _fused_outputs(model: Model, name: str) -> list[str]:
    """All outputs of the fused norm that produced `name` (a block reads the normalized sibling of x)."""
    producer = model.producer(name)
    if producer is not None and producer.domain == "com.microsoft" and producer.op_type in FUSED_NORMS:
        return [output for output in producer.output if output]
    return [name]


def _branch_nodes(model: Model, skip: str, branch: str) -> list[onnx.NodeProto] | None:
    """Nodes computing `branch` from `skip` (None when `branch` does not depend on `skip`)."""
    nodes, seen, stack, reaches = [], set(), [branch], False
    origins = set(_fused_outputs(model, skip))
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in origins:
            reaches = True
            continue
        producer = model.producer(name)
        if producer is None:
            continue
        nodes.append(producer)
        stack.extend(n for n in producer.input if n)
    if not reaches:
        return None
    # Keep only nodes that lie on a path from skip (drop constants and side inputs' producers).
    depends = set(origins)
    for node in model.graph.node:
        if any(n in depends for n in node.input):
            depends.update(o for o in node.output if o)
    return [node for node in nodes if any(o in depends for o in node.output)]


def _has_weight_matrix(model: Model, node: onnx.NodeProto) -> bool:
    return any(model.is_weight(name) and len(model.weights[name].shape) >= 2 for name in node.input)


def _fused_block_node(model: Model, node: onnx.NodeProto) -> bool:
    """A Skip(Simplified)LayerNormalization whose sum is input + skip alone, with no statistics outputs."""
    if node.domain != "com.microsoft" or node.op_type not in FUSED_NORMS:
        return False
    _, norm_inputs = FUSED_NORMS[node.op_type]
    if len(node.input) > 2 + norm_inputs or any(model.is_weight(n) for n in node.input[:2]):
        return False
    if node.op_type == "SkipLayerNormalization" and (model.opset or 0) < 17:  # LayerNormalization: opset 17
        return False
    return not any(node.output[i] for i in (1, 2) if i < len(node.output))


def find_blocks(model: Model) -> list[ResidualBlock]:
    shapes = model.infer_shapes()
    blocks = []
    for node in model.graph.node:
        if _fused_block_node(model, node):
            _fused_block(model, node, blocks)
            continue
        if node.op_type != "Add" or len(node.input) != 2 or any(model.is_weight(n) for n in node.input):
            continue
        out = shapes.get(node.output[0])
        for skip, branch in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
            info = shapes.get(skip)
            if info is None or out is None or info.shape is None or info.shape != out.shape:
                continue
            nodes = _branch_nodes(model, skip, branch)
            # A block is a layer: its branch holds a weight matrix. x + 0.044715 * x**3 inside a
            # tanh-GELU is an Add of x and f(x) too, but no layer.
            if nodes and any(_has_weight_matrix(model, n) for n in nodes):
                blocks.append(ResidualBlock(node.output[0], skip, branch, [n.name or n.output[0] for n in nodes]))
                break
    return blocks


def _feature_axis(model: Model, block: ResidualBlock) -> int:
    """The axis a block's features lie on: 1 (NCHW) for a convolutional branch, the last otherwise."""
    names = set(block.nodes)
    convolutional = any(node.op_type in ("Conv", "ConvTranspose") for node in model.graph.node
                        if (node.name or node.output[0]) in names)
    return 1 if convolutional else -1


def _mean_cosine(x: np.ndarray, y: np.ndarray, axis: int) -> float:
    """Mean over positions of the cosine along `axis` (1 where both vectors are zero, 0 where one is)."""
    if x.ndim < 2:
        x, y, axis = x.reshape(1, -1), y.reshape(1, -1), -1
    x = np.moveaxis(x.astype(np.float64), axis, -1).reshape(-1, x.shape[axis])
    y = np.moveaxis(y.astype(np.float64), axis, -1).reshape(-1, y.shape[axis])
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    both_zero = (np.linalg.norm(x, axis=1) == 0) & (np.linalg.norm(y, axis=1) == 0)
    cosines = np.where(norms > 0, np.einsum("ij,ij->i", x, y) / np.where(norms > 0, norms, 1.0),
                       np.where(both_zero, 1.0, 0.0))
    return float(cosines.mean()) if cosines.size else 1.0


def block_influence(model: Model, blocks: list[ResidualBlock], feeds: list[dict[str, np.ndarray]]) -> None:
    # x and f(x), not the sum: a fused norm may not output its sum (the last block of a GenAI model).
    tensors = sorted({name for block in blocks for name in (block.branch, block.skip)})
    totals = {block.add: 0.0 for block in blocks}
    axes = {block.add: _feature_axis(model, block) for block in blocks}
    count = 0
    for values in capture(model, tensors, feeds):
        count += 1
        for block in blocks:
            x = values[block.skip]
            y = x + values[block.branch]
            totals[block.add] += 1.0 - _mean_cosine(x, y, axes[block.add])
    for block in blocks:
        block.influence = totals[block.add] / max(count, 1)


def _fused_block(model: Model, node: onnx.NodeProto, blocks: list[ResidualBlock]) -> None:
    """x + f(x) inside a fused norm: the block is named by the node's first output (the sum may be absent)."""
    for skip, branch in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
        nodes = _branch_nodes(model, skip, branch)
        if nodes and any(_has_weight_matrix(model, n) for n in nodes):
            blocks.append(ResidualBlock(node.output[0], skip, branch, [n.name or n.output[0] for n in nodes],
                                        fused=True))
            return


def drop_count(amount: float, blocks: int) -> int:
    if amount >= 1:
        if amount != int(amount):
            raise InvalidOptionError(f"--drop-layers {amount}: give a whole number of blocks or a fraction below 1")
        count = int(amount)
    else:
        count = math.floor(amount * blocks + 1e-9)
    if count >= blocks and blocks:
        raise InvalidOptionError(f"--drop-layers {amount:g} would remove all {blocks} residual blocks")
    return count


def remove_block(model: Model, block: ResidualBlock) -> None:
    """Replace `x + f(x)` by Identity(x); the branch becomes dead and is swept by remove_unused.
    A fused norm becomes its plain norm of x (and Identity(x) for its sum output, if used)."""
    add = model.producer(block.add)
    if block.fused:
        _unfuse(model, add, block.skip)
        return
    identity = helper.make_node("Identity", [block.skip], [block.add], name=f"{add.name or block.add}_skip")
    add.CopyFrom(identity)
    model.invalidate()


def _unfuse(model: Model, node: onnx.NodeProto, skip: str) -> None:
    plain, norm_inputs = FUSED_NORMS[node.op_type]
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"}
    name = node.name or node.output[0]
    # ORT registers SimplifiedLayerNormalization in the default domain, where its own optimizer writes it.
    norm = helper.make_node(plain, [skip, *node.input[2:2 + norm_inputs]], [node.output[0]], name=f"{name}_plain",
                            axis=-1, **attributes)
    replacement = [norm]
    if len(node.output) > 3 and node.output[3]:
        replacement.append(helper.make_node("Identity", [skip], [node.output[3]], name=f"{name}_skip"))
    nodes = list(model.graph.node)
    index = next(i for i, n in enumerate(nodes) if n.output[:1] == node.output[:1])
    nodes[index:index + 1] = replacement
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, original in zip(copies, nodes):
        copy.CopyFrom(original)
    del model.graph.node[:]
    model.graph.node.extend(copies)
    model.invalidate()


def excluded_blocks(model: Model, blocks: list[ResidualBlock], patterns: list[str]) -> set[str]:
    """Blocks (by Add output) whose Add or branch holds a node matching an --exclude pattern.

    A pattern that matches no node at all is a typo: it is refused here as the channel passes refuse it,
    so that --drop-layers alone does not silently ignore it."""
    names = [node.name for node in model.graph.node]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise InvalidOptionError(f"--exclude '{pattern}' matches no node name in the model")
    excluded = set()
    for block in blocks:
        add = model.producer(block.add)
        members = [*block.nodes, add.name or block.add]
        if any(fnmatch.fnmatchcase(name, pattern) for name in members for pattern in patterns):
            excluded.add(block.add)
    return excluded


class DropLayers:
    """Score residual blocks by block influence on the given inputs and remove the lowest `amount`.

    Blocks touching a node named by --exclude (read from the context's options) are kept."""

    name = "drop-layers"

    def __init__(self, amount: float, feeds: list[dict[str, np.ndarray]]):
        self.amount = amount
        self.feeds = feeds

    def run(self, context: Context) -> None:
        model = context.model
        blocks = find_blocks(model)
        excluded = excluded_blocks(model, blocks, list(context.options.get("exclude") or []))
        count = drop_count(self.amount, len(blocks))
        context.report["layers"] = {"blocks": [], "removed": [], "excluded": sorted(excluded)}
        if not blocks or count == 0:
            return
        if count > len(blocks) - len(excluded):
            raise InvalidOptionError(
                f"--drop-layers {self.amount:g} asks for {count} of {len(blocks)} residual blocks, but --exclude "
                f"keeps {len(excluded)} of them; at most {len(blocks) - len(excluded)} can go")
        context.log(f"scoring {len(blocks)} residual blocks on {len(self.feeds)} inputs")
        block_influence(model, blocks, self.feeds)
        ranked = sorted((b for b in blocks if b.add not in excluded), key=lambda b: (b.influence, b.add))
        removed = ranked[:count]
        for block in removed:
            remove_block(model, block)
        model.remove_unused()
        model.refresh_value_info()
        context.report["layers"] = {
            "criterion": "block influence (1 - cosine of the residual stream before and after the block)",
            "blocks": [b.to_dict() for b in blocks],
            "removed": [b.add for b in removed],
            "excluded": sorted(excluded),
        }
        context.invalidate()
