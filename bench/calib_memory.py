"""Peak memory of calibration-aware pruning on all-MiniLM-L6-v2 with N calibration sentences.

    python -m bench.calib_memory [--sentences 512]

Runs `onnxprune minilm.onnx out.onnx --structured 0.3 --calib sentences.npz` (Wanda scores and
least-squares compensation) in a child process and reports its wall time and peak RSS.
Target: peak RSS under 2 GB with 512 sentences.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ._common import machine_facts, table, write_results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=512)
    args = parser.parse_args(argv)

    import models
    from models import minilm as mini

    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as folder:
        work = Path(folder)
        dense = models.build("minilm", "torchscript", work / "minilm.onnx")
        calib = work / "calib.npz"
        np.savez(calib, **mini.tokenize(mini.sample_sentences(args.sentences, seed=1)))
        command = [sys.executable, "-m", "onnxprune", str(dense), str(work / "out.onnx"), "--structured", "0.3",
                   "--calib", str(calib), "--no-validate", "--report", str(work / "report.json")]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        size_mb = dense.stat().st_size / 2**20
    rows = [["minilm --structured 0.3 --calib", args.sentences, size_mb, seconds, peak_mb]]
    print(table(["run", "sentences", "model MB", "seconds", "peak RSS MB"], rows))
    print("target: peak RSS < 2048 MB with 512 sentences")
    path = write_results("calib_memory.json", {"machine": machine_facts(), "sentences": args.sentences,
                                               "model_mb": size_mb, "seconds": seconds, "peak_rss_mb": peak_mb})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
