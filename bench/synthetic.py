"""A synthetic conv + matmul stack of a requested size, for benchmarks at scale.

    input [batch, C, S, S]
      -> N x (Conv 3x3 pad 1, C -> C, bias + Relu)
      -> GlobalAveragePool -> Flatten            [batch, C]
      -> MatMul C -> H + Add bias + Relu
      -> M x (MatMul H x H + Add bias + Relu)
      -> MatMul H -> 10 + Add bias               output [batch, 10]

Weights are seeded float32, or float16 with --dtype float16 (LLMs ship in half precision), He-scaled
normal so activations stay O(1) through hundreds of layers. Every hidden channel space (each Conv's
and each MatMul's output) is prunable; only the input's C channels and the 10 outputs are pinned.

The file is written in a streaming way: the graph without weights is serialized with onnx.helper,
then every initializer is generated, written as a protobuf field and dropped, so memory holds one
weight at a time (at most max(9*C*C, H*H) floats), never the model. Protobuf parsers take fields
in any order, so the initializers follow the graph's other fields.

    python -m bench.synthetic OUT.onnx --gb 1.0 [--channels 512 --hidden 2048 --spatial 8] [--dtype float16]
                              [--external-data] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxprune.io.wire import len_field as _len_field

_GRAPH_FIELD = 7  # ModelProto.graph
_INITIALIZER_FIELD = 5  # GraphProto.initializer
_RAW_DATA_FIELD = 9  # TensorProto.raw_data
# Above this a single-file model breaks protobuf's 2 GiB limit: weights go to OUT.data instead.
EXTERNAL_THRESHOLD = 1_900_000_000
OUTPUTS = 10
OPSET = 17


@dataclass(frozen=True)
class StackInfo:
    path: str
    target_bytes: int
    weight_bytes: int
    file_bytes: int
    channels: int
    hidden: int
    spatial: int
    n_conv: int
    n_matmul: int
    seed: int
    external_data: bool
    seconds: float
    dtype: str = "float32"
    input_name: str = "input"
    output_name: str = "output"

    def to_dict(self) -> dict:
        return asdict(self)

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, self.channels, self.spatial, self.spatial)


_DTYPES = {"float32": (np.float32, TensorProto.FLOAT), "float16": (np.float16, TensorProto.FLOAT16)}


def plan(target_bytes: int, channels: int, hidden: int, conv_share: float, itemsize: int = 4) -> tuple[int, int]:
    """Numbers (N convs, M hidden matmuls) whose weights come closest to `target_bytes`."""
    if not 0.0 <= conv_share <= 1.0:
        raise ValueError(f"conv_share must be in [0, 1], got {conv_share}")
    conv = (9 * channels * channels + channels) * itemsize
    dense = (hidden * hidden + hidden) * itemsize
    fixed = (channels * hidden + hidden + hidden * OUTPUTS + OUTPUTS) * itemsize
    left = max(target_bytes - fixed, 0)
    n_conv = max(1, round(conv_share * left / conv))
    n_matmul = max(0, round((left - n_conv * conv) / dense))
    return n_conv, n_matmul


def _weights(channels: int, hidden: int, n_conv: int, n_matmul: int) -> list[tuple[str, tuple[int, ...], float]]:
    """(name, shape, std) of every initializer, in graph order."""
    specs: list[tuple[str, tuple[int, ...], float]] = []
    for i in range(n_conv):
        specs.append((f"conv{i}.weight", (channels, channels, 3, 3), (2.0 / (9 * channels)) ** 0.5))
        specs.append((f"conv{i}.bias", (channels,), 0.01))
    specs.append(("fc_in.weight", (channels, hidden), (2.0 / channels) ** 0.5))
    specs.append(("fc_in.bias", (hidden,), 0.01))
    for j in range(n_matmul):
        specs.append((f"fc{j}.weight", (hidden, hidden), (2.0 / hidden) ** 0.5))
        specs.append((f"fc{j}.bias", (hidden,), 0.01))
    specs.append(("head.weight", (hidden, OUTPUTS), (1.0 / hidden) ** 0.5))
    specs.append(("head.bias", (OUTPUTS,), 0.01))
    return specs


def _graph(channels: int, hidden: int, spatial: int, n_conv: int, n_matmul: int, batch: str | int,
           elem_type: int = TensorProto.FLOAT) -> onnx.GraphProto:
    """The graph's nodes, inputs and outputs; the initializers are streamed separately."""
    nodes = []
    x = "input"
    for i in range(n_conv):
        nodes.append(helper.make_node("Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}"], name=f"conv{i}",
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        x = f"relu{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    x = "flat"
    for layer in ["fc_in", *[f"fc{j}" for j in range(n_matmul)]]:
        nodes.append(helper.make_node("MatMul", [x, f"{layer}.weight"], [f"{layer}.mm"], name=f"{layer}.matmul"))
        nodes.append(helper.make_node("Add", [f"{layer}.mm", f"{layer}.bias"], [f"{layer}.add"], name=f"{layer}.add"))
        nodes.append(helper.make_node("Relu", [f"{layer}.add"], [f"{layer}.relu"], name=f"{layer}.relu"))
        x = f"{layer}.relu"
    nodes.append(helper.make_node("MatMul", [x, "head.weight"], ["head.mm"], name="head.matmul"))
    nodes.append(helper.make_node("Add", ["head.mm", "head.bias"], ["output"], name="head.add"))
    inputs = [helper.make_tensor_value_info("input", elem_type, [batch, channels, spatial, spatial])]
    outputs = [helper.make_tensor_value_info("output", elem_type, [batch, OUTPUTS])]
    return helper.make_graph(nodes, "synthetic_stack", inputs, outputs)


def _len_key(field: int, length: int) -> bytes:
    # The same wire format onnxprune's streaming writer uses.
    return _len_field(field, length)


def _header(name: str, shape: tuple[int, ...], external: tuple[str, int, int] | None = None,
            elem_type: int = TensorProto.FLOAT) -> bytes:
    tensor = TensorProto(name=name, dims=list(shape), data_type=elem_type)
    if external is not None:
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in zip(("location", "offset", "length"), external):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    return tensor.SerializeToString()


def _arrays(specs, seed: int, dtype=np.float32) -> Iterator[np.ndarray]:
    """The weights one at a time: each is dropped by the caller before the next is drawn."""
    rng = np.random.default_rng(seed)
    for _name, shape, std in specs:
        array = rng.standard_normal(shape, dtype=np.float32)
        array *= np.float32(std)
        yield array if dtype == np.float32 else array.astype(dtype)


def make_stack(
    path: str | os.PathLike,
    target_bytes: int = 1_000_000_000,
    seed: int = 0,
    *,
    channels: int = 512,
    hidden: int = 2048,
    spatial: int = 8,
    conv_share: float = 0.5,
    batch: str | int = "batch",
    external_data: bool | None = None,
    dtype: str = "float32",
) -> StackInfo:
    """Write a synthetic stack whose weights total about `target_bytes` to `path`.

    `conv_share` of the bytes go to the convolutions, the rest to the hidden matmuls. Weights go
    to `path`.data when `external_data` (default: only when the model would not fit in 2 GiB).
    `dtype` is "float32" or "float16" (weights, input and output alike).
    """
    started = time.perf_counter()
    path = Path(path)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    np_type, elem_type = _DTYPES[dtype]
    itemsize = np.dtype(np_type).itemsize
    n_conv, n_matmul = plan(int(target_bytes), channels, hidden, conv_share, itemsize)
    specs = _weights(channels, hidden, n_conv, n_matmul)
    weight_bytes = sum(itemsize * int(np.prod(shape)) for _, shape, _ in specs)
    if external_data is None:
        external_data = weight_bytes > EXTERNAL_THRESHOLD

    graph = _graph(channels, hidden, spatial, n_conv, n_matmul, batch, elem_type)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="onnxprune-bench-synthetic")
    model.ir_version = 8
    graph_bytes = model.graph.SerializeToString()
    model.ClearField("graph")
    model_bytes = model.SerializeToString()

    location = f"{path.name}.data"
    # Sizes first (from shapes alone), so the graph field's length prefix can be written up front.
    headers: list[bytes] = []
    offset = 0
    for name, shape, _std in specs:
        nbytes = itemsize * int(np.prod(shape))
        if external_data:
            headers.append(_header(name, shape, (location, offset, nbytes), elem_type))
            offset += nbytes
        else:
            headers.append(_header(name, shape, None, elem_type) + _len_key(_RAW_DATA_FIELD, nbytes))
    tensor_lengths = [len(h) + (0 if external_data else itemsize * int(np.prod(s)))
                      for h, (_, s, _) in zip(headers, specs)]
    graph_length = len(graph_bytes) + sum(len(_len_key(_INITIALIZER_FIELD, n)) + n for n in tensor_lengths)
    if graph_length + len(model_bytes) > 2**31 - 1:
        raise ValueError("the model would exceed protobuf's 2 GiB limit: use external_data=True")

    data_file = open(f"{path}.data", "wb") if external_data else None
    try:
        with open(path, "wb") as out:
            out.write(model_bytes)
            out.write(_len_key(_GRAPH_FIELD, graph_length))
            out.write(graph_bytes)
            for header, length, array in zip(headers, tensor_lengths, _arrays(specs, seed, np_type)):
                out.write(_len_key(_INITIALIZER_FIELD, length))
                out.write(header)
                target = data_file if data_file is not None else out
                target.write(memoryview(array.astype(array.dtype.newbyteorder("<"), copy=False).reshape(-1)).cast("B"))
                del array
    finally:
        if data_file is not None:
            data_file.close()
    file_bytes = path.stat().st_size + (Path(f"{path}.data").stat().st_size if external_data else 0)
    return StackInfo(str(path), int(target_bytes), weight_bytes, file_bytes, channels, hidden, spatial,
                     n_conv, n_matmul, seed, bool(external_data), round(time.perf_counter() - started, 3), dtype)


