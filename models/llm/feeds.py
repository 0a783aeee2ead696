"""Feed dicts for any form of the model, built from the graph's declared inputs.

The forms disagree on what a decoder step takes; the names are matched here, once. For ids
[b, s] after ``past`` earlier tokens:

- ``input_ids``: the ids (all forms)
- ``attention_mask``: ones [b, past + s]; windows are full, so no padding (all forms)
- ``position_ids``: past .. past+s-1 in every row (optimum)
- ``past_key_values.N.key|value``: [b, kv_heads, past, head_dim]; zeros with a 0-length past
  dim for a fresh sequence, else the previous step's ``present.N.*`` (optimum, genai)
- ``use_cache_branch``: [past > 0], bool (the If input of an optimum merged decoder)
- ``seqlens_k``: int32 [b], past + s - 1; ``total_sequence_length``: int32 scalar, past + s
  (GroupQueryAttention's, where a graph exposes them; the genai builder computes them inside
  from attention_mask)

Shapes and dtypes come from the graph (``onnx.load(..., load_external_data=False)``: no
weights are read), so a form is recognized by what it asks for, not by its name.
"""

from __future__ import annotations

import functools
import pathlib
import re
from dataclasses import dataclass

import numpy as np

PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
PRESENT = re.compile(r"^present\.(\d+)\.(key|value)$")
KV_HEADS, HEAD_DIM = 3, 64  # SmolLM2-135M; used only where a graph leaves these dims symbolic


@dataclass(frozen=True)
class InputInfo:
    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]  # int: fixed, str: symbolic name, None: unknown


@functools.cache
def _inputs(path: str, mtime: float) -> tuple[InputInfo, ...]:
    import onnx
    from onnx import helper

    model = onnx.load(path, load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:  # old-style graphs list initializers as inputs too
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in tt.shape.dim)
        out.append(InputInfo(vi.name, np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)), dims))
    return tuple(out)


def graph_inputs(path: str | pathlib.Path) -> tuple[InputInfo, ...]:
    """The graph's real inputs (initializers excluded), read without loading weights."""
    path = pathlib.Path(path)
    return _inputs(str(path.resolve()), path.stat().st_mtime)


def has_past(inputs: tuple[InputInfo, ...]) -> bool:
    return any(PAST.match(i.name) for i in inputs)


def _past_shape(info: InputInfo, batch: int, past: int) -> tuple[int, ...]:
    # [batch, kv_heads, past_seq, head_dim] in both optimum and genai layouts
    if len(info.shape) != 4:
        raise ValueError(f"input {info.name!r}: expected rank 4 [batch, heads, past, head_dim], got {info.shape}")
    fallback = (batch, KV_HEADS, past, HEAD_DIM)
    return tuple(fallback[i] if i in (0, 2) or not isinstance(d, int) else d for i, d in enumerate(info.shape))


def empty_past(inputs: tuple[InputInfo, ...], batch: int) -> dict[str, np.ndarray]:
    """Zero-length past for every ``past_key_values.*`` input: [batch, kv_heads, 0, head_dim]."""
    return {i.name: np.zeros(_past_shape(i, batch, 0), dtype=i.dtype) for i in inputs if PAST.match(i.name)}


def make_feeds(inputs: tuple[InputInfo, ...], ids: np.ndarray,
               past: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Feeds for token ids [batch, seq] after ``past`` (name -> array, as returned by
    ``presents_to_past``; None: no history, an empty past where the graph takes one).
    Raises ValueError naming any input it does not know how to fill."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"ids must be [batch, seq], got shape {ids.shape}")
    batch, seq = ids.shape
    past = past if past is not None else empty_past(inputs, batch)
    past_len = next(iter(past.values())).shape[2] if past else 0
    total = past_len + seq
    feeds: dict[str, np.ndarray] = {}
    for info in inputs:
        name = info.name
        if name == "input_ids":
            value = ids
        elif name == "attention_mask":
            value = np.ones((batch, total), dtype=info.dtype)
        elif name == "position_ids":
            value = np.broadcast_to(np.arange(past_len, total, dtype=info.dtype), (batch, seq)).copy()
        elif name == "cache_position":
            value = np.arange(past_len, total, dtype=info.dtype)
        elif PAST.match(name):
            if name not in past:
                raise ValueError(f"no past value for graph input {name!r}")
            value = past[name]
        elif name == "use_cache_branch":
            value = np.array([past_len > 0], dtype=info.dtype)
        elif name == "seqlens_k":
            value = np.full((batch,), total - 1, dtype=info.dtype)
        elif name == "total_sequence_length":
            value = np.array(total, dtype=info.dtype)
        else:
            raise ValueError(f"graph input {name!r} {info.shape} is not one a decoder step is known to take")
        feeds[name] = value.astype(info.dtype, copy=False)
    return feeds


def presents_to_past(output_names: list[str], outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """``present.N.key|value`` outputs renamed to the ``past_key_values.N.*`` inputs they feed."""
    past = {}
    for name, value in zip(output_names, outputs):
        m = PRESENT.match(name)
        if m:
            past[f"past_key_values.{m.group(1)}.{m.group(2)}"] = value
    return past


def calibration_feeds(form: str, n_windows: int = 8, window: int = 128, batch: int = 1,
                      path: str | pathlib.Path | None = None) -> list[dict[str, np.ndarray]]:
    """``n_windows`` windows of ``calib_texts()`` as feed dicts for ``form`` (the cached
    ``build(form)`` unless ``path`` is given), ``batch`` windows per dict: real token ids,
    all-ones attention_mask, positions 0..window-1, empty past where the form takes one."""
    from .texts import calib_texts, token_windows

    if path is None:
        from . import build

        path = build(form)
    inputs = graph_inputs(path)
    windows = token_windows(calib_texts(), window, n_windows)
    if len(windows) < n_windows:
        raise ValueError(f"calibration text holds only {len(windows)} windows of {window} tokens")
    return [make_feeds(inputs, windows[i:i + batch]) for i in range(0, n_windows, batch)]
