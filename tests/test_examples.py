"""Every example in examples/ runs as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    # Examples documented as taking [OUT] write there; the others read the shipped model.
    extra = [str(tmp_path / "out.onnx")] if "[OUT]" in script.read_text() else []
    result = subprocess.run([sys.executable, str(script), *extra], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_shipped_model_is_what_models_builds():
    import onnx

    shipped = onnx.load(str(ROOT / "models" / "zoo" / "yolo_tiny.onnx"))
    assert [o.name for o in shipped.graph.output] == ["p3", "p4", "p5"]
