"""An ONNX graph run with torch ops, so its weights can be trained by gradient descent.

Every node is evaluated as ONNX defines it (the op functions live in ops_*.py, one family each);
initializers chosen as trainable become `torch.nn.Parameter`s under their ONNX names, all other
initializers are constants. The graph itself is never changed: the interpreter walks the nodes in
their (topological) order, so training changes numbers only.

Why our own interpreter rather than onnx2torch (1.5.15, the maintained converter): on the real
corpus it computed PP-OCR det/rec wrongly (max abs error 1.0 on the DBNet probability map), failed
on weights stored in Constant nodes (PicoDet, PP-LCNet), on a Clip with computed bounds (MiniLM), on
Reshape allowzero (khmersm) and on GlobalMaxPool (magika); and it renames weights into module
attributes, which writing the trained values back under their ONNX names would have to undo.

Half-precision tensors are carried in float32 (training in fp16 on a CPU is neither supported
everywhere nor stable); a Cast to float16 rounds through float16, so values match ONNX Runtime's.
A node whose op is not implemented here is run by ONNX Runtime on its own (a one-node model):
values stay right, but no gradient flows through it, so weights that reach the loss only through
such nodes are effectively frozen (`GraphModule.fallback_ops` lists them for the report).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from ..io.model import Model
from .ops_common import OPS, Node, UnsupportedOp

# Make the op families register themselves.
from . import ops_math, ops_nn, ops_tensor  # noqa: F401  isort: skip


class InterpreterError(Exception):
    """The graph cannot be run by the interpreter (a subgraph, a string tensor, ...)."""


_TORCH_DTYPES = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float32, TensorProto.BFLOAT16: torch.float32,
    TensorProto.INT8: torch.int8, TensorProto.UINT8: torch.uint8, TensorProto.INT16: torch.int16,
    TensorProto.UINT16: torch.int32, TensorProto.INT32: torch.int32, TensorProto.UINT32: torch.int64,
    TensorProto.INT64: torch.int64, TensorProto.UINT64: torch.int64, TensorProto.BOOL: torch.bool,
}


def to_torch(array: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """A tensor in the interpreter's carrying type (half precision as float32)."""
    array = np.asarray(array)
    if (array.dtype.kind == "f" and array.dtype.itemsize < 4) or array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    elif array.dtype == np.uint16:
        array = array.astype(np.int32)
    elif array.dtype in (np.uint32, np.uint64):
        array = array.astype(np.int64)
    if array.dtype.kind not in "fiub":
        raise InterpreterError(f"tensors of type {array.dtype} cannot be carried in torch")
    return torch.from_numpy(np.array(array, order="C")).to(device)  # ascontiguousarray makes 0-d 1-d


@dataclass
class _Step:
    node: Node
    inputs: list[str]
    outputs: list[str]
    release: list[str] = field(default_factory=list)  # values read for the last time here


