"""KV caches and the configuration files runtimes read beside a decoder.

A decoder exported with its cache reads the keys and values of earlier tokens as graph inputs
(`past_key_values.N.key`) and returns them one token longer as outputs (`present.N.key`). The first
step's past is empty, and runtimes size it from a config file beside the model, not from the graph:
onnxruntime-genai from `genai_config.json` (model.decoder.num_key_value_heads, one value for every
layer), Optimum and transformers.js from the Hugging Face `config.json` (num_key_value_heads, and
hidden_size // num_attention_heads or head_dim for the head size). A copy of those files beside the
output carries the pruned counts (and, for genai, names the output file); the tokenizer files the
runtime loads from the same folder are copied along.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .files import write_atomic
from .shapes import tensor_info

# Files a runtime loads from the model's folder beside the model and its config, copied when absent.
COMPANIONS = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
              "tokenizer.model", "added_tokens.json", "generation_config.json", "chat_template.jinja")
_ATTENTION_HEADS = {"GroupQueryAttention": "num_heads", "MultiHeadAttention": "num_heads", "Attention": "num_heads"}


@dataclass(frozen=True)
class CachePair:
    past: str  # graph input
    present: str  # graph output
    head_axis: int


def _present_names(past: str) -> list[str]:
    """The output names exporters give the cache input `past`: Optimum and onnxruntime-genai write
    past_key_values.N.key -> present.N.key, ORT's tools past_key_N -> present_key_N, past_N -> present_N."""
    names = []
    if past.startswith("past_key_values"):
        names.append("present" + past[len("past_key_values"):])
    if "past" in past:
        names.append(past.replace("past", "present", 1))
    return names


def _head_axis(shape: tuple | None) -> int | None:
    """BNSH caches have the heads on axis 1; ORT Attention's packed [2, B, N, S, H] on axis 2."""
    if shape is None:
        return None
    if len(shape) == 4:
        return 1
    if len(shape) == 5 and shape[0] == 2:
        return 2
    return None


def find_cache_pairs(graph: onnx.GraphProto, weights) -> dict[str, CachePair]:
    """Cache pairs by past input name and by present output name: an input named like a cache whose
    partner output exists, of the same element type and rank, with a static head count."""
    outputs = {value.name: value for value in graph.output}
    pairs: dict[str, CachePair] = {}
    for value in graph.input:
        if value.name in weights:
            continue
        present = next((name for name in _present_names(value.name) if name in outputs), None)
        if present is None:
            continue
        past_info, present_info = tensor_info(value), tensor_info(outputs[present])
        if past_info is None or present_info is None or past_info.elem_type != present_info.elem_type:
            continue
        axis = _head_axis(past_info.shape)
        if axis is None or past_info.static_dim(axis) is None or present_info.rank not in (None, past_info.rank):
            continue
        pair = CachePair(value.name, present, axis)
        pairs[value.name] = pairs[present] = pair
    return pairs


# metadata_props key of a model whose KV caches lost heads: JSON {cache input or output: {"axis", "heads",
# "removed"}}, the heads it keeps and the original's it dropped, so its caches can be fed and compared.
KV_HEADS_KEY = "onnxprune.kv_heads"


def cache_trims(metadata: dict[str, str]) -> dict[tuple[str, int], list[int]]:
    """(cache input or output, axis) -> the original's heads that a pruned model dropped, from its
    metadata_props (as a dict)."""
    entry = metadata.get(KV_HEADS_KEY)
    if not entry:
        return {}
    return {(name, int(value["axis"])): [int(i) for i in value["removed"]] for name, value in json.loads(
        entry).items()}


def trim(arrays: dict[str, np.ndarray], trims: dict[tuple[str, int], list[int]]) -> dict[str, np.ndarray]:
    """The original model's cache inputs or outputs as the pruned one takes or gives them: dropped heads out."""
    if not trims:
        return arrays
    trimmed = dict(arrays)
    for (name, axis), removed in trims.items():
        if name in trimmed:
            trimmed[name] = np.delete(trimmed[name], removed, axis=axis)
    return trimmed


