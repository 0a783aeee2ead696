"""Channel counts the target runtime's kernels run at full speed, per kind of layer.

A pruned layer whose channel count the runtime's fast kernel cannot take falls back to a slower one,
and the model gets smaller without getting faster. Where each number comes from:

- ORT CPU, x86 (MLAS): Conv runs in the blocked NCHWc layout only when its input channels are a
  multiple of the block (or fewer than one block) and, for grouped/depthwise Conv, its output channels
  too (onnxruntime/core/optimizer/nchwc_transformer.cc); the block is MlasNchwcGetBlockSize(): 16 floats
  with AVX-512F, 8 with AVX2. Everything else runs the generic im2col + GEMM path. MLAS's SGEMM packs
  B in strips of 16 columns (MLAS_SGEMM_STRIDEN_THREAD_ALIGN), so MatMul/Gemm output features want 16.
  `bench/alignment.py` measures both on this machine.
- ORT CPU, other processors: no NCHWc path; GEMM kernels work on 4-float NEON vectors: 4 and 8.
- CUDA (cuDNN/cuBLAS) FP16 tensor cores: channel and GEMM dimensions multiples of 8 (NVIDIA's Deep
  Learning Performance Guide, "Tensor Core Requirements").
- TensorRT: multiples of 16, which also covers INT8 tensor-core kernels (same guide: 16 for INT8).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache

DEVICES = ("cpu", "cuda", "tensorrt")
CONV_OPS = frozenset({"Conv", "ConvTranspose"})
GEMM_OPS = frozenset({"MatMul", "Gemm", "MatMulNBits", "MatMulInteger", "QLinearMatMul", "FusedMatMul"})


@dataclass(frozen=True)
class Alignment:
    device: str
    conv: int
    gemm: int
    source: str

    def multiple_for(self, op_types: set[str]) -> int:
        """The multiple a channel space should keep: the strictest one among the layers it touches."""
        multiple = 1
        if op_types & CONV_OPS:
            multiple = max(multiple, self.conv)
        if op_types & GEMM_OPS:
            multiple = max(multiple, self.gemm)
        return multiple

    def to_dict(self) -> dict:
        return {"device": self.device, "conv": self.conv, "gemm": self.gemm, "source": self.source}


@lru_cache(maxsize=1)
def _x86_vector_width() -> int | None:
    """Floats per SIMD register MLAS uses on this x86 processor (16: AVX-512F, 8: AVX2), None elsewhere."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return 8  # every x86-64 processor ORT's wheels run fast on has AVX2
    return 16 if "avx512f" in flags else 8


def alignment_for(device: str) -> Alignment:
    if device == "cpu":
        width = _x86_vector_width()
        if width is None:
            return Alignment("cpu", 4, 8, f"ORT CPU on {platform.machine()}: no NCHWc kernels; NEON GEMM")
        isa = "AVX-512F" if width == 16 else "AVX2"
        return Alignment("cpu", width, 16, f"ORT CPU (MLAS, {isa}): NCHWc block {width}, SGEMM strips of 16")
    if device == "cuda":
        return Alignment("cuda", 8, 8, "CUDA FP16 tensor cores: multiples of 8")
    if device == "tensorrt":
        return Alignment("tensorrt", 16, 16, "TensorRT FP16/INT8 tensor cores: multiples of 16")
    raise ValueError(f"unknown device {device!r}")
