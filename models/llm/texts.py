"""English text for calibration and evaluation, from what ships with Python (no download).

Two disjoint sources, so pruning is never judged on the text it was calibrated on:

- ``eval_texts()``: prose paragraphs of Python's bundled help text (``pydoc_data.topics``, the
  Language Reference's narrative), topics in sorted key order, code and grammar blocks removed.
- ``calib_texts()``: prose paragraphs of the docstrings of ``CALIB_MODULES`` (module, public
  classes and functions), in that order. Library documentation rather than the language
  reference: a different text, in the way C4 calibration differs from WikiText evaluation.

Both depend on the running Python's version (3.11.7 here); ``describe()`` records digests.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re
import sys

import numpy as np

CALIB_MODULES = (
    "argparse", "bisect", "calendar", "collections", "configparser", "contextlib", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "doctest", "email.message", "enum", "fractions",
    "ftplib", "functools", "gettext", "heapq", "http.client", "http.cookiejar", "imaplib", "inspect",
    "ipaddress", "json", "locale", "logging", "mailbox", "optparse", "pathlib", "pickle", "pprint",
    "queue", "random", "sched", "secrets", "selectors", "shlex", "shutil", "smtplib", "socketserver",
    "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "tokenize", "typing", "unittest.case", "urllib.parse", "urllib.request", "uuid", "warnings",
    "wave", "weakref", "xml.dom.minidom", "zipfile",
)
EVAL_CHARS = 40_000  # ~9k tokens: ~70 windows of 128, a 30 s perplexity run on 2 cores
CALIB_CHARS = 60_000
MIN_WORDS = 8  # shorter paragraphs are mostly headings and list fragments


def _prose(text: str) -> list[str]:
    """Paragraphs of running text: blank-line separated, none of whose lines is indented
    (code, grammar productions, tables) or a doctest prompt; lines joined by spaces."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.splitlines()
        if not lines or any(ln.startswith((" ", "\t", ">>>")) for ln in lines):
            continue
        joined = " ".join(ln.strip() for ln in lines)
        if len(joined.split()) >= MIN_WORDS:
            out.append(joined)
    return out


def _take(paragraphs: list[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for para in paragraphs:
        if total >= max_chars:
            break
        out.append(para)
        total += len(para) + 2
    return out


@functools.cache
def _eval_paragraphs() -> tuple[str, ...]:
    from pydoc_data.topics import topics

    return tuple(p for key in sorted(topics) for p in _prose(topics[key]))


@functools.cache
def _calib_paragraphs() -> tuple[str, ...]:
    out: list[str] = []
    for name in CALIB_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # a stripped-down Python; the text just gets shorter
            continue
        docs = [inspect.getdoc(mod) or ""]
        for attr, obj in sorted(vars(mod).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                docs.append(inspect.getdoc(obj) or "")
        for doc in docs:
            out.extend(_prose(doc))
    seen = set(_eval_paragraphs())  # a docstring quoted in the help text stays out of calibration
    return tuple(dict.fromkeys(p for p in out if p not in seen))


def eval_texts(max_chars: int = EVAL_CHARS) -> list[str]:
    """Held-out evaluation paragraphs (help text prose), the first ``max_chars`` characters."""
    return _take(list(_eval_paragraphs()), max_chars)


def calib_texts(max_chars: int = CALIB_CHARS) -> list[str]:
    """Calibration paragraphs (stdlib docstring prose), the first ``max_chars`` characters."""
    return _take(list(_calib_paragraphs()), max_chars)


def token_windows(texts: list[str], window: int, max_windows: int | None = None) -> np.ndarray:
    """int64 [n, window]: the texts joined by blank lines, tokenized once (no BOS: the model's
    tokenizer adds none) and cut into consecutive non-overlapping windows; the tail shorter
    than a window is dropped so every window is full (no padding, every mask all ones)."""
    from .fetch import tokenizer

    if window < 2:
        raise ValueError(f"window must be >= 2 tokens, not {window}")
    ids = np.asarray(tokenizer()("\n\n".join(texts))["input_ids"], dtype=np.int64)
    n = len(ids) // window
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"{len(ids)} tokens of text do not fill one window of {window}")
    return ids[: n * window].reshape(n, window)


def describe() -> dict:
    """What the two text sets are, with sizes and digests (they change with Python's version)."""
    def info(texts: list[str]) -> dict:
        joined = "\n\n".join(texts)
        return {"paragraphs": len(texts), "chars": len(joined),
                "sha256": hashlib.sha256(joined.encode()).hexdigest()}

    return {"python": sys.version.split()[0],
            "eval": {"source": "pydoc_data.topics prose, sorted topics", **info(eval_texts())},
            "calib": {"source": f"docstring prose of {len(CALIB_MODULES)} stdlib modules",
                      **info(calib_texts())}}
