"""CUDA device buffers and a stream for TensorRT engines, from torch (with CUDA) or cuda-python.

torch and cuda-python are imported only when called: neither is a dependency of onnxprune.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ValidationError


def buffer_backend() -> tuple[str | None, str | None]:
    """Which library can hold the engine's device buffers: torch with CUDA, else cuda-python."""
    try:
        import torch

        if torch.cuda.is_available():
            return "torch", None
    except Exception:  # torch is optional here; any import failure just means "not torch"
        pass
    if _cudart() is not None:
        return "cuda-python", None
    return None, "tensorrt is installed but neither torch with CUDA nor cuda-python is usable for device buffers"


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python 12.6+
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return None
    return cudart


class _TorchBuffers:
    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.handle = int(self.stream.cuda_stream)

    def from_host(self, array: np.ndarray) -> tuple[Any, int]:
        tensor = self.torch.from_numpy(np.ascontiguousarray(array)).cuda()
        return tensor, int(tensor.data_ptr())

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[Any, int]:
        torch_dtype = self.torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        tensor = self.torch.empty(shape, dtype=torch_dtype, device="cuda")
        return tensor, int(tensor.data_ptr())

    def to_host(self, buffer: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return buffer.cpu().numpy().reshape(shape)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def ready(self) -> None:
        self.torch.cuda.synchronize()  # from_host copies ran on the default stream

    def close(self) -> None:
        pass


class _CudaPythonBuffers:
    def __init__(self) -> None:
        self.cudart = _cudart()
        self.stream = self._check(self.cudart.cudaStreamCreate())
        self.handle = int(self.stream)
        self.pointers: list[int] = []

    def _check(self, result: Any) -> Any:
        error, *rest = result if isinstance(result, tuple) else (result,)
        if error != self.cudart.cudaError_t.cudaSuccess:
            raise ValidationError(f"CUDA call failed: {error}")
        return rest[0] if len(rest) == 1 else rest

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[Any, int]:
        nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        pointer = int(self._check(self.cudart.cudaMalloc(nbytes)))
        self.pointers.append(pointer)
        return pointer, pointer

    def from_host(self, array: np.ndarray) -> tuple[Any, int]:
        array = np.ascontiguousarray(array)
        buffer, pointer = self.empty(array.shape, array.dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpy(pointer, array.ctypes.data, array.nbytes, kind))
        return buffer, pointer

    def to_host(self, buffer: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        host = np.empty(shape, dtype=dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpy(host.ctypes.data, buffer, host.nbytes, kind))
        return host

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream))

    def ready(self) -> None:
        pass  # cudaMemcpy is synchronous

    def close(self) -> None:
        for pointer in self.pointers:
            self.cudart.cudaFree(pointer)
        self.pointers.clear()


def make_buffers() -> Any:
    """Buffers from torch when it sees a GPU, else from cuda-python (see `buffer_backend`)."""
    backend, reason = buffer_backend()
    if backend is None:
        raise ValidationError(reason or "no CUDA buffer library")
    return _TorchBuffers() if backend == "torch" else _CudaPythonBuffers()