def kv_heads(graph: onnx.GraphProto, weights) -> list[int]:
    """The KV heads of each cache input, in input order (keys and values alike)."""
    inputs = {value.name: value for value in graph.input}
    pairs = {pair.past: pair for pair in find_cache_pairs(graph, weights).values()}
    return [tensor_info(inputs[name]).static_dim(pair.head_axis) for name, pair in pairs.items()]


def query_heads(graph: onnx.GraphProto) -> list[int]:
    """num_heads of each fused attention node, in graph order (none in a graph of plain ops)."""
    heads = []
    for node in graph.node:
        name = _ATTENTION_HEADS.get(node.op_type) if node.domain == "com.microsoft" else (
            "q_num_heads" if node.op_type == "Attention" else None)
        value = next((a.i for a in node.attribute if a.name == name), 0) if name else 0
        if value:
            heads.append(int(value))
    return heads


def write_beside(graph: onnx.GraphProto, weights, source: Path, target: Path) -> list[str]:
    """Copy genai_config.json / config.json (and the tokenizer files) from the input's folder to the
    output's, with the pruned head counts; returns notes for the report. Nothing is written into the
    input's own folder: its files describe the input."""
    configs = [name for name in ("genai_config.json", "config.json") if (source.parent / name).is_file()]
    if not configs:
        return []
    kv, heads = sorted(set(kv_heads(graph, weights))), sorted(set(query_heads(graph)))
    if not kv:
        return []  # no KV cache: the runtime sizes nothing from the config
    if _same_folder(source, target):
        return [f"{', '.join(configs)} beside the input describe the input model: write the output to a folder of "
                f"its own to get {'them' if len(configs) > 1 else 'it'} updated (KV heads now {kv})"]
    notes = []
    for name in configs:
        config = json.loads((source.parent / name).read_text())
        problem = _update(config, name, target.name, kv, heads)
        if problem:
            notes.append(f"{name} not written beside the output: {problem}")
            continue
        write_atomic(target.parent / name, json.dumps(config, indent=4) + "\n")
        notes.append(f"wrote {name} beside the output (num_key_value_heads {kv[0]})")
    for name in COMPANIONS:
        if (source.parent / name).is_file() and not (target.parent / name).exists():
            shutil.copyfile(source.parent / name, target.parent / name)
    return notes


def _update(config: dict, name: str, filename: str, kv: list[int], heads: list[int]) -> str | None:
    """Set the head counts in a genai or Hugging Face config; a reason when it cannot hold them."""
    if len(kv) > 1 or len(heads) > 1:
        return (f"layers now have different head counts (KV {kv}, query {heads or 'unchanged'}), and the runtime "
                "reads one value for all layers; prune heads with a uniform budget (no --global-ranking)")
    if name == "genai_config.json":
        decoder = config.get("model", {}).get("decoder")
        if not isinstance(decoder, dict):
            return "it has no model.decoder section"
        decoder["filename"] = filename
        old_kv, old_heads = decoder.get("num_key_value_heads"), decoder.get("num_attention_heads")
        if kv:
            decoder["num_key_value_heads"] = kv[0]
        decoder["num_attention_heads"] = heads[0] if heads else _scaled(old_heads, old_kv, kv)
        return None
    # Optimum sizes the empty past as [batch, num_key_value_heads, 0, hidden_size // num_attention_heads]
    # (head_dim only for a few model types): num_attention_heads stays, so that ratio stays the head
    # size; head_dim is written out for the runtimes that read it. The graph holds the query heads.
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    heads_before = text.get("num_attention_heads")
    if heads_before and text.get("hidden_size") and "head_dim" not in text:
        text["head_dim"] = text["hidden_size"] // heads_before
    text["num_key_value_heads"] = kv[0]
    return None


def _scaled(old_heads, old_kv, kv: list[int]):
    """Query heads after removing whole KV groups: each group keeps its query heads."""
    if not kv or not old_heads or not old_kv or old_heads % old_kv:
        return old_heads
    return old_heads // old_kv * kv[0]


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.parent.resolve() == b.parent.resolve()
    except OSError:
        return False
