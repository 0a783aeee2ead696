"""Random graphs from the op set onnxprune understands, for property-based tests.

A strategy draws a *recipe* (plain tuples: block kinds, widths, activations, seeds) and `build` turns
it into an ONNX model. Keeping the recipe apart from the build means a shrunk failure prints as a short
literal that a regression test can rebuild without hypothesis.

CNN recipes: a stem conv, then blocks from conv-BN-act, grouped conv, residual `x + f(x)`, two-branch
concat (and DenseNet-style `concat(x, f(x))`), Split into 2-3 parts (re-concatenated, reordered or
summed; sizes given or equal), channel Slice (as exporters spell it), depthwise conv, squeeze-excitation
(1x1 convs or Gemms), a ConvNeXt block (NHWC MatMuls between Transposes), tokens (Reshape to
[N, C, H*W] and a Linear), a weight shared by two convs, gates (Mul/Add/Sub/Max/Div of two branches),
PRelu, Clip, InstanceNormalization, per-channel scale, Pad, Max/AveragePool, ConvTranspose, Resize
(scales or sizes); then a head (GAP + Flatten + Gemm/MatMul, ReduceMean + Gemm, Flatten or
`view(N, -1)` over C*H*W + Gemm, or a 1x1 conv). MLP recipes: MatMul+Add layers, residual MLPs, SwiGLU,
multi-head attention (separate or fused QKV), LayerNormalization and a decomposed RMSNorm (both pin), a
decomposed tanh-GELU, concat/split on the last axis, a head split `[B,S,H*D] -> [B,S,H,D]` and back,
and a linear head.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import onnx
from hypothesis import strategies as st
from random_blocks import SEQ, SPATIAL, Net, cnn_block, mlp_block

OPSETS = (13, 17, 21)
CLASSES = 5
# Opset 13 has no HardSwish; Gelu exists from opset 20.
ACTIVATIONS = ("Relu", "Sigmoid", "HardSwish", "LeakyRelu", "Tanh", "HardSigmoid", "Elu", "Softplus", "Identity")


@dataclass(frozen=True)
class Recipe:
    kind: str  # "cnn" or "mlp"
    opset: int
    seed: int
    stem: int
    blocks: tuple[tuple, ...]
    head: str
    extra_output: bool = False  # also expose the tensor after the first block as a graph output
    # What real exporters do: a symbolic batch (and sequence) with Reshape targets built from Shape at
    # run time (one target Concat shared by Q, K and V); identical constants stored once; value_info
    # filled in or left out.
    dynamic: bool = False
    dedupe: bool = False
    value_info: bool = True


@dataclass
class Built:
    proto: onnx.ModelProto
    # (Add output of x + f(x), the weights that zeroed make f(x) == 0)
    residuals: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)


def activations(opset: int) -> tuple[str, ...]:
    names = tuple(a for a in ACTIVATIONS if opset >= 14 or a != "HardSwish")
    return names + (("Gelu",) if opset >= 20 else ())


# ------------------------------------------------------------------------------------------ strategies


def _sizes(draw, total: int, parts: int) -> tuple[int, ...]:
    """`parts` positive sizes summing to `total` (parts <= total)."""
    cuts = sorted(draw(st.lists(st.integers(1, total - 1), min_size=parts - 1, max_size=parts - 1,
                                unique=True)))
    bounds = [0, *cuts, total]
    return tuple(b - a for a, b in itertools.pairwise(bounds))


def _exporter_traits() -> st.SearchStrategy[tuple[bool, bool, bool]]:
    return st.tuples(st.booleans(), st.booleans(), st.booleans())


@st.composite
def cnn_recipes(draw, max_blocks: int = 7) -> Recipe:
    opset = draw(st.sampled_from(OPSETS))
    acts = st.sampled_from(activations(opset))
    width = st.integers(2, 24)
    stem = draw(width)
    channels, spatial, blocks = stem, SPATIAL, []
    for _ in range(draw(st.integers(1, max_blocks))):
        kind = draw(st.sampled_from(("conv", "group", "residual", "concat", "dense", "split", "split_equal",
                                     "slice", "depthwise", "se", "se_fc", "prelu", "scale", "pad", "pool", "avgpool",
                                     "resize", "convnext", "tokens", "shared", "gate", "clip", "instnorm",
                                     "deconv")))
        if kind == "conv":
            block = (kind, draw(width), draw(acts), draw(st.booleans()), draw(st.sampled_from((1, 3))))
            channels = block[1]
        elif kind == "group":
            groups = draw(st.sampled_from([g for g in (2, 3, 4) if channels % g == 0] or [1]))
            block = (kind, groups * draw(st.integers(1, 6)), groups, draw(acts))
            channels = block[1]
        elif kind == "residual":
            block = (kind, draw(width), draw(acts), draw(st.booleans()), draw(st.booleans()))
        elif kind == "concat":
            block = (kind, draw(width), draw(width), draw(acts), draw(st.sampled_from((1, -3))))
            channels = block[1] + block[2]
        elif kind == "dense":
            block = (kind, draw(st.integers(2, 12)), draw(acts))
            channels += block[1]
        elif kind == "split" and channels >= 2:
            sizes = _sizes(draw, channels, draw(st.integers(2, min(3, channels))))
            mode = draw(st.sampled_from(("concat", "reorder", "sum")))
            block = (kind, sizes, mode, draw(width) if mode == "sum" else 0, draw(acts))
            channels = block[3] if mode == "sum" else channels
        elif kind == "split_equal":
            parts = [p for p in (2, 3) if channels % p == 0]
            if not parts:
                continue
            block = (kind, draw(st.sampled_from(parts)), draw(acts))
        elif kind == "slice" and channels >= 2:
            start = draw(st.integers(0, channels - 2))
            end = draw(st.integers(start + 1, channels))
            # How an exporter spells it: a negative start, an open end (INT64_MAX), a negative axis.
            style = draw(st.sampled_from(("plain", "negative", "open")))
            block = (kind, start, end if style != "open" else channels, style)
            channels = block[2] - block[1]
        elif kind == "depthwise":
            block = (kind, draw(acts), draw(st.sampled_from((1, 3))), draw(st.booleans()))
        elif kind in ("se", "se_fc"):
            block = (kind, draw(st.integers(1, 8)))
        elif kind == "convnext":
            block = (kind, draw(st.integers(1, 4)), draw(acts), draw(st.booleans()))
        elif kind == "tokens":
            block = (kind, draw(width), draw(acts))
            channels = block[1]
        elif kind == "shared":
            block = (kind, draw(acts))
        elif kind == "gate":
            block = (kind, draw(st.sampled_from(("Mul", "Add", "Sub", "Max", "Div"))))
        elif kind == "deconv" and spatial <= SPATIAL:
            block = (kind, draw(width), draw(st.booleans()))
            channels = block[1]
            spatial *= 2
        elif kind in ("pool", "avgpool") and spatial >= 4:
            block = (kind,)
            spatial //= 2
        elif kind == "resize" and spatial <= SPATIAL:
            block = (kind, draw(st.sampled_from(("scales", "sizes"))))
            spatial *= 2
        elif kind in ("prelu", "scale", "pad", "clip", "instnorm"):
            block = (kind,)
        else:
            continue
        blocks.append(block)
    head = draw(st.sampled_from(("gemm", "matmul", "reduce", "flatten", "view", "conv")))
    return Recipe("cnn", opset, draw(st.integers(0, 2**16)), stem, tuple(blocks), head,
                  draw(st.booleans()) and bool(blocks), *draw(_exporter_traits()))


@st.composite
def mlp_recipes(draw, max_blocks: int = 5) -> Recipe:
    opset = draw(st.sampled_from(OPSETS))
    acts = st.sampled_from(activations(opset))
    width = st.integers(2, 24)
    stem = draw(width)
    channels, blocks = stem, []
    for _ in range(draw(st.integers(1, max_blocks))):
        kind = draw(st.sampled_from(("linear", "residual", "layernorm", "rmsnorm", "concat", "split", "heads",
                                     "attention", "swiglu", "gelu_tanh")))
        if kind == "linear":
            block = (kind, draw(width), draw(acts))
            channels = block[1]
        elif kind == "residual":
            block = (kind, draw(width), draw(acts), draw(st.booleans()) and opset >= 17)
        elif kind == "layernorm" and opset >= 17:
            block = (kind,)
        elif kind == "concat":
            block = (kind, draw(width), draw(width), draw(acts))
            channels = block[1] + block[2]
        elif kind == "split" and channels >= 2:
            sizes = _sizes(draw, channels, draw(st.integers(2, min(3, channels))))
            block = (kind, sizes, draw(st.sampled_from(("concat", "reorder"))), draw(acts))
        elif kind == "attention":
            block = (kind, draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.booleans()))
        elif kind == "swiglu":
            block = (kind, draw(width))
        elif kind in ("gelu_tanh", "rmsnorm"):
            block = (kind,)
        elif kind == "heads":
            divisors = [h for h in (2, 3, 4) if channels % h == 0 and channels > h]
            if not divisors:
                continue
            block = (kind, draw(st.sampled_from(divisors)), draw(acts))
        else:
            continue
        blocks.append(block)
    head = draw(st.sampled_from(("matmul", "pool_gemm")))
    return Recipe("mlp", opset, draw(st.integers(0, 2**16)), stem, tuple(blocks), head,
                  draw(st.booleans()) and bool(blocks), *draw(_exporter_traits()))


def recipes() -> st.SearchStrategy[Recipe]:
    return st.one_of(cnn_recipes(), mlp_recipes())


@st.composite
def residual_recipes(draw, count: int = 2) -> Recipe:
    """A recipe with at least `count` residual blocks (`x + f(x)` keeps the width, so they go anywhere)."""
    recipe = draw(recipes())
    acts = st.sampled_from(activations(recipe.opset))
    blocks = list(recipe.blocks)
    for _ in range(count):
        if recipe.kind == "cnn":
            kind = draw(st.sampled_from(("residual", "convnext")))
            if kind == "residual":
                block = (kind, draw(st.integers(2, 24)), draw(acts), draw(st.booleans()), draw(st.booleans()))
            else:
                block = (kind, draw(st.integers(1, 4)), draw(acts), draw(st.booleans()))
        else:
            kind = draw(st.sampled_from(("residual", "attention", "swiglu")))
            if kind == "residual":
                block = (kind, draw(st.integers(2, 24)), draw(acts), draw(st.booleans()) and recipe.opset >= 17)
            elif kind == "attention":
                block = (kind, draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.booleans()))
            else:
                block = (kind, draw(st.integers(2, 24)))
        blocks.insert(draw(st.integers(0, len(blocks))), block)
    return dataclasses.replace(recipe, blocks=tuple(blocks))


# ------------------------------------------------------------------------------------------ building


def build(recipe: Recipe) -> Built:
    net = Net(recipe)
    if recipe.kind == "cnn":
        out = _build_cnn(net, recipe)
    else:
        out = _build_mlp(net, recipe)
    net.g.output(*out)
    proto = net.g.model()
    if recipe.dynamic:
        _symbolic_outputs(proto, recipe.kind)
    if recipe.dedupe:
        _dedupe_initializers(proto)
    if not recipe.value_info:
        del proto.graph.value_info[:]
    return Built(proto, net.residuals)


def _symbolic_outputs(proto: onnx.ModelProto, kind: str) -> None:
    """Shapes GraphBuilder took from one ORT run are static: name the batch (and sequence) axes again."""
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        names = ["N", "S"] if kind == "mlp" and len(dims) == 3 else ["N"]
        for dim, name in zip(dims, names):
            dim.dim_param = name


def _dedupe_initializers(proto: onnx.ModelProto) -> None:
    """Store identical constants once, as exporters and onnxsim do: split sizes, axes, shapes, scalars."""
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    kept = []
    for tensor in proto.graph.initializer:
        key = (tensor.data_type, tuple(tensor.dims), onnx.numpy_helper.to_array(tensor).tobytes())
        if key in first:
            rename[tensor.name] = first[key]
        else:
            first[key] = tensor.name
            kept.append(tensor)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    for node in proto.graph.node:
        for index, name in enumerate(node.input):
            node.input[index] = rename.get(name, name)


def _build_cnn(net: Net, recipe: Recipe) -> list[str]:
    g = net.g
    x = g.input(["N" if recipe.dynamic else 1, 3, SPATIAL, SPATIAL])
    c, spatial = recipe.stem, SPATIAL
    x = g.op("Relu", [g.conv(x, 3, c, name="stem")])
    outputs = []
    for index, block in enumerate(recipe.blocks):
        x, c, spatial = cnn_block(net, block, x, c, spatial)
        if index == 0 and recipe.extra_output:
            outputs.append(x)
    if recipe.head == "conv":
        return [*outputs, g.conv(x, c, CLASSES, k=1, name="head")]
    if recipe.head == "flatten":
        flat, features = g.op("Flatten", [x], axis=1), c * spatial * spatial
    elif recipe.head == "view":  # torch's x.view(x.size(0), -1): the batch read at run time
        batch = g.op("Gather", [g.op("Shape", [x]), g.ints(0, "zero")], axis=0)
        target = g.op("Concat", [net.unsqueeze(batch, [0]), g.ints([-1], "minus_one")], axis=0)
        flat, features = g.op("Reshape", [x, target]), c * spatial * spatial
    elif recipe.head == "reduce":
        flat, features = net.axes_op("ReduceMean", x, [2, 3], keepdims=0), c
    else:
        flat, features = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1), c
    if recipe.head == "matmul":
        return [*outputs, net.linear(flat, features, CLASSES, "head")]
    return [*outputs, g.op("Gemm", [flat, g.weight((CLASSES, features), "head_W"), g.weight((CLASSES,), "head_B")],
                           name="head", transB=1)]


def _build_mlp(net: Net, recipe: Recipe) -> list[str]:
    g = net.g
    x = g.input(["N", "S", 8] if recipe.dynamic else [1, SEQ, 8])
    c = recipe.stem
    x = g.op("Relu", [net.linear(x, 8, c, "embed")])
    outputs = []
    for index, block in enumerate(recipe.blocks):
        x, c = mlp_block(net, block, x, c)
        if index == 0 and recipe.extra_output:
            outputs.append(x)
    if recipe.head == "pool_gemm":
        pooled = net.axes_op("ReduceMean", x, [1], keepdims=0)
        return [*outputs, g.op("Gemm", [pooled, g.weight((c, CLASSES), "head_W"), g.weight((CLASSES,), "head_B")],
                               name="head")]
    return [*outputs, net.linear(x, c, CLASSES, "head")]
