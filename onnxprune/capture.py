"""Run a Model in ONNX Runtime with intermediate tensors exposed as extra outputs."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from . import runtime
from .model import Model


def _with_outputs(model: Model, tensors: list[str]) -> onnx.ModelProto:
    proto = model.to_proto()
    infos = model.infer_shapes()
    present = {o.name for o in proto.graph.output}
    for name in tensors:
        if name in present:
            continue
        info = infos.get(name)
        elem_type = info.elem_type if info is not None else onnx.TensorProto.FLOAT
        proto.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
        present.add(name)
    return proto


def capture(
    model: Model, tensors: list[str], feeds: Iterable[dict[str, np.ndarray]]
) -> Iterator[dict[str, np.ndarray]]:
    """For each feed, the values of `tensors` (and the graph outputs).

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
