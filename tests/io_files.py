"""Models on disk and checks the IO tests share (tiny Conv-BN-Relu-Conv-GAP-Gemm nets built with onnx.helper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper
from tiny import INPUT_SHAPE, tiny_model


def save_inline(path: Path, **kwargs) -> Path:
    onnx.save(tiny_model(**kwargs), str(path))
    return path


def save_external(path: Path, location: str | None = None, **kwargs) -> Path:
    onnx.save(tiny_model(**kwargs), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=location or f"{path.name}.data", size_threshold=0)
    return path


FEED = {"x": np.random.default_rng(42).standard_normal(INPUT_SHAPE).astype(np.float32)}


def run(model: Path | onnx.ModelProto) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, FEED)[0]


REFERENCE = run(tiny_model())


def initializers(path: Path) -> dict[str, np.ndarray]:
    """Initializer arrays as onnx itself reads them (external data included)."""
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def assert_same_weights(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, array in expected.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def check_full(path: Path) -> None:
    onnx.checker.check_model(str(path), full_check=True)


def external_files(path: Path) -> set[str]:
    """Locations of the external data a saved model refers to."""
    proto = onnx.load(str(path), load_external_data=False)
    return {
        entry.value
        for tensor in proto.graph.initializer
        if tensor.data_location == TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
