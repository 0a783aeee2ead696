"""What makes a graph a decoder language model, read from its structure (never from names).

- an *embedding table*: a float weight [vocab, hidden] that a Gather reads as its data (directly or
  through a Transpose, as onnxruntime-genai's builder ties it), indexed by ids from a graph input;
- the *LM head*: a MatMul/Gemm whose weight (read directly or through Transpose/Cast/DequantizeLinear)
  projects to `vocab` outputs of an embedding table, and whose result reaches a graph output through
  layout ops only. With tied embeddings the LM head's weight is the embedding table itself.

The LLM pruning literature keeps both dense (Wanda, SparseGPT: "we do not prune the embedding and the
LM head"): they hold a large share of a small model's parameters, every token reads them, and their
rows are the only path from a token to the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ..io.model import Model

_LOOK_THROUGH = ("Transpose", "Cast", "DequantizeLinear", "Identity")
_LAYOUT = ("Reshape", "Transpose", "Cast", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Softmax",
           "LogSoftmax", "Add")
_FLOAT = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)


@dataclass
class DecoderParts:
    embeddings: dict[str, int] = field(default_factory=dict)  # table weight -> vocabulary size
    heads: list[onnx.NodeProto] = field(default_factory=list)  # MatMul/Gemm to the vocabulary
    head_weights: set[str] = field(default_factory=set)  # the initializers those read

    @property
    def is_language_model(self) -> bool:
        return bool(self.embeddings) and bool(self.heads)


def _weight_behind(model: Model, name: str) -> tuple[str, bool] | None:
    """(initializer, swapped): the weight `name` is, or is computed from through a short look-through
    chain; `swapped` when the chain transposes its two axes an odd number of times."""
    swapped = False
    for _ in range(8):
        if model.is_weight(name):
            return name, swapped
        producer = model.producer(name)
        if producer is None or producer.op_type not in _LOOK_THROUGH or not producer.input:
            return None
        if producer.op_type == "Transpose":
            perm = next((list(a.ints) for a in producer.attribute if a.name == "perm"), [1, 0])
            swapped ^= perm == [1, 0]
        name = producer.input[0]
    return None


def _depends_on_inputs(model: Model, name: str, limit: int = 64) -> bool:
    """True when `name` is a graph input or computed from one (a short walk back)."""
    inputs, stack, seen = set(model.input_names), [name], set()
    while stack and len(seen) < limit:
        current = stack.pop()
        if current in inputs:
            return True
        if current in seen or model.is_weight(current):
            continue
        seen.add(current)
        producer = model.producer(current)
        if producer is not None:
            stack.extend(n for n in producer.input if n)
    return False


def _reaches_output(model: Model, name: str) -> bool:
    outputs = set(model.output_names)
    for _ in range(16):
        if name in outputs:
            return True
        consumers = model.consumers(name)
        if len(consumers) != 1 or consumers[0][0].op_type not in _LAYOUT:
            return False
        name = consumers[0][0].output[0]
    return False


def find_decoder_parts(model: Model) -> DecoderParts:
    parts = DecoderParts()
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        found = _weight_behind(model, node.input[0])  # GenAI's builder ties through a Transpose
        if found is None:
            continue
        table, swapped = found
        weight = model.weights[table]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if len(weight.shape) == 2 and axis == 0 and weight.data_type in _FLOAT and _depends_on_inputs(
                model, node.input[1]):
            parts.embeddings[table] = int(weight.shape[1 if swapped else 0])
    vocabularies = set(parts.embeddings.values())
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or not vocabularies:
            continue
        found = _weight_behind(model, node.input[1]) if len(node.input) > 1 else None
        if found is None or len(model.weights[found[0]].shape) != 2:
            continue
        weight, swapped = found
        # B as the node multiplies it is [K, N]: transposed on the way (or by Gemm's transB), N is axis 0.
        swapped ^= node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        outputs = int(model.weights[weight].shape[0 if swapped else 1])
        if outputs in vocabularies and _reaches_output(model, node.output[0]):
            parts.heads.append(node)
            parts.head_weights.add(weight)
    return parts
