"""Calibration data: a few unlabeled inputs that stand in for the deployment distribution.

Sources, the same conventions as Polygraphy's data loaders:
- `data.npz`: input name -> array [N, ...] (N samples along axis 0; batched here);
- `loader.py`: a script with `load_data()` yielding feed dicts (input name -> array);
- nothing: seeded random data from the declared shapes, with a warning that real data is better.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..check.inputs import InputSpec, random_feeds
from ..errors import InvalidOptionError


@dataclass
class CalibrationData:
    """A replayable set of feeds (statistics passes run over it more than once)."""

    feeds: list[dict[str, np.ndarray]]
    source: str
    samples: int

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)


def _check_feed(feed: dict, specs: list[InputSpec], where: str, option: str = "--calib") -> dict[str, np.ndarray]:
    names = {spec.name for spec in specs}
    missing = names - set(feed)
    if missing:
        raise InvalidOptionError(f"{option} {where}: no data for model input(s) {', '.join(sorted(missing))}")
    out = {}
    for spec in specs:
        array = np.asarray(feed[spec.name])
        if spec.shape is not None and array.ndim != len(spec.shape):
            raise InvalidOptionError(
                f"{option} {where}: input '{spec.name}' has rank {array.ndim}, the model expects {len(spec.shape)}"
            )
        for axis, (declared, size) in enumerate(zip(spec.shape or (), array.shape)):
            if isinstance(declared, int) and declared != size:
                raise InvalidOptionError(f"{option} {where}: input '{spec.name}' has shape "
                                         f"{'x'.join(map(str, array.shape))}, the model fixes dim {axis} to {declared}")
        out[spec.name] = array.astype(spec.dtype, copy=False)
    return out


def _from_npz(path: Path, specs: list[InputSpec], batch: int, limit: int | None) -> list[dict[str, np.ndarray]]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidOptionError(f"--calib '{path}' is not a readable .npz file ({exc})") from None
    arrays = {name: archive[name] for name in archive.files}
    names = [spec.name for spec in specs]
    absent = [name for name in names if name not in arrays]
    if absent:
        raise InvalidOptionError(f"--calib '{path}' has no array for input(s) {', '.join(absent)} "
                                 f"(it has {', '.join(arrays) or 'none'})")
    # A model that fixes its batch dim runs only at that batch, whatever --calib-batch says.
    batch = _fixed_batch(specs) or batch
    count = min(arrays[name].shape[0] for name in names)
    if limit is not None:
        count = min(count, limit)
    if count == 0:
        raise InvalidOptionError(f"--calib '{path}' holds no samples")
    feeds = []
    for start in range(0, count, batch):
        feed = {name: arrays[name][start:start + batch] for name in names}
        feeds.append(_check_feed(feed, specs, f"'{path}'"))
    return feeds


def _fixed_batch(specs: list[InputSpec]) -> int | None:
    dims = {spec.shape[0] if spec.shape else None for spec in specs}
    (dim,) = dims if len(dims) == 1 else (None,)
    return dim if isinstance(dim, int) and dim > 0 else None


def _from_script(path: Path, specs: list[InputSpec], limit: int | None) -> list[dict[str, np.ndarray]]:
    spec = importlib.util.spec_from_file_location(f"onnxprune_calib_{abs(hash(str(path)))}", path)
    if spec is None or spec.loader is None:
        raise InvalidOptionError(f"--calib '{path}' cannot be imported as a Python script")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
        load: Callable | None = getattr(module, "load_data", None)
        if load is None:
            raise InvalidOptionError(f"--calib '{path}' defines no load_data() function")
        feeds = []
        for index, feed in enumerate(load()):
            if limit is not None and index >= limit:
                break
            if not isinstance(feed, dict):
                raise InvalidOptionError(f"--calib '{path}': load_data() must yield dicts of input name -> array")
            feeds.append(_check_feed(feed, specs, f"'{path}'"))
    finally:
        sys.path.remove(str(path.parent))
    if not feeds:
        raise InvalidOptionError(f"--calib '{path}': load_data() yielded nothing")
    return feeds


def load_input_feeds(source: str | os.PathLike, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """--load-inputs: feeds exactly as given, as Polygraphy's `--load-inputs` reads them.

    A .json file is a list of feed dicts (input name -> array) in Polygraphy's encoding (what
    `polygraphy run --save-inputs` writes: base64 of np.save), or with plain nested lists; an .npz
    holds one feed (input name -> array, fed as it is, not split into samples like --calib's).
    """
    path = Path(source)
    if not path.is_file():
        raise InvalidOptionError(f"--load-inputs '{path}' does not exist")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                raw = [{name: archive[name] for name in archive.files}]
        except (OSError, ValueError) as exc:
            raise InvalidOptionError(f"--load-inputs '{path}' is not a readable .npz file ({exc})") from None
    elif path.suffix == ".json":
        try:
            loaded = json.loads(path.read_text(), object_hook=_decode_polygraphy_array)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise InvalidOptionError(f"--load-inputs '{path}' is not a readable JSON file "
                                     f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        raw = [loaded] if isinstance(loaded, dict) else loaded
        if not isinstance(raw, list) or not all(isinstance(feed, dict) for feed in raw):
            raise InvalidOptionError(f"--load-inputs '{path}': expected a list of feeds (input name -> array)")
    else:
        raise InvalidOptionError(f"--load-inputs '{path}': give a .json feed list (Polygraphy's) or an .npz")
    if not raw:
        raise InvalidOptionError(f"--load-inputs '{path}' holds no feeds")
    feeds = []
    for feed in raw:
        try:
            arrays = {name: np.asarray(value) for name, value in feed.items()}
        except ValueError as exc:
            raise InvalidOptionError(f"--load-inputs '{path}': an input is not an array ({exc})") from None
        feeds.append(_check_feed(arrays, specs, f"'{path}'", "--load-inputs"))
    return feeds


def _decode_polygraphy_array(obj: dict) -> object:
    """Polygraphy's JSON form of an ndarray: {"array": base64 of np.save, "polygraphy_class": "ndarray"}
    (older files mark it with "__polygraphy_encoded_ndarray" and may hold latin-1 text)."""
    if "array" not in obj or not (obj.get("polygraphy_class") == "ndarray" or "__polygraphy_encoded_ndarray" in obj):
        return obj
    text = obj["array"]
    try:
        data = base64.b64decode(text.encode(), validate=True)
    except (ValueError, binascii.Error):
        data = text.encode("latin-1")
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return loaded
    return next(iter(loaded.values()))  # an old file holding an .npz archive


def load_calibration(
    source: str | os.PathLike | None,
    specs: list[InputSpec],
    shapes: dict[str, tuple[int, ...]],
    *,
    seed: int = 0,
    batch: int = 8,
    limit: int | None = None,
    random_batches: int = 4,
    log: Callable[[str], None] = lambda message: None,
) -> CalibrationData:
    if source is None:
        log("warning: no --calib data; calibrating on seeded random inputs (real data gives much better results)")
        feeds = random_feeds(specs, shapes, seed, count=random_batches)
        return CalibrationData(feeds, "random", sum(next(iter(f.values())).shape[0] for f in feeds))
    path = Path(source)
    if not path.is_file():
        raise InvalidOptionError(f"--calib '{path}' does not exist")
    if path.suffix == ".npz":
        feeds = _from_npz(path, specs, batch, limit)
    elif path.suffix == ".py":
        feeds = _from_script(path, specs, limit)
    else:
        raise InvalidOptionError(f"--calib '{path}': give an .npz file or a .py script with load_data()")
    samples = sum(next(iter(feed.values())).shape[0] if feed else 0 for feed in feeds)
    return CalibrationData(feeds, str(path), samples)
