"""The forms whose exporters cannot live in the project's environment, run as subprocesses.

- ``optimum``: optimum-onnx 0.1.0 needs transformers < 4.58, the project has 5.x. It gets
  its own virtual environment, ``cache_dir()/optimum-venv``, made here with ``OPTIMUM_PINS``
  (accelerate included: without it optimum skips its tied-weight deduplication and the file
  holds the embedding twice). ``fetch._patch_config`` already put ``rope_theta`` where 4.57
  reads it.
- ``genai``: onnxruntime-genai 0.18's model builder imports classes only transformers 5 has,
  so it runs in the project's interpreter, with the ``onnxruntime-genai`` wheel installed
  ``--no-deps`` into ``cache_dir()/genai-pkgs`` and put on PYTHONPATH: its only dependencies,
  numpy and onnxruntime, are already there, and the project's environment stays unchanged.

Each environment is made once and marked ready by a file listing what was installed.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

from .fetch import HF_OFFLINE, cache_dir

OPTIMUM_PINS = (
    "torch==2.13.0",  # the repo's constraints.txt pin: the CPU wheel here, not the multi-GB CUDA one
    "optimum-onnx==0.1.0", "optimum==2.1.0", "transformers==4.57.6", "accelerate==1.16.0",
    "onnx==1.23.2", "onnxruntime==1.32.0",
)
GENAI_PINS = ("onnxruntime-genai==0.18.0",)
_READY = ".ready"


def _run(cmd: list[str], log: pathlib.Path, env: dict[str, str] | None = None) -> None:
    """Run ``cmd`` with its output in ``log`` (exporters print thousands of lines); on failure
    raise with the log's tail, which is where the reason is."""
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{cmd[0]} ... exited {proc.returncode}; see {log}\n{tail}")


def _ready(folder: pathlib.Path, pins: tuple[str, ...]) -> bool:
    marker = folder / _READY
    return marker.exists() and marker.read_text().split() == list(pins)


def optimum_venv() -> pathlib.Path:
    """``cache_dir()/optimum-venv`` with ``OPTIMUM_PINS`` installed (~1 min, ~1.5 GB)."""
    venv = cache_dir() / "optimum-venv"
    if _ready(venv, OPTIMUM_PINS):
        return venv
    log = cache_dir() / "optimum-venv.log"
    log.write_text("")
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], log)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          *OPTIMUM_PINS], log)
    (venv / _READY).write_text("\n".join(OPTIMUM_PINS) + "\n")
    return venv


def genai_packages() -> pathlib.Path:
    """``cache_dir()/genai-pkgs``: the onnxruntime-genai wheel alone (``--target``, no deps)."""
    target = cache_dir() / "genai-pkgs"
    if _ready(target, GENAI_PINS):
        return target
    log = cache_dir() / "genai-pkgs.log"
    log.write_text("")
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
          "--upgrade", "--target", str(target), *GENAI_PINS], log)
    (target / _READY).write_text("\n".join(GENAI_PINS) + "\n")
    return target


def export_optimum(hf: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """``optimum-cli export onnx --task text-generation-with-past`` with its defaults (opset 18,
    its own validation run). optimum-onnx 0.1.0 writes one decoder that takes an empty or a
    filled past (no merged If model, which older optimum produced)."""
    venv = optimum_venv()
    _run([str(venv / "bin" / "optimum-cli"), "export", "onnx", "--model", str(hf),
          "--task", "text-generation-with-past", str(out_dir)], out_dir / "export.log", HF_OFFLINE)
    return out_dir / "model.onnx"


def export_genai(hf: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """``python -m onnxruntime_genai.models.builder -i HF -o OUT -p fp32 -e cpu`` (its
    ``--help`` crashes; these are the flags it needs). Writes model.onnx + model.onnx.data and
    genai_config.json; ``-c`` points its scratch cache into the output's sibling folder."""
    pkgs = genai_packages()
    scratch = out_dir.parent / (out_dir.name + "-scratch")
    path = os.pathsep.join(p for p in (str(pkgs), os.environ.get("PYTHONPATH", "")) if p)
    try:
        _run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out_dir),
              "-p", "fp32", "-e", "cpu", "-c", str(scratch)], out_dir / "export.log",
             {**HF_OFFLINE, "PYTHONPATH": path})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir / "model.onnx"
