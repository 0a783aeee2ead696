"""Shared fixtures: the reference models of models/, exported once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """zoo(name, exporter) -> path of that model exported to ONNX (built on first use)."""
    import models

    folder = tmp_path_factory.mktemp("zoo")
    built: dict[tuple[str, str], Path] = {}

    def get(name: str, exporter: str = "torchscript") -> Path:
        key = (name, exporter)
        if key not in built:
            built[key] = Path(models.build(name, exporter, folder / f"{name}_{exporter}.onnx"))
        return built[key]

    return get
