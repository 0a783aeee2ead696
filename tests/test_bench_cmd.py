"""`onnxprune bench`, the benchmark library behind it, and the guarded TensorRT runner (onnxprune.trt)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from onnxprune.api import PruneOptions, prune
from onnxprune.check import runtime
from onnxprune.errors import InvalidOptionError, ValidationError
from onnxprune.measure import latency, trt
from onnxprune.measure.bench import BenchOptions, bench, format_table

CUDA_IN_ORT = runtime.CUDA in ort.get_available_providers()
TRT_IN_ORT = runtime.TENSORRT in ort.get_available_providers()
TRT_USABLE = trt.tensorrt_available()[0]
FAST = {"runs": 3, "warmup": 1, "threads": 1}


@pytest.fixture(scope="module")
def pair(zoo, tmp_path_factory) -> tuple[Path, Path]:
    """The zoo ResNet and a copy with 40% of its channels removed."""
    folder = tmp_path_factory.mktemp("bench")
    ref = folder / "ref.onnx"
    shutil.copy(zoo("resnet"), ref)
    pruned = folder / "pruned.onnx"
    prune(ref, pruned, PruneOptions(structured=0.4, validate=False))
    return ref, pruned


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "ONNXPRUNE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "onnxprune", "bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def strict_json(path: Path):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ------------------------------------------------------------------------- the command


@pytest.mark.skipif(CUDA_IN_ORT, reason="this onnxruntime has CUDA: nothing to skip")
def test_cli_reports_every_figure_and_skips_cuda(pair, tmp_path: Path) -> None:
    ref, pruned = pair
    out = tmp_path / "bench.json"
    done = cli(str(ref), str(pruned), "--provider", "cpu", "--provider", "cuda", "--shapes", "input:2x3x64x64",
               "--runs", "3", "--warmup", "1", "--threads", "1", "--json", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = strict_json(out)
    assert result["kind"] == "onnxprune.bench" and result["schema_version"] == 1

    before, after = result["models"]
    assert [before["label"], after["label"]] == ["ref.onnx", "pruned.onnx"] and result["reference"] == "ref.onnx"
    assert before["input_shapes"] == after["input_shapes"] == {"input": [2, 3, 64, 64]}
    assert before["batch"] == 2
    assert 0 < after["params"] < before["params"]
    assert 0 < after["flops"] < before["flops"]
    for model, path in ((before, ref), (after, pruned)):
        assert model["bytes_on_disk"] == path.stat().st_size
        assert sum(model["flops_by_op"].values()) == model["flops"]
        assert model["flops_by_op"]["Conv"] > 0
        assert model["gflops"] == pytest.approx(model["flops"] / 1e9, abs=1e-6)

    cuda = next(entry for entry in result["providers"] if entry["provider"] == "cuda")
    assert cuda["available"] is False and "CUDAExecutionProvider" in cuda["reason"]
    rows = {(row["model"], row["provider"]): row for row in result["results"]}
    assert set(rows) == {("ref.onnx", "cpu"), ("pruned.onnx", "cpu")}
    for row in rows.values():
        times = row["latency_ms"]
        assert times["runs"] == 3
        assert 0 < times["min_ms"] <= times["median_ms"] <= times["p90_ms"]
        assert row["throughput_per_s"] == pytest.approx(2 * 1000 / times["median_ms"], rel=1e-3)
        peak = row["memory"]
        assert peak["available"] and peak["peak_rss_bytes"] > 0
        assert peak["peak_rss_bytes"] >= peak["baseline_rss_bytes"] > 0
        assert peak["providers_used"][0] == runtime.CPU
    ref_ms = rows["ref.onnx", "cpu"]["latency_ms"]["median_ms"]
    assert rows["ref.onnx", "cpu"]["speedup"] == 1.0
    assert rows["pruned.onnx", "cpu"]["speedup"] == pytest.approx(
        ref_ms / rows["pruned.onnx", "cpu"]["latency_ms"]["median_ms"], rel=1e-3)

    table = done.stdout
    assert "ref.onnx" in table and "pruned.onnx" in table
    assert "cuda" in table and "skipped:" in table and "CUDAExecutionProvider" in table


@pytest.mark.skipif(CUDA_IN_ORT, reason="this onnxruntime has CUDA")
def test_cli_only_unavailable_provider_is_a_one_line_error(pair, tmp_path: Path) -> None:
    done = cli(str(pair[0]), "--provider", "cuda", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error: --provider"), done.stderr
    assert "CUDAExecutionProvider" in lines[0]


def test_cli_bad_shapes_name_is_a_one_line_error(pair, tmp_path: Path) -> None:
    done = cli(str(pair[0]), "--shapes", "input_ids:1x8", "--quiet", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["onnxprune: error: --shapes: model has no input 'input_ids' (inputs: input)"]


# ------------------------------------------------------------------------- the library


def test_shapes_fix_the_symbolic_dims_of_a_dynamic_model(zoo) -> None:
    bert = zoo("bert")
    small = bench([bert], BenchOptions(memory=False, **FAST))
    # Symbolic dims default to a real sequence length (32 here, batch 1); [2, 48] is larger in both.
    large = bench([bert], BenchOptions(shapes={"input_ids": (2, 48)}, memory=False, **FAST))
    model = large["models"][0]
    assert model["input_shapes"] == {"input_ids": [2, 48], "attention_mask": [2, 48]}
    assert model["batch"] == 2
    assert small["models"][0]["input_shapes"]["input_ids"] != [2, 48]
    assert model["flops"] > small["models"][0]["flops"] > 0
    assert large["results"][0]["throughput_per_s"] == pytest.approx(
        2 * 1000 / large["results"][0]["latency_ms"]["median_ms"], rel=1e-3)


@pytest.mark.skipif(TRT_IN_ORT or TRT_USABLE, reason="TensorRT is usable here")
def test_tensorrt_unavailable_is_reported_not_raised(pair) -> None:
    result = bench([pair[0]], BenchOptions(providers=["cpu", "tensorrt"], memory=False, **FAST))
    # The exact reason depends on how TensorRT is missing (not installed, broken, no CUDA buffers).
    assert result["tensorrt_python"]["available"] is False and result["tensorrt_python"]["reason"]
    skipped = {entry["provider"]: entry for entry in result["providers"] if not entry["available"]}
    assert set(skipped) == {"tensorrt", "tensorrt-python"}
    assert [row["provider"] for row in result["results"]] == ["cpu"]
    table = format_table(result)
    assert "tensorrt-python" in table and result["tensorrt_python"]["reason"] in table
    with pytest.raises(InvalidOptionError, match="nothing can run here"):
        bench([pair[0]], BenchOptions(providers=["tensorrt"], memory=False, **FAST))


def test_external_data_counts_on_disk(pair, tmp_path: Path) -> None:
    proto = onnx.load(pair[0])
    target = tmp_path / "ext.onnx"
    onnx.save(proto, target, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    result = bench([pair[0], target], BenchOptions(memory=False, **FAST))
    ext = result["models"][1]
    assert ext["label"] == "ext.onnx"
    assert ext["bytes_on_disk"] == target.stat().st_size + (tmp_path / "ext.onnx.data").stat().st_size
    assert ext["params"] == result["models"][0]["params"]


def test_sparsity_metadata_turns_tensorrt_sparsity_on_unless_overridden(pair, tmp_path: Path) -> None:
    proto = onnx.load(pair[0])
    onnx.helper.set_model_props(proto, {trt.SPARSITY_METADATA_KEY: json.dumps(
        {"pattern": "2:4", "weights": ["layer1.0.conv1.weight"]})})
    sparse = tmp_path / "sparse.onnx"
    onnx.save(proto, sparse)
    auto = bench([pair[0], sparse], BenchOptions(memory=False, **FAST))
    assert [model["tensorrt_sparse"] for model in auto["models"]] == [False, True]
    assert auto["models"][1]["sparsity"]["pattern"] == "2:4"
    forced = bench([pair[0], sparse], BenchOptions(memory=False, sparse=False, **FAST))
    assert [model["tensorrt_sparse"] for model in forced["models"]] == [False, False]


def test_same_file_twice_gets_distinct_labels(pair) -> None:
    result = bench([pair[0], pair[0]], BenchOptions(memory=False, **FAST))
    assert [row["model"] for row in result["results"]] == ["ref.onnx", "ref.onnx (2)"]


def test_options_are_checked() -> None:
    with pytest.raises(InvalidOptionError, match="--provider 'rocm'"):
        BenchOptions(providers=["rocm"]).check()
    with pytest.raises(InvalidOptionError, match="--threads"):
        BenchOptions(threads=0).check()
    options = BenchOptions(providers=["cpu", "cpu"])
    options.check()
    assert options.providers == ["cpu"]


# ------------------------------------------------------------------------- latency and runtime helpers


def test_measure_callables_interleaves_and_wraps_errors() -> None:
    calls: list[str] = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    stats = latency.measure_callables(runners, warmup=2, runs=4)
    assert calls == ["a", "b"] * 2 + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert stats["a"].runs == 4 and latency.throughput(stats["a"], 8) > 0

    def broken() -> None:
        raise RuntimeError("device lost\nmore detail")

    with pytest.raises(ValidationError, match=r"failed to run 'x': device lost$"):
        latency.measure_callables({"x": broken}, warmup=0, runs=1)


def test_provider_chain_and_unavailable_provider(pair) -> None:
    assert runtime.provider_chain(runtime.CPU) == [runtime.CPU]
    assert runtime.provider_chain(runtime.TENSORRT, {"trt_fp16_enable": True}) == [
        (runtime.TENSORRT, {"trt_fp16_enable": True}), runtime.CUDA, runtime.CPU]
    assert runtime.create_provider_session(pair[0], runtime.CPU, threads=1).get_providers()[0] == runtime.CPU
    if not CUDA_IN_ORT:
        with pytest.raises(InvalidOptionError, match="CUDAExecutionProvider"):
            runtime.create_provider_session(pair[0], runtime.CUDA)


# ------------------------------------------------------------------------- onnxprune.trt without TensorRT


def test_trt_entry_points_without_tensorrt(pair, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail even where it is installed
    assert trt.tensorrt_available() == (False, trt.NOT_INSTALLED)
    report = {"available": False, "reason": "tensorrt is not installed: ONNX Runtime only"}
    assert trt.unavailable_report() == report
    assert trt.compare_dense_sparse(pair[0], pair[1], {"input": (1, 3, 64, 64)}) == report
    with pytest.raises(trt.TensorRTUnavailableError) as caught:
        trt.build_engine(pair[0], fp16=True, sparse=True)
    assert isinstance(caught.value, ValidationError) and caught.value.report() == report
    result = bench([pair[0]], BenchOptions(providers=["cpu", "tensorrt"], memory=False, **FAST))
    assert result["tensorrt_python"] == report


def test_parse_sparsity_log() -> None:
    messages = [
        "(Sparsity) Layers eligible for sparse math: Conv_3, Conv_6 + Relu_7, /layer1/conv/Conv",
        "Total Host Persistent Memory: 160",
        "(Sparsity) TRT inference plan picks sparse implementation for layers: Conv_6 + Relu_7",
        "(Sparsity) TRT inference plan picked sparse implementation for layers: Conv_3",
    ]
    assert trt.parse_sparsity_log(messages) == {
        "eligible": ["Conv_3", "Conv_6 + Relu_7", "/layer1/conv/Conv"], "picked": ["Conv_6 + Relu_7", "Conv_3"]}
    nothing_picked = ["[I] [TRT] (Sparsity) Layers eligible for sparse math: MatMul_51",
                      "[I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers:"]
    assert trt.parse_sparsity_log(nothing_picked) == {"eligible": ["MatMul_51"], "picked": []}
    assert trt.parse_sparsity_log(["Detected 1 inputs and 1 output network tensors."]) == {
        "eligible": [], "picked": []}


def test_sparse_layers_from_inspector() -> None:
    detailed = {"Layers": [
        {"Name": "Conv_3", "TacticName": "sm80_xmma_fprop_sparse_conv_interleaved_f16f16_f16", "TacticValue": 1},
        {"Name": "Conv_6", "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16_f16", "TacticValue": 2},
        {"Name": "Reformat", "LayerType": "Reformat"},
    ]}
    assert trt.sparse_layers_from_inspector(detailed) == ["Conv_3"]
    assert trt.sparse_layers_from_inspector(json.dumps(detailed)) == ["Conv_3"]
    assert trt.sparse_layers_from_inspector({"Layers": ["Conv_3", "Conv_6"]}) == []  # not DETAILED


def test_ort_tensorrt_options(tmp_path: Path) -> None:
    assert trt.ort_tensorrt_options(fp16=True, sparse=False) == {"trt_fp16_enable": True, "trt_sparsity_enable": False}
    options = trt.ort_tensorrt_options(False, True, {"input_ids": (2, 16), "mask": (2, 16)}, tmp_path)
    assert options["trt_sparsity_enable"] is True
    for key in ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"):
        assert options[key] == "input_ids:2x16,mask:2x16"
    assert options["trt_engine_cache_enable"] is True and options["trt_engine_cache_path"] == str(tmp_path)


def test_sparsity_metadata_parsing(pair, tmp_path: Path) -> None:
    assert trt.sparsity_metadata(pair[0]) is None
    proto = onnx.load(pair[0])
    onnx.helper.set_model_props(proto, {trt.SPARSITY_METADATA_KEY: "{not json"})
    assert trt.sparsity_metadata(proto)["invalid"] is True
    assert not trt.has_2_4_weights(trt.sparsity_metadata(proto))
    assert not trt.has_2_4_weights({"pattern": "2:4", "weights": []})
    assert not trt.has_2_4_weights({"pattern": "4:8", "weights": ["w"]})
    assert trt.has_2_4_weights({"pattern": "2:4", "weights": ["w"]})


@pytest.mark.skipif(CUDA_IN_ORT, reason="this onnxruntime has CUDA")
@pytest.mark.filterwarnings("ignore:Specified provider")
def test_listed_provider_that_falls_back_to_cpu_is_skipped(pair, monkeypatch) -> None:
    # onnxruntime-gpu without CUDA libraries lists CUDA but runs on the CPU: that must not be timed as CUDA.
    monkeypatch.setattr(runtime, "available_providers", lambda: [runtime.CUDA, runtime.CPU])
    result = bench([pair[0]], BenchOptions(providers=["cpu", "cuda"], memory=False, **FAST))
    cuda = next(entry for entry in result["providers"] if entry["provider"] == "cuda")
    assert cuda["available"] is False and "fell back" in cuda["reason"]
    assert [row["provider"] for row in result["results"]] == ["cpu"]
    with pytest.raises(InvalidOptionError, match=r"nothing can run here.*fell back"):
        bench([pair[0]], BenchOptions(providers=["cuda"], memory=False, **FAST))


def test_tensorrt_python_failure_keeps_the_other_results(pair, monkeypatch) -> None:
    def cannot_build(*args, **kwargs):
        raise ValidationError("TensorRT cannot parse 'ref.onnx': unsupported node")

    monkeypatch.setattr(trt, "tensorrt_available", lambda: (True, "tensorrt 10.0 with torch buffers"))
    monkeypatch.setattr(trt, "build_engine", cannot_build)
    result = bench([pair[0]], BenchOptions(providers=["cpu", "tensorrt"], memory=False, **FAST))
    assert result["tensorrt_python"] == {"available": False,
                                         "reason": "failed: TensorRT cannot parse 'ref.onnx': unsupported node"}
    assert [row["provider"] for row in result["results"]] == ["cpu"]