def check(path: str | os.PathLike, batch: int = 1) -> dict:
    """Validate `path` with onnx.checker and run it once in ONNX Runtime (CPU) on seeded input."""
    import onnxruntime as ort

    onnx.checker.check_model(str(path), full_check=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed_info = session.get_inputs()[0]
    shape = [batch if not isinstance(d, int) else d for d in feed_info.shape]
    dtype = np.float16 if feed_info.type == "tensor(float16)" else np.float32
    feed = np.random.default_rng(0).standard_normal(shape, dtype=np.float32).astype(dtype)
    (output,) = session.run(None, {feed_info.name: feed})
    if not np.isfinite(output).all():
        raise ValueError("the synthetic model produced non-finite outputs")
    return {"output_shape": list(output.shape), "output_abs_mean": float(np.abs(output).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synthetic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output .onnx file")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--gb", type=float, default=None, help="target weight size in GB (1e9 bytes; default 1.0)")
    size.add_argument("--mb", type=float, default=None, help="target weight size in MB (1e6 bytes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, default=512, help="conv channels C (default 512)")
    parser.add_argument("--hidden", type=int, default=2048, help="matmul width H (default 2048)")
    parser.add_argument("--spatial", type=int, default=8, help="input height = width (default 8)")
    parser.add_argument("--conv-share", type=float, default=0.5, help="share of the bytes in convs (default 0.5)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float32", help="weight and input type")
    parser.add_argument("--external-data", action=argparse.BooleanOptionalAction, default=None,
                        help="weights in OUT.data (default: only above 1.9 GB)")
    parser.add_argument("--check", action="store_true", help="run onnx.checker and ONNX Runtime on the result")
    parser.add_argument("--json", action="store_true", help="print what was written as one JSON line")
    args = parser.parse_args(argv)
    target = int(args.mb * 1e6) if args.mb is not None else int((args.gb if args.gb is not None else 1.0) * 1e9)
    info = make_stack(args.out, target, args.seed, channels=args.channels, hidden=args.hidden, spatial=args.spatial,
                      conv_share=args.conv_share, external_data=args.external_data, dtype=args.dtype)
    if args.json:
        print(json.dumps(info.to_dict()))
    else:
        print(f"wrote {info.path}: {info.file_bytes / 1e6:,.1f} MB, {info.n_conv} convs ({info.channels} ch, "
              f"{info.spatial}x{info.spatial}), {info.n_matmul} hidden matmuls ({info.hidden} wide), "
              f"{info.seconds:.1f} s")
    if args.check:
        print(f"check: {check(args.out)}", file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
