"""Shared fixtures: the reference models of models/, exported once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """zoo(name, exporter, keep_bn) -> path of that model exported to ONNX (built on first use).

    Exporters fold BatchNorm into the conv before it by default; keep_bn=True keeps the
    BatchNormalization nodes, as models exported in training-ready form have them."""
    import models

    folder = tmp_path_factory.mktemp("zoo")
    built: dict[tuple[str, str, bool], Path] = {}

    def get(name: str, exporter: str = "torchscript", keep_bn: bool = False) -> Path:
        key = (name, exporter, keep_bn)
        if key not in built:
            path = folder / f"{name}_{exporter}{'_bn' if keep_bn else ''}.onnx"
            built[key] = Path(models.build(name, exporter, path, fold_bn=not keep_bn))
        return built[key]

    return get
