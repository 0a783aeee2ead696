"""Files onnxprune writes besides models: JSON reports, HTML pages, plots.

They are written the way models are (saving.py): a new temporary file beside the target, created
with O_EXCL so a planted file or symlink under a predictable name is never opened, then renamed over
the target, so a symlink at the target is replaced, never followed. And they are never written onto
a model file the same command reads or writes: `--report in.onnx` must not destroy the input.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import InvalidModelError, InvalidOptionError


def model_files(path: str | os.PathLike, strict: bool = False) -> set[Path]:
    """The model file and the external-data files it reads. Not `strict`: just the file when it
    cannot be parsed (loading it later reports that properly)."""
    from . import protoio

    path = Path(path)
    try:
        loaded = protoio.read_model(path)
    except InvalidModelError:
        if strict:
            raise
        return {path.resolve()}
    return {path.resolve()} | {Path(w.source[0]).resolve() for w in loaded.weights if w.source is not None}


def model_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of a model and its external data, without reading the weights."""
    return sum(file.stat().st_size for file in model_files(path, strict=True))


def check_output_path(path: str | os.PathLike, option: str, protected: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse, before any work is done, a path that cannot be written or that names a model file."""
    path = Path(path)
    for other in protected:
        if _same(path, Path(other)):
            raise InvalidOptionError(f"{option} '{path}' would overwrite the model file '{other}'; "
                                     "choose another name")
    check_writable(path, option)


def check_model_output(target: str | os.PathLike, option: str = "output") -> None:
    """The model OUT and its OUT.data: both written by renaming a file staged in OUT's folder, so that
    folder must take new files, and neither name may be a folder."""
    from .saving import data_path

    target = Path(target)
    check_writable(target, option)
    data = data_path(target)
    if data.is_dir():
        raise InvalidOptionError(f"{option} '{target}': its data file '{data}' is a folder")


def check_writable(path: str | os.PathLike, option: str) -> None:
    """`path` can be created or replaced: not a folder, in a folder that exists and takes a new file.

    The folder is probed by creating (and at once removing) an empty file, because that is what every
    write here does (a temporary file beside the target, renamed over it): permission bits, read-only
    mounts, ACLs and network file systems all answer the same way to it, and the check runs as the
    same user as the write. Called before any work, so a long prune never ends on "cannot write"."""
    path = Path(path)
    if path.is_dir():
        raise InvalidOptionError(f"{option} '{path}' is a folder; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InvalidOptionError(f"{option} '{path}': folder '{folder}' {what}")
    try:
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
    except OSError as exc:
        raise InvalidOptionError(f"{option} '{path}': folder '{folder}' is not writable "
                                 f"({exc.strerror or type(exc).__name__})") from None
    os.close(descriptor)
    os.unlink(probe)


def check_distinct(paths: dict[str, str | os.PathLike | None]) -> None:
    """Two options naming the same file would leave only the last writer's content."""
    given = [(option, Path(path)) for option, path in paths.items() if path]
    for index, (option, path) in enumerate(given):
        for other_option, other in given[index + 1:]:
            if _same(path, other):
                raise InvalidOptionError(f"{option} and {other_option} name the same file '{path}'")


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` to a fresh temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def _same(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
