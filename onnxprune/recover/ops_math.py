"""Elementwise arithmetic, activations, comparisons, casts and reductions, as ONNX defines them."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .ops_common import Node, UnsupportedOp, arg, attr_or_input, cast_to, op, scalar


def _same(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX binary ops have one input type; a 0-d constant of another carried type follows the other."""
    if a.dtype != b.dtype:
        if a.is_floating_point() and not b.is_floating_point():
            b = b.to(a.dtype)
        elif b.is_floating_point() and not a.is_floating_point():
            a = a.to(b.dtype)
        else:
            b = b.to(a.dtype)
    return a, b


@op("Add")
def _add(node: Node, x: list) -> torch.Tensor:
    return torch.add(*_same(x[0], x[1]))


@op("Sub")
def _sub(node: Node, x: list) -> torch.Tensor:
    return torch.sub(*_same(x[0], x[1]))


@op("Mul")
def _mul(node: Node, x: list) -> torch.Tensor:
    a, b = _same(x[0], x[1])
    return torch.logical_and(a, b) if a.dtype == torch.bool else a * b


@op("Div")
def _div(node: Node, x: list) -> torch.Tensor:
    a, b = _same(x[0], x[1])
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # integer division truncates, as in C


@op("Mod")
def _mod(node: Node, x: list) -> torch.Tensor:
    a, b = _same(x[0], x[1])
    return torch.fmod(a, b) if node.get("fmod", 0) else torch.remainder(a, b)


@op("Pow")
def _pow(node: Node, x: list) -> torch.Tensor:
    base, exponent = x
    if exponent.numel() == 1 and exponent.is_floating_point() and float(exponent) == 2.0:
        return base * base  # the common x^2 of normalizations: exact and cheap
    result = torch.pow(base, exponent.to(base.dtype) if base.is_floating_point() else exponent)
    return result.to(base.dtype)


def _variadic(function):
    def run(node: Node, x: list) -> torch.Tensor:
        values = [v for v in x if v is not None]
        return functools.reduce(lambda a, b: function(*_same(a, b)), values)
    return run


op("Max")(_variadic(torch.maximum))
op("Min")(_variadic(torch.minimum))
op("Sum")(_variadic(torch.add))


@op("Mean")
def _mean(node: Node, x: list) -> torch.Tensor:
    return _variadic(torch.add)(node, x) / len([v for v in x if v is not None])


_UNARY = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Log": torch.log,
    "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal, "Neg": torch.neg, "Abs": torch.abs, "Erf": torch.erf,
    "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round, "Sign": torch.sign, "Sin": torch.sin,
    "Cos": torch.cos, "Tan": torch.tan, "Asin": torch.asin, "Acos": torch.acos, "Atan": torch.atan,
    "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh, "Acosh": torch.acosh, "Atanh": torch.atanh,
    "Softsign": F.softsign, "Not": torch.logical_not, "IsNaN": torch.isnan, "Mish": F.mish,
}
for _name, _function in _UNARY.items():
    op(_name)(lambda node, x, f=_function: f(x[0]))


@op("Identity", "Dropout")
def _identity(node: Node, x: list):
    if node.outputs > 1:  # Dropout's mask: inference keeps everything
        return x[0], torch.ones_like(x[0], dtype=torch.bool)
    return x[0]


@op("Softplus")
def _softplus(node: Node, x: list) -> torch.Tensor:
    return torch.log1p(torch.exp(-x[0].abs())) + torch.relu(x[0])  # stable log(1 + e^x)


@op("LeakyRelu")
def _leaky(node: Node, x: list) -> torch.Tensor:
    return F.leaky_relu(x[0], node.get("alpha", 0.01))


@op("PRelu")
def _prelu(node: Node, x: list) -> torch.Tensor:
    return torch.where(x[0] < 0, x[0] * x[1], x[0])


@op("Elu")
def _elu(node: Node, x: list) -> torch.Tensor:
    return F.elu(x[0], node.get("alpha", 1.0))


