"""What a built form looks like: files and sizes, opsets, op types per domain, inputs, outputs.

Op types are reported with their domain because that is where the forms differ for a pruner:
ORT registers SimplifiedLayerNormalization in the *default* domain (not the ONNX standard's
op set, though it shares the domain name), while SkipSimplifiedLayerNormalization and
GroupQueryAttention are ``com.microsoft`` contrib ops.
"""

from __future__ import annotations

import collections
import pathlib

STANDARD = "ai.onnx"  # how the empty domain is written in reports


def _dims(value_info) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def _ops(graph, counts: collections.Counter) -> None:
    """Count nodes, descending into If/Loop/Scan bodies (a merged decoder's branches)."""
    for node in graph.node:
        counts[f"{node.domain or STANDARD}:{node.op_type}"] += 1
        for attr in node.attribute:
            if attr.g.node:
                _ops(attr.g, counts)
            for sub in attr.graphs:
                _ops(sub, counts)


def summary(path: str | pathlib.Path) -> dict:
    """A JSON-able description of the ONNX file at ``path`` (weights not loaded)."""
    import onnx
    from onnx import helper

    path = pathlib.Path(path)
    model = onnx.load(str(path), load_external_data=False)
    counts: collections.Counter = collections.Counter()
    _ops(model.graph, counts)
    inits = {t.name for t in model.graph.initializer}

    def io(values) -> list[dict]:
        return [{"name": v.name, "dtype": helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                 "shape": _dims(v)} for v in values if v.name not in inits]

    params = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        params += n
    files = {p.name: p.stat().st_size for p in sorted(path.parent.iterdir())
             if p.is_file() and (p.name == path.name or p.name.startswith(path.name + "."))}
    return {
        "path": str(path),
        "files": files,
        "bytes": sum(files.values()),
        "opsets": {(o.domain or STANDARD): o.version for o in model.opset_import},
        "nodes": sum(counts.values()),
        "ops": dict(counts.most_common()),
        "contrib_ops": {k: v for k, v in counts.items() if not k.startswith(STANDARD + ":")
                        or k.split(":")[1] in ("SimplifiedLayerNormalization",)},
        "initializers": len(model.graph.initializer),
        "initializer_elements": params,
        "inputs": io(model.graph.input),
        "outputs": io(model.graph.output),
    }


def brief(info: dict, max_io: int = 4) -> str:
    """A few lines for a terminal: files, ops per domain, the first inputs and outputs."""
    def fmt(items: list[dict]) -> str:
        shown = [f"{v['name']}{v['shape']}:{v['dtype']}" for v in items[:max_io]]
        more = f" ... ({len(items)} in all)" if len(items) > max_io else ""
        return ", ".join(shown) + more

    lines = [f"{info['path']}  {info['bytes'] / 1e6:.1f} MB  "
             f"({', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in info['files'].items())})",
             f"  opsets {info['opsets']}; {info['nodes']} nodes, "
             f"{info['initializer_elements'] / 1e6:.1f} M initializer elements",
             f"  ops: {', '.join(f'{k} {v}' for k, v in info['ops'].items())}",
             f"  inputs: {fmt(info['inputs'])}",
             f"  outputs: {fmt(info['outputs'])}"]
    return "\n".join(lines)
