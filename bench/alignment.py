"""Which channel counts ONNX Runtime's CPU kernels run at full speed, measured on this machine.

    python -m bench.alignment [--runs 40] [--threads 1]

Times one 3x3 Conv (input channels swept, 64 outputs, 40x40) and one MatMul ([256, 384] x [384, N], N
swept) per channel count, interleaved, and reports the time per channel. Aligned counts (multiples of
onnxprune.measure.alignment's numbers for this processor) should cost no more per channel than their
neighbours; the counts in between fall back to slower kernels. Results: bench/results/alignment.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.measure.alignment import alignment_for

from ._common import machine_facts, table, write_results


def _model(node: onnx.NodeProto, x_shape: list[int], weight: np.ndarray) -> bytes:
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def conv_case(channels: int, rng) -> tuple[bytes, dict]:
    node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])
    weight = rng.standard_normal((64, channels, 3, 3)).astype(np.float32)
    return _model(node, [1, channels, 40, 40], weight), {"x": rng.standard_normal((1, channels, 40, 40), np.float32)}


def matmul_case(columns: int, rng) -> tuple[bytes, dict]:
    node = helper.make_node("MatMul", ["x", "W"], ["y"])
    weight = rng.standard_normal((384, columns)).astype(np.float32)
    return _model(node, [256, 384], weight), {"x": rng.standard_normal((256, 384), np.float32)}


def sweep(build, counts: list[int], runs: int, threads: int) -> list[dict]:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    cases = {count: build(count, rng) for count in counts}
    sessions = {count: ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
                for count, (model, _) in cases.items()}
    times: dict[int, list[float]] = {count: [] for count in counts}
    for round_ in range(runs + 3):  # interleaved: drift on a busy machine hits every count alike
        for count, session in sessions.items():
            started = time.perf_counter()
            session.run(None, cases[count][1])
            if round_ >= 3:
                times[count].append(time.perf_counter() - started)
    return [{"count": count, "median_ms": statistics.median(t) * 1e3,
             "us_per_channel": statistics.median(t) * 1e6 / count} for count, t in times.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.alignment", description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    alignment = alignment_for("cpu")
    conv = sweep(conv_case, list(range(40, 73, 2)), args.runs, args.threads)
    gemm = sweep(matmul_case, list(range(992, 1057, 4)), args.runs, args.threads)
    for title, rows, multiple in (("Conv input channels", conv, alignment.conv),
                                  ("MatMul output columns", gemm, alignment.gemm)):
        print(f"\n{title} (aligned: multiples of {multiple})")
        print(table(["count", "aligned", "median ms", "us per channel"],
                    [[r["count"], "yes" if r["count"] % multiple == 0 else "", f"{r['median_ms']:.3f}",
                      f"{r['us_per_channel']:.2f}"] for r in rows]))
    summary = {}
    for key, rows, multiple in (("conv", conv, alignment.conv), ("gemm", gemm, alignment.gemm)):
        aligned = [r["us_per_channel"] for r in rows if r["count"] % multiple == 0]
        other = [r["us_per_channel"] for r in rows if r["count"] % multiple != 0]
        summary[key] = {"multiple": multiple, "aligned_us_per_channel": statistics.median(aligned),
                        "unaligned_us_per_channel": statistics.median(other),
                        "unaligned_over_aligned": statistics.median(other) / statistics.median(aligned)}
        print(f"{key}: unaligned counts cost x{summary[key]['unaligned_over_aligned']:.2f} per channel")
    write_results("alignment.json", {"machine": machine_facts(), "alignment": alignment.to_dict(), "summary": summary,
                                "conv": conv, "gemm": gemm, "runs": args.runs, "threads": args.threads})


if __name__ == "__main__":
    main()