@op("Celu")
def _celu(node: Node, x: list) -> torch.Tensor:
    return F.celu(x[0], node.get("alpha", 1.0))


@op("Selu")
def _selu(node: Node, x: list) -> torch.Tensor:
    alpha, gamma = node.get("alpha", 1.67326319217681884765625), node.get("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x[0] > 0, x[0], alpha * (torch.exp(x[0]) - 1))


@op("ThresholdedRelu")
def _thresholded(node: Node, x: list) -> torch.Tensor:
    return torch.where(x[0] > node.get("alpha", 1.0), x[0], torch.zeros_like(x[0]))


@op("HardSigmoid")
def _hard_sigmoid(node: Node, x: list) -> torch.Tensor:
    return torch.clamp(node.get("alpha", 0.2) * x[0] + node.get("beta", 0.5), 0.0, 1.0)


@op("HardSwish")
def _hard_swish(node: Node, x: list) -> torch.Tensor:
    return x[0] * torch.clamp(x[0] / 6.0 + 0.5, 0.0, 1.0)


@op("Gelu", "com.microsoft:Gelu")
def _gelu(node: Node, x: list) -> torch.Tensor:
    return F.gelu(x[0], approximate="tanh" if node.get("approximate", "none") == "tanh" else "none")


@op("Clip")
def _clip(node: Node, x: list) -> torch.Tensor:
    low, high = arg(x, 1), arg(x, 2)  # inputs since opset 11, the oldest onnxprune reads
    value = x[0]
    if low is not None and low.numel():
        value = torch.maximum(value, low.to(value.dtype).to(value.device).reshape(()))
    if high is not None and high.numel():
        value = torch.minimum(value, high.to(value.dtype).to(value.device).reshape(()))
    return value


@op("Cast")
def _cast(node: Node, x: list) -> torch.Tensor:
    return cast_to(x[0], node.attrs["to"])


@op("CastLike")
def _cast_like(node: Node, x: list) -> torch.Tensor:
    return x[0].to(x[1].dtype)


_COMPARE = {"Equal": torch.eq, "Less": torch.lt, "LessOrEqual": torch.le, "Greater": torch.gt,
            "GreaterOrEqual": torch.ge, "And": torch.logical_and, "Or": torch.logical_or,
            "Xor": torch.logical_xor, "BitwiseAnd": torch.bitwise_and, "BitwiseOr": torch.bitwise_or}
for _name, _function in _COMPARE.items():
    op(_name)(lambda node, x, f=_function: f(*_same(x[0], x[1])))


@op("IsInf")
def _isinf(node: Node, x: list) -> torch.Tensor:
    positive, negative = node.get("detect_positive", 1), node.get("detect_negative", 1)
    return (torch.isposinf(x[0]) & bool(positive)) | (torch.isneginf(x[0]) & bool(negative))


@op("Where")
def _where(node: Node, x: list) -> torch.Tensor:
    a, b = _same(x[1], x[2])
    return torch.where(x[0].bool(), a, b)


# ------------------------------------------------------------ softmax and reductions


def _coerced(function, node: Node, value: torch.Tensor) -> torch.Tensor:
    """Before opset 13 softmax works on the input flattened to 2-D at `axis` (default 1)."""
    if node.opset >= 13:
        return function(value, dim=node.get("axis", -1))
    axis = node.get("axis", 1)
    axis = axis + value.dim() if axis < 0 else axis
    flat = value.reshape(math.prod(value.shape[:axis]), -1)
    return function(flat, dim=1).reshape(value.shape)


@op("Softmax")
def _softmax(node: Node, x: list) -> torch.Tensor:
    return _coerced(torch.softmax, node, x[0])


@op("LogSoftmax")
def _log_softmax(node: Node, x: list) -> torch.Tensor:
    return _coerced(torch.log_softmax, node, x[0])


def _reduce_axes(node: Node, x: list) -> tuple[list[int] | None, bool]:
    axes = attr_or_input(node, x, "axes", 1)
    keep = bool(node.get("keepdims", 1))
    if not axes:
        if node.get("noop_with_empty_axes", 0):
            return [], keep
        return None, keep
    return [a + x[0].dim() if a < 0 else a for a in axes], keep


def _reduction(function):
    def run(node: Node, x: list) -> torch.Tensor:
        axes, keep = _reduce_axes(node, x)
        value = x[0]
        if axes == []:
            return value
        dims = tuple(range(value.dim())) if axes is None else tuple(axes)
        if not dims:  # a scalar input
            return function(value, dims, keep) if value.dim() else value
        return function(value, dims, keep)
    return run


def _prod(value: torch.Tensor, dims: tuple, keep: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):
        value = torch.prod(value, dim=dim, keepdim=keep)
    return value


_REDUCE = {
    "ReduceMean": lambda v, d, k: torch.mean(v, dim=d, keepdim=k),
    "ReduceSum": lambda v, d, k: torch.sum(v, dim=d, keepdim=k),
    "ReduceMax": lambda v, d, k: torch.amax(v, dim=d, keepdim=k),
    "ReduceMin": lambda v, d, k: torch.amin(v, dim=d, keepdim=k),
    "ReduceProd": _prod,
    "ReduceL1": lambda v, d, k: torch.sum(v.abs(), dim=d, keepdim=k),
    "ReduceL2": lambda v, d, k: torch.sqrt(torch.sum(v * v, dim=d, keepdim=k)),
    "ReduceSumSquare": lambda v, d, k: torch.sum(v * v, dim=d, keepdim=k),
    "ReduceLogSum": lambda v, d, k: torch.log(torch.sum(v, dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda v, d, k: torch.logsumexp(v, dim=d, keepdim=k),
}
for _name, _function in _REDUCE.items():
    op(_name)(_reduction(_function))


@op("ArgMax", "ArgMin")
def _arg_extreme(node: Node, x: list) -> torch.Tensor:
    axis, keep = node.get("axis", 0), bool(node.get("keepdims", 1))
    value = x[0] if node.op_type == "ArgMax" else -x[0]
    if node.get("select_last_index", 0):
        flipped = torch.flip(value, dims=[axis])
        index = value.shape[axis] - 1 - torch.argmax(flipped, dim=axis, keepdim=keep)
    else:
        index = torch.argmax(value, dim=axis, keepdim=keep)
    return index.to(torch.int64)


@op("TopK")
def _topk(node: Node, x: list):
    k = int(scalar(x[1]))
    values, indices = torch.topk(x[0], k, dim=node.get("axis", -1), largest=bool(node.get("largest", 1)),
                                 sorted=True)
    return values, indices.to(torch.int64)


@op("CumSum")
def _cumsum(node: Node, x: list) -> torch.Tensor:
    axis = int(scalar(x[1]))
    value = x[0]
    if node.get("reverse", 0):
        value = torch.flip(value, dims=[axis])
    out = torch.cumsum(value, dim=axis).to(value.dtype)
    if node.get("exclusive", 0):
        out = out - value
    return torch.flip(out, dims=[axis]) if node.get("reverse", 0) else out


@op("Einsum")
def _einsum(node: Node, x: list) -> torch.Tensor:
    equation = node.attrs["equation"].replace(" ", "")
    return torch.einsum(equation, *x)


@op("MatMul")
def _matmul(node: Node, x: list) -> torch.Tensor:
    a, b = x
    if not a.is_floating_point():
        raise UnsupportedOp("integer MatMul")
    return torch.matmul(a, b)


@op("Gemm")
def _gemm(node: Node, x: list) -> torch.Tensor:
    a, b = x[0], x[1]
    if node.get("transA", 0):
        a = a.transpose(0, 1)
    if node.get("transB", 0):
        b = b.transpose(0, 1)
    out = torch.matmul(a, b)
    alpha, beta = node.get("alpha", 1.0), node.get("beta", 1.0)
    if alpha != 1.0:
        out = out * alpha
    c = arg(x, 2)
    if c is not None:
        out = out + (c * beta if beta != 1.0 else c)
    return out
