"""Is this a model onnxprune can work on? Opset range, graph structure and operator checks, run on load
so every command refuses a broken file the same way, with one line naming the node or tensor."""

from __future__ import annotations

import functools
from collections.abc import Collection

import onnx

from ..errors import InvalidModelError, UnsupportedModelError

MIN_OPSET, MAX_OPSET = 11, 23


def subgraph_outer_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    used: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            defined = {t.name for t in graph.input} | {t.name for t in graph.initializer}
            defined |= {t.values.name for t in graph.sparse_initializer}
            for inner in graph.node:
                for name in list(inner.input) + sorted(subgraph_outer_inputs(inner)):
                    if name and name not in defined:
                        used.add(name)
                defined.update(inner.output)
    return used


def check_opset(version: int | None, any_opset: bool = False) -> None:
    """Refuse models without a default-domain opset, or outside what onnxprune rewrites (`any_opset`:
    anything this onnx knows, for commands that only run models)."""
    if version is None:
        raise UnsupportedModelError("the model imports no default-domain (ai.onnx) opset")
    if any_opset and not 1 <= version <= onnx.defs.onnx_opset_version():
        raise UnsupportedModelError(f"opset {version} is not one this onnx {onnx.__version__} knows "
                                    f"(1 to {onnx.defs.onnx_opset_version()})")
    if not any_opset and not MIN_OPSET <= version <= MAX_OPSET:
        raise UnsupportedModelError(
            f"opset {version} is not supported (onnxprune handles opsets {MIN_OPSET} to {MAX_OPSET}); "
            "convert it with onnx.version_converter first"
        )


def check_structure(graph: onnx.GraphProto, weights: Collection[str], opset: int) -> None:
    """Every input defined before use, no name produced twice: catches cycles and dangling edges.
    Takes the graph, not the Model, so that the Model depends on these checks and not the reverse."""
    defined = set(weights) | {t.name for t in graph.input}
    defined |= {t.values.name for t in graph.sparse_initializer}
    produced: set[str] = set()
    for node in graph.node:
        label = node.name or node.op_type
        for name in list(node.input) + sorted(subgraph_outer_inputs(node)):
            if name and name not in defined:
                later = any(name in other.output for other in graph.node)
                problem = "is used before it is produced (cycle or unsorted graph)" if later else (
                    "is never produced")
                raise InvalidModelError(f"node '{label}' input '{name}' {problem}")
        for name in node.output:
            if not name:
                continue
            if name in produced or name in weights:
                raise InvalidModelError(f"tensor '{name}' is produced twice (node '{label}')")
            produced.add(name)
            defined.add(name)
    for output in graph.output:
        if output.name not in defined:
            raise InvalidModelError(f"graph output '{output.name}' is never produced")
    check_operators(graph, opset)


def check_operators(graph: onnx.GraphProto, version: int) -> None:
    """A default-domain op that neither ONNX nor ONNX Runtime defines at the model's opset is a broken
    (or misspelled) node: no runtime can load it, so refuse it here rather than pin it and write a
    broken model. ONNX Runtime registers a few ops of its own in the default domain
    (SimplifiedLayerNormalization, LayerNormalization before opset 17): its optimizer and
    onnxruntime-genai's builder write them, and ORT runs them, so they are accepted."""
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or _onnx_knows(node.op_type, version):
            continue
        if runtime_default_ops().get(node.op_type, version + 1) <= version:
            continue
        label = node.name or (node.output[0] if node.output else "")
        raise InvalidModelError(f"node '{label}' uses '{node.op_type}', which is neither an ONNX operator "
                                f"at opset {version} nor one ONNX Runtime defines")


def _onnx_knows(op_type: str, version: int) -> bool:
    try:
        onnx.defs.get_schema(op_type, version, "")
    except (onnx.defs.SchemaError, TypeError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=1)
def runtime_default_ops() -> dict[str, int]:
    """Default-domain ops ONNX Runtime defines beyond ONNX, by name: the lowest opset they exist at.
    Empty without onnxruntime (then only ONNX's own ops are accepted)."""
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema
    except ImportError:
        return {}
    ops: dict[str, int] = {}
    for schema in get_all_operator_schema():
        if schema.domain == "":
            ops[schema.name] = min(schema.since_version, ops.get(schema.name, schema.since_version))
    return ops


# Where checkable() moves runtime-only default-domain nodes: a domain onnx's checker does not know.
RUNTIME_DOMAIN = "onnxprune.runtime"


def checkable(proto: onnx.ModelProto) -> onnx.ModelProto:
    """`proto` with the default-domain nodes only ONNX Runtime defines moved to a domain of their own,
    in place: onnx's checker refuses an op it does not know in its own domain but checks the rest of
    the graph around a custom-domain one (ORT itself checks those when it loads the model)."""
    version = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)
    if version is None:
        return proto
    moved = _move_runtime_ops(proto.graph, version)
    if moved and all(entry.domain != RUNTIME_DOMAIN for entry in proto.opset_import):
        proto.opset_import.add(domain=RUNTIME_DOMAIN, version=1)
    return proto


def _move_runtime_ops(graph: onnx.GraphProto, version: int) -> bool:
    """Move the runtime-only default-domain nodes of `graph` and its subgraphs; True if any moved."""
    moved = False
    for node in graph.node:
        if node.domain in ("", "ai.onnx") and not _onnx_knows(node.op_type, version):
            node.domain = RUNTIME_DOMAIN
            moved = True
        for attribute in node.attribute:
            for body in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs):
                moved = _move_runtime_ops(body, version) or moved
    return moved
