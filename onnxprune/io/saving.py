"""Atomic saving: a temporary file beside the target, fsync, then a rename. The input model and
its external data are never written to."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidOptionError
from . import protowrite

if TYPE_CHECKING:
    from .model import Model

# Beyond this estimated size a single-file model would break protobuf's 2 GiB limit.
EXTERNAL_DATA_THRESHOLD = 1_900_000_000


def save_model(model: Model, path: str | os.PathLike, external_data: bool | None = None) -> Path:
    """Write atomically: a temporary file beside the target, then a rename. The input file is never touched.

    external_data None keeps the input's layout, and switches to external data when the model would
    not fit protobuf's 2 GiB limit.
    """
    path = Path(path)
    if model.source is not None and path.exists() and _same_file(path, model.source):
        raise InvalidOptionError(f"output '{path}' is the input model; choose another output path")
    refuse_overwriting_sources(model, path, None)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InvalidOptionError(f"output folder '{folder}' does not exist")
    if external_data is None:
        external_data = model.had_external_data or model.nbytes() > EXTERNAL_DATA_THRESHOLD
    location = data_path(path).name
    refuse_overwriting_sources(model, path, folder / location if external_data else None)
    temps: list[str] = []
    try:
        model_fd, model_tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        temps.append(model_tmp)
        with os.fdopen(model_fd, "wb") as model_file:
            if external_data:
                data_fd, data_tmp = tempfile.mkstemp(dir=folder, prefix=f".{location}.", suffix=".tmp")
                temps.append(data_tmp)
                with os.fdopen(data_fd, "wb") as data_file:
                    external_bytes = protowrite.write_model(model.proto, model.weights.values(), model_file,
                                                         external=(data_file, location))
                    data_file.flush()
                    os.fsync(data_file.fileno())
            else:
                protowrite.write_model(model.proto, model.weights.values(), model_file)
            model_file.flush()
            os.fsync(model_file.fileno())
        if external_data and external_bytes:
            _replace(temps[1], folder / location)
        _replace(temps[0], path)
        temps.clear()
        model.release_pages()
    finally:
        for leftover in temps:
            if os.path.exists(leftover):
                os.unlink(leftover)
    return path


def data_path(model_path: Path) -> Path:
    """Where the external data of a model saved at `model_path` goes."""
    return model_path.with_name(f"{model_path.name}.data")


def refuse_overwriting_sources(model: Model, path: Path, data: Path | None) -> None:
    """Refuse outputs that would replace the files the model's weights are still read from."""
    sources = model.source_files()
    for target in (path, data):
        if target is not None and target.resolve() in sources:
            raise InvalidOptionError(
                f"writing '{target}' would overwrite the input model's own data; choose another output name"
            )


def _replace(temp: str, target: Path) -> None:
    # os.replace swaps the directory entry: a symlink at `target` is replaced, never followed.
    os.chmod(temp, 0o644)
    os.replace(temp, target)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False
