"""Write the pruned model where nobody reads it, check it, and only then move it into place.

A model that fails onnx's full check, or that ONNX Runtime cannot load or run, must never appear at
the output path: pipelines take a file's presence as success. So the model (and its external data,
under the final names, since the model file refers to its data by name) is written into a private
folder beside the output, checked there, and renamed into place data first, model last.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from ..errors import ValidationError
from .saving import data_path, refuse_overwriting_sources
from .wellformed import checkable

if TYPE_CHECKING:
    from .model import Model


def check_targets(model: Model, target: Path) -> None:
    """Refuse, before anything is written, an output or data file that is the input's own data (the
    staged save cannot see that: it writes elsewhere first)."""
    refuse_overwriting_sources(model, target, data_path(target))


def full_check_error(model: Model) -> str | None:
    """onnx's full check (schemas, types, strict shape inference) of the graph, or the first line of
    its complaint. It runs on the light proto (big weights declared as typed inputs, not copied), so it
    costs the same for a 14 GB model as for a small one; the weight bytes are written from arrays whose
    shapes the header takes, so they cannot disagree with it."""
    try:
        onnx.checker.check_model(checkable(model.light_proto()), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def check_graph(model: Model, input_error: str | None = None) -> str | None:
    """Refuse a pruned graph that fails the check its input passed; returns a note when the input
    already failed it (onnx's own function bodies trip its strict inference, e.g.
    MeanVarianceNormalization), in which case the graph must still pass the check without inference.

    First, whatever the input: every node's parameters must fit its data (check/consistency.py),
    what onnx's check leaves to ONNX Runtime. That runs with --no-validate too, so a rewrite that
    missed a reader never writes a model ORT cannot run."""
    from ..check.consistency import first_inconsistency

    problem = first_inconsistency(model)
    if problem:
        raise ValidationError(f"the pruned model would not run, so nothing was written: {problem} "
                              "(an onnxprune bug: please report it with the model)")
    error = full_check_error(model)
    if error is None:
        return None
    if input_error is None:
        raise ValidationError(f"the pruned model fails onnx's full check, so nothing was written: {error}")
    try:
        onnx.checker.check_model(checkable(model.light_proto()), full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationError(f"the pruned model fails onnx's check, so nothing was written: {first}") from None
    return f"onnx's full check already failed on the input ({input_error}); the output was checked without it"


@contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A path with `target`'s file name inside a fresh private folder beside it; removed on exit."""
    folder = target.parent if str(target.parent) else Path(".")
    stage = Path(tempfile.mkdtemp(dir=folder, prefix=f".{target.name}.stage-"))
    try:
        yield stage / target.name
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def commit(staged: Path, target: Path) -> None:
    """Move a staged model (and its data file, if it has one) to `target`: data first, so the model
    never appears before the weights it refers to. Links at the targets are replaced, not followed."""
    staged_data = data_path(staged)
    if staged_data.exists():
        os.replace(staged_data, data_path(target))
    os.replace(staged, target)
