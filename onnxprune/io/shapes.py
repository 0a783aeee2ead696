"""Tensor shapes and element types: onnx's shape inference, with ONNX Runtime's symbolic inference
where onnx's leaves symbolic dims unresolved."""

from __future__ import annotations

from dataclasses import dataclass

import onnx


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
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return TensorInfo(tensor_type.elem_type, tuple(dims))


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
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:  # sympy missing: onnx's inference alone
        return None
    try:
        return SymbolicShapeInference.infer_shapes(light, auto_merge=True, guess_output_rank=False)
    except Exception:  # it gives up on some ops; onnx's inference still stands
        return None
