"""A per-layer latency model of the runtime: each weighted layer (Conv, ConvTranspose, MatMul, Gemm) timed
alone, at its real input shapes, in ONNX Runtime on this machine, and cached; on request also the ops
whose time follows the channels they carry (activations, residual adds, normalization, pooling, resizing,
concatenation). Those do few FLOPs but are memory-bound: on PP-OCRv5's detector they take a third of
the time, and a plan that cuts wide low-resolution layers (many FLOPs, little activation) instead of the
high-resolution ones saved FLOPs that never became time.

`--target-latency` allocates channel cuts by these costs (a channel of a space is worth the time of the
layers it feeds and leaves, to first order), then checks the whole model's measured latency a few
times; `--target-flops` breaks ties between spaces with them. Timing a layer alone takes milliseconds;
pruning and timing whole candidate models at every step took minutes each.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..io.model import Model

TIMED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
ACTIVATION_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Clip", "Elu", "Selu", "Gelu", "Erf", "Softplus", "Mish", "BatchNormalization", "InstanceNormalization",
    "LayerNormalization", "GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool", "Resize", "Upsample",
    "Concat", "Pad", "Transpose", "Softmax",
})
# How a layer's time is estimated, part of the cache key: the fastest of the timed runs. The median was
# 17 ms for a 1 ms Conv of PP-OCRv5's detector once (a burst of other work over most of its runs), and
# the cache kept that figure for good; other work only ever adds time to a run.
ESTIMATOR = "min-of-runs"
SMALL_WEIGHT = 4096  # elements: below this a weight keeps its real values (Resize scales, Clip bounds, Pad pads)


def cache_file() -> Path:
    root = Path(os.environ.get("ONNXPRUNE_CACHE", Path.home() / ".cache" / "onnxprune"))
    return root / "latency" / "layers.json"


def _static(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def static_shapes(model: Model, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Static shape of every tensor at these input shapes: ORT's symbolic inference, and where it left a
    symbol, the shapes FLOPs are counted with (shape computations folded first). A batch dim rebuilt
    through Shape -> Gather -> Concat -> Reshape came out as a new symbol in paraphrase-MiniLM-L3, and
    no MatMul of it could be timed."""
    from ..check.counts import _infer_shapes
    from ..check.stats import folded_light_proto

    known = {name: tuple(info.shape) for name, info in model.infer_shapes(shapes).items() if _static(info.shape)}
    try:
        _, counted = _infer_shapes(folded_light_proto(model, shapes), shapes, [])
    except Exception:  # a refinement: what ORT's inference found stays
        return known
    return {**{name: shape for name, shape in counted.items() if _static(shape)}, **known}


def _layer_model(model: Model, node: onnx.NodeProto, infos: dict,
                 known: dict[str, tuple[int, ...]]) -> tuple[onnx.ModelProto, dict] | None:
    """The node alone: activation inputs as graph inputs at their inferred static shapes, big float weights
    as random initializers of their shapes (values do not change CPU kernel time; reading big weights would),
    small or non-float ones with their real values (a Resize's scales, a Clip's bounds decide the work)."""
    inputs, initializers, feeds = [], [], {}
    rng = np.random.default_rng(0)
    for name in node.input:
        if not name:
            continue
        if model.is_weight(name):
            weight = model.weights[name]
            if int(np.prod(weight.shape)) < SMALL_WEIGHT:
                initializers.append(onnx.numpy_helper.from_array(np.asarray(weight.numpy()), name))
                continue
            dtype = weight.numpy().dtype if weight.array is None else weight.array.dtype
            if dtype.kind != "f":
                return None
            initializers.append(onnx.numpy_helper.from_array(
                rng.standard_normal(weight.shape).astype(dtype), name))
            continue
        info, shape = infos.get(name), known.get(name)
        if info is None or shape is None:
            return None
        dtype = helper.tensor_dtype_to_np_dtype(info.elem_type)
        if np.dtype(dtype).kind != "f":
            return None
        inputs.append(helper.make_tensor_value_info(name, info.elem_type, list(shape)))
        feeds[name] = rng.standard_normal(shape).astype(dtype)
    out_info = infos.get(node.output[0])
    out_type = out_info.elem_type if out_info is not None else onnx.TensorProto.FLOAT
    outputs = [helper.make_tensor_value_info(node.output[0], out_type, None)]
    # Only the first output: a MaxPool-style second output or Dropout mask would need types of its own.
    single = onnx.NodeProto()
    single.CopyFrom(node)
    del single.output[1:]
    graph = helper.make_graph([single], "layer", inputs, outputs, initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", model.opset)])
    proto.ir_version = model.proto.ir_version
    return proto, feeds


def _key(proto: onnx.ModelProto, threads: int) -> str:
    """Identity of a timing: op, attributes and shapes (not weight values), threads, ORT version."""
    import onnxruntime

    node = proto.graph.node[0]
    shapes = [list(t.dims) for t in proto.graph.initializer] + [
        [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    text = json.dumps([node.op_type, str(node.attribute), shapes, threads, onnxruntime.__version__, ESTIMATOR])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def layer_latencies(model: Model, shapes: dict[str, tuple[int, ...]], threads: int = 0, runs: int = 15,
                    log=lambda message: None, activations: bool = False) -> dict[str, float]:
    """Seconds per run of each timed layer, by its first output name (as counts.FlopsReport.by_node);
    with `activations`, of the ACTIVATION_OPS nodes too."""
    import onnxruntime as ort

    infos = model.infer_shapes(shapes)
    known = static_shapes(model, shapes)
    path = cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    result: dict[str, float] = {}
    ops = TIMED_OPS | ACTIVATION_OPS if activations else TIMED_OPS
    nodes = [node for node in model.graph.node if node.op_type in ops and node.domain in ("", "ai.onnx")]
    for number, node in enumerate(nodes, 1):
        built = _layer_model(model, node, infos, known)
        if built is None:
            continue
        proto, feeds = built
        key = _key(proto, threads)
        if key not in cache:
            log(f"\rlatency model: timing layer {number}/{len(nodes)}")
            try:
                session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
            except Exception:  # a layer ORT cannot run alone (exotic attributes): no latency cost for it
                continue
            for _ in range(2):
                session.run(None, feeds)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                session.run(None, feeds)
                times.append(time.perf_counter() - started)
            cache[key] = min(times)
        result[node.output[0]] = cache[key]
    log("")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(json.dumps(cache))
        staged.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs the timing again next time
    return result
