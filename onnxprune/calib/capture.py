"""Run a Model in ONNX Runtime with intermediate tensors exposed as extra outputs."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..check import runtime
from ..io.model import Model, subgraph_outer_inputs


def _with_outputs(model: Model, tensors: list[str]) -> onnx.ModelProto:
    """The model cut down to what computes `tensors`, which become its only outputs.

    Statistics passes run once per layer wave on big models: not computing the layers after the
    captured ones roughly halves their cost."""
    proto = model.to_proto()
    infos = model.infer_shapes()
    needed = set(tensors)
    kept = []
    for node in reversed(proto.graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
            needed.update(subgraph_outer_inputs(node))
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(kept))
    declared = {value.name for value in proto.graph.input}  # initializers listed as inputs (IR < 4) must stay
    initializers = [t for t in proto.graph.initializer if t.name in needed or t.name in declared]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(initializers)
    del proto.graph.output[:]
    for name in dict.fromkeys(tensors):
        info = infos.get(name)
        elem_type = info.elem_type if info is not None else onnx.TensorProto.FLOAT
        proto.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
    return proto


def capture(
    model: Model, tensors: list[str], feeds: Iterable[dict[str, np.ndarray]]
) -> Iterator[dict[str, np.ndarray]]:
    """For each feed, the values of `tensors`.

    The session loads a temporary copy (with external data past 1 GB, so that models over protobuf's
    2 GB limit work too).
    """
    proto = _with_outputs(model, tensors)
    with tempfile.TemporaryDirectory(prefix="onnxprune-capture-") as folder:
        path = Path(folder) / "capture.onnx"
        onnx.save(proto, str(path), save_as_external_data=model.nbytes() > 1_000_000_000,
                  all_tensors_to_one_file=True, location="capture.onnx.data")
        del proto
        session = runtime.create_session(path)
        for feed in feeds:
            # runtime.run turns ORT's failures (a feed of the wrong shape, say) into one-line errors.
            yield runtime.run(session, feed, label="the calibration data")
        del session
