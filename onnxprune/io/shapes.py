"""Tensor shapes and element types: onnx's shape inference, with ONNX Runtime's symbolic inference
where onnx's leaves symbolic dims unresolved."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from .contrib_shapes import with_contrib_fixes


@dataclass(frozen=True)
class TensorInfo:
    elem_type: int
    shape: tuple[int | str | None, ...] | None  # None when the rank is unknown

    def static_dim(self, axis: int) -> int | None:
        if self.shape is None or not -len(self.shape) <= axis < len(self.shape):
            return None
        dim = self.shape[axis]
        return dim if isinstance(dim, int) else None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


def tensor_info(value_info: onnx.ValueInfoProto) -> TensorInfo | None:
    if not value_info.type.HasField("tensor_type"):
        return None
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return TensorInfo(tensor_type.elem_type, None)
    dims = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return TensorInfo(tensor_type.elem_type, tuple(dims))


def clear_negative_dims(graph: onnx.GraphProto) -> int:
    """paddle2onnx writes dynamic dims as `dim_value: -1`, which the spec does not allow: make them
    unnamed symbolic dims, as a dim without value or name is. Returns how many were cleared."""
    cleared = 0
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_value") and dim.dim_value < 0:
                    dim.Clear()
                    cleared += 1
    return cleared


def collect(inferred: onnx.ModelProto | None, infos: dict[str, TensorInfo]) -> None:
    """Add what `inferred` knows; a shape replaces an entry without one."""
    if inferred is None:
        return
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        info = tensor_info(value)
        if info is not None and info.shape is not None:
            infos[value.name] = info
        elif info is not None:
            infos.setdefault(value.name, info)


def unresolved(infos: dict[str, TensorInfo]) -> bool:
    return any(info.shape is None or any(d is None or (isinstance(d, str) and d.startswith("unk__"))
                                          for d in info.shape) for info in infos.values())


def onnx_inference(light: onnx.ModelProto) -> onnx.ModelProto | None:
    try:
        return onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:  # custom domains or odd graphs: the other inference may do better
        return None


def symbolic_inference(light: onnx.ModelProto) -> onnx.ModelProto | None:
    inference = _symbolic_shape_inference()
    if inference is None:
        return None
    inference = with_contrib_fixes(inference)
    # When it cannot infer every shape (a custom op) it saves 'sym_shape_infer_temp.onnx' into the
    # current folder before raising: run it from a private folder so nothing lands in the user's.
    try:
        previous = os.getcwd()
    except OSError:  # the current folder was removed: nowhere to return to, so do not leave it
        previous = None
    try:
        with tempfile.TemporaryDirectory(prefix="onnxprune-shapes-") as folder:
            if previous is not None:
                os.chdir(folder)
            try:
                return inference.infer_shapes(light, auto_merge=True, guess_output_rank=False)
            finally:
                if previous is not None:
                    os.chdir(previous)
    except Exception:  # it gives up on some ops; onnx's inference still stands
        return None


_SYMBOLIC_MODULE = "onnxruntime.tools.symbolic_shape_infer"
_PRIVATE_NAME = "onnxprune.io._ort_symbolic_shape_infer"


def _symbolic_shape_inference():
    """ORT's SymbolicShapeInference class, or None without sympy.

    `onnxruntime/tools/__init__.py` imports torch whenever torch is installed (for export helpers we
    never use): 2+ s on every run that needs symbolic shapes. The module itself only needs onnx,
    numpy, sympy and packaging, so it is loaded from its file without running the package's
    __init__, under a private name; the regular import is the fallback where the file is elsewhere."""
    for name in (_SYMBOLIC_MODULE, _PRIVATE_NAME):
        module = sys.modules.get(name)
        if module is not None:
            return module.SymbolicShapeInference
    try:
        spec = importlib.util.find_spec("onnxruntime")
        location = Path(spec.origin).parent / "tools" / "symbolic_shape_infer.py" if spec and spec.origin else None
        if location is not None and location.is_file():
            file_spec = importlib.util.spec_from_file_location(_PRIVATE_NAME, location)
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[_PRIVATE_NAME] = module
            try:
                file_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[_PRIVATE_NAME]
                raise
            return module.SymbolicShapeInference
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference
    except ImportError:  # sympy missing: onnx's inference alone
        return None
