"""Real inputs for every corpus model, with their ground truth.

``real_examples(name, split, n, seed)`` runs the model's recipe (``Entry.recipe``) from
``vision`` (rendered text lines, pages, captchas, click-captcha scenes on real photos, seals),
``sequence`` (file bytes, tokenized sentences, Khmer and Arabic text, Arabic-script names) or
``audio`` (two-speaker speech). Feeds are batch 1, preprocessed as the shipping package does,
and have the entry's catalogue shapes unless ``Entry.fixed_shape`` is False.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import audio, sequence, vision
from .catalogue import CATALOGUE
from .fetch import fetch
from .texts import SPLITS

RECIPES = {**vision.RECIPES, **sequence.RECIPES, **audio.RECIPES}


@dataclass
class Examples:
    """Feeds ``{input name: array}`` and, per feed, what it shows (``truths``)."""

    feeds: list[dict[str, np.ndarray]]
    truths: list[Any]

    def __len__(self) -> int:
        return len(self.feeds)


def real_examples(name: str, split: str = "calib", n: int = 8, seed: int = 0) -> Examples:
    """``n`` real feeds for corpus model ``name`` and their ground truth (see the module doc).
    The RNG is seeded from (name's recipe, split, seed), so two models of one recipe (the
    three DBNet detectors, say) see the same pages. Fewer than ``n`` feeds come back only
    when the split's material runs out (a warning is not raised: check ``len``)."""
    if name not in CATALOGUE:
        raise KeyError(f"unknown corpus model {name!r}; expected one of {', '.join(CATALOGUE)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n}")
    entry = CATALOGUE[name]
    fetch(name)
    rng = np.random.default_rng([zlib.crc32(entry.recipe.encode()), SPLITS.index(split), seed])
    feeds, truths = RECIPES[entry.recipe](entry, split, n, rng)
    for feed in feeds:  # the contract: every input present, the declared dtype, batch 1
        missing = set(entry.shapes) - set(feed)
        assert not missing, f"{name}: recipe {entry.recipe} left out {missing}"
        if entry.fixed_shape:
            for k, v in feed.items():
                assert v.shape == entry.shapes[k], f"{name}: {k} {v.shape} != {entry.shapes[k]}"
    return Examples(feeds, truths)
