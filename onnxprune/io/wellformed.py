"""Is this a model onnxprune can work on? Opset range, graph structure and operator checks, run on load
so every command refuses a broken file the same way, with one line naming the node or tensor."""

from __future__ import annotations

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
    """A default-domain op that ONNX does not define at the model's opset is a broken (or misspelled)
    node: no runtime can load it, so refuse it here rather than pin it and write a broken model."""
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            onnx.defs.get_schema(node.op_type, version, "")
        except (onnx.defs.SchemaError, TypeError, ValueError):
            label = node.name or (node.output[0] if node.output else "")
            raise InvalidModelError(f"node '{label}' uses '{node.op_type}', which is not "
                                    f"an ONNX operator at opset {version}") from None