class GraphModule(torch.nn.Module):
    """`model`'s main graph as a torch module: forward(feeds) -> {output name: tensor}.

    `trainable`: initializer names to make Parameters (float only). Every other initializer is a
    buffer, so `.to(device)` moves the whole graph.
    """

    def __init__(self, model: Model, trainable: Iterable[str] = ()):
        super().__init__()
        graph = model.graph
        opset = model.opset or 1
        self.output_names = [o.name for o in graph.output]
        self.input_names = model.input_names
        trainable = set(trainable)
        self.params = torch.nn.ParameterDict()
        self._keys: dict[str, tuple[str, bool]] = {}  # ONNX name -> (attribute key, is parameter)
        for index, (name, weight) in enumerate(model.weights.items()):
            array = weight.array
            if array is None:
                continue  # bytes numpy cannot type (int4...): a node reading them falls back or fails
            tensor = to_torch(array)
            if name in trainable and tensor.is_floating_point():
                key = f"p{index}"
                self.params[key] = torch.nn.Parameter(tensor)
                self._keys[name] = (key, True)
            else:
                key = f"c{index}"
                self.register_buffer(key, tensor, persistent=False)
                self._keys[name] = (key, False)
        declared = {name: info.elem_type for name, info in _declared_types(model).items()}
        self.fallback_ops: dict[str, int] = {}
        self._fallbacks: dict[int, _Fallback] = {}
        self.steps: list[_Step] = []
        for position, proto in enumerate(graph.node):
            for attribute in proto.attribute:
                if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    raise InterpreterError(f"{proto.op_type} '{proto.name}' holds a subgraph")
            node = Node.from_proto(proto, opset)
            if node.key not in OPS:
                self._fallbacks[position] = _Fallback(proto, model.proto.opset_import, declared)
                self.fallback_ops[proto.op_type] = self.fallback_ops.get(proto.op_type, 0) + 1
            self.steps.append(_Step(node, list(proto.input), list(proto.output)))
        self._plan_releases()

    def _plan_releases(self) -> None:
        """Drop each computed value after its last reader, so a no-grad run holds few activations."""
        last: dict[str, int] = {}
        for position, step in enumerate(self.steps):
            for name in step.inputs:
                if name:
                    last[name] = position
        keep = set(self.output_names)
        for name, position in last.items():
            if name not in keep and name not in self._keys:
                self.steps[position].release.append(name)

    # ------------------------------------------------------------ weights

    def parameter(self, name: str) -> torch.nn.Parameter:
        key, is_parameter = self._keys[name]
        assert is_parameter, name
        return self.params[key]

    def named_weights(self) -> dict[str, torch.nn.Parameter]:
        """Trainable weights by their ONNX names."""
        return {name: self.params[key] for name, (key, is_parameter) in self._keys.items() if is_parameter}

    def _value(self, name: str) -> torch.Tensor:
        key, is_parameter = self._keys[name]
        return self.params[key] if is_parameter else getattr(self, key)

    # ------------------------------------------------------------ running

    def forward(self, feeds: Mapping[str, torch.Tensor], keep: Collection[str] = ()) -> dict[str, torch.Tensor]:
        """Outputs (and the intermediate values named in `keep`) for one feed of graph inputs."""
        values: dict[str, Any] = {name: self._value(name) for name in self._keys}
        device = next(iter(values.values())).device if values else torch.device("cpu")
        for name in self.input_names:
            if name not in feeds:
                raise InterpreterError(f"no value for graph input '{name}'")
            value = feeds[name]
            values[name] = value if isinstance(value, torch.Tensor) else to_torch(value, device)
        kept: dict[str, torch.Tensor] = {}
        keep = set(keep)
        for position, step in enumerate(self.steps):
            args = [values[name] if name else None for name in step.inputs]
            fallback = self._fallbacks.get(position)
            try:
                result = fallback(args) if fallback is not None else OPS[step.node.key](step.node, args)
            except (UnsupportedOp, RuntimeError, ValueError, IndexError, TypeError, KeyError) as exc:
                # torch's own errors name no node: say which one, in one line
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InterpreterError(f"{step.node.op_type} '{step.node.name}': {detail}") from exc
            results = result if isinstance(result, (tuple, list)) else (result,)
            for name, value in zip(step.outputs, results):
                if name:
                    values[name] = value
                    if name in keep:
                        kept[name] = value
            for name in step.release:
                values.pop(name, None)
        out = {name: values[name] for name in self.output_names}
        out.update(kept)
        return out


def op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"


def unsupported_ops(model: Model) -> set[str]:
    """Op types of `model` that the interpreter runs through ONNX Runtime, outside autograd."""
    return {node.op_type for node in model.graph.node if op_key(node) not in OPS}


def _declared_types(model: Model) -> dict:
    try:
        return model.infer_shapes()
    except Exception:  # shape inference is best effort here: only fallback nodes use the types
        return {}


class _Fallback:
    """One node run by ONNX Runtime on numpy values: exact, but outside autograd."""

    def __init__(self, proto: onnx.NodeProto, opsets, declared: dict[str, int]):
        self.proto, self.opsets, self.declared = proto, list(opsets), declared
        self.sessions: dict[tuple, Any] = {}

    def __call__(self, args: list[torch.Tensor | None]) -> list[torch.Tensor]:
        import onnxruntime as ort

        arrays = []
        for name, value in zip(self.proto.input, args):
            if value is None:
                arrays.append(None)
                continue
            array = value.detach().cpu().numpy()
            wanted = self.declared.get(name)
            if wanted is not None and helper.tensor_dtype_to_np_dtype(wanted) != array.dtype:
                array = array.astype(helper.tensor_dtype_to_np_dtype(wanted))
            arrays.append(array)
        signature = tuple((a.dtype.str, a.ndim) if a is not None else None for a in arrays)
        session = self.sessions.get(signature)
        if session is None:
            typed = {name: a for name, a in zip(self.proto.input, arrays) if a is not None}  # a name read twice
            inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), [None] * a.ndim)
                      for name, a in typed.items()]
            outputs = [onnx.ValueInfoProto(name=name) for name in self.proto.output if name]
            graph = helper.make_graph([self.proto], "node", inputs, outputs)
            single = helper.make_model(graph, opset_imports=self.opsets)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            try:
                session = ort.InferenceSession(single.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
            except Exception as exc:  # ORT's exceptions share no base but Exception
                raise UnsupportedOp(f"not implemented in torch and not runnable alone ({exc})") from None
            self.sessions[signature] = session
        feed = {name: a for name, a in zip(self.proto.input, arrays) if a is not None}
        device = next((a.device for a in args if a is not None), torch.device("cpu"))
        results = session.run(None, feed)
        named = dict(zip([name for name in self.proto.output if name], results))
        return [to_torch(named[name], device) if name else None for name in self.proto.output]
