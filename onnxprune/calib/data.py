"""Calibration data: a few unlabeled inputs that stand in for the deployment distribution.

Sources, the same conventions as Polygraphy's data loaders:
- `data.npz`: input name -> array [N, ...] (N samples along axis 0; batched here);
- `loader.py`: a script with `load_data()` yielding feed dicts (input name -> array);
- nothing: seeded random data from the declared shapes, with a warning that real data is better.
"""

from __future__ import annotations

import importlib.util
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


def _check_feed(feed: dict, specs: list[InputSpec], where: str) -> dict[str, np.ndarray]:
    names = {spec.name for spec in specs}
    missing = names - set(feed)
    if missing:
        raise InvalidOptionError(f"--calib {where}: no data for model input(s) {', '.join(sorted(missing))}")
    out = {}
    for spec in specs:
        array = np.asarray(feed[spec.name])
        if spec.shape is not None and array.ndim != len(spec.shape):
            raise InvalidOptionError(
                f"--calib {where}: input '{spec.name}' has rank {array.ndim}, the model expects {len(spec.shape)}"
            )
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
