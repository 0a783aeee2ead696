"""Graph input shapes (`--shapes`) and seeded random feeds for validation runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import InvalidOptionError, ValidationError

Dim = int | str | None


@dataclass(frozen=True)
class ValueRule:
    """The values an input accepts when not any value will do (random data would fail or mislead).

    kind "ids": integers in [low, high) (rows of the table they index: vocabulary, positions);
    "mask": 0/1, mostly 1 (each row ends in zeros, so neither 1 = keep nor 1 = pad masks every position);
    "choices": one of `choices` (constants the graph compares the input with, e.g. a sample rate);
    "uniform": uniform in [low, high], integers with both ends included (--val-range, Polygraphy's rule).
    `why` says where the rule came from, for the report.
    """

    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[float, ...] = ()
    why: str = ""

    def describe(self) -> str:
        if self.kind == "ids":
            return f"ids in [{self.low:g}, {self.high:g})"
        if self.kind == "choices":
            return "one of " + ", ".join(f"{c:g}" for c in self.choices)
        if self.kind == "mask":
            return "0/1 mask, mostly 1"
        return f"uniform in [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class InputSpec:
    """A graph input as declared: symbolic dims are their name (str) or None when unnamed.

    `shape` is None when the model does not declare the input's rank at all. `values`, when set,
    constrains the random data drawn for it (check.value_rules finds these in the graph).
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...] | None
    values: ValueRule | None = None


def parse_shapes(specs: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Parse `--shapes` values in the spellings of the tools around onnxprune:

    - trtexec: `x:1x3x224x224`, several inputs comma-separated (`ids:1x128,mask:1x128`);
    - Polygraphy: `x:[1,3,224,224]` (`x:[]` for a scalar);
    - onnxsim: `x:1,3,224,224`.

    Several inputs: repeat the option, or separate them by spaces or commas in one value. A comma
    followed by a bare number continues the dims of the input before it (onnxsim's form); one that
    follows a name starts the next input: a token without a colon is never a name, so this is unambiguous.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        for entry in _shape_entries(spec):
            name, shape = _parse_one(entry)
            if name in shapes:
                raise InvalidOptionError(
                    f"--shapes: input '{name}' is given more than once"
                )
            shapes[name] = shape
    return shapes


_SPELLINGS = "NAME:DIMS as in x:1x3x224x224, x:[1,3,224,224] or x:1,3,224,224"


def _shape_entries(spec: str) -> list[str]:
    """`spec` cut into one 'name:dims' text per input, commas of onnxsim's dims rejoined."""
    tokens: list[str] = []
    current, depth = "", 0
    for char in spec:
        depth += (char == "[") - (char == "]")
        if depth == 0 and (char == "," or char.isspace()):
            tokens.append(current)
            current = ""
        else:
            current += char
    tokens.append(current)
    entries: list[str] = []
    pending_name = False  # the last entry ended in ':' ("x: [1,3]"): the next token holds its dims
    for token in (t for t in tokens if t):
        if pending_name:
            entries[-1] += token
            pending_name = False
        elif ":" in token:
            entries.append(token)
            pending_name = token.endswith(":")
        elif entries and _continues_comma_dims(entries[-1]) and token.lstrip("+-").isdigit():
            entries[-1] += "," + token
        else:
            raise InvalidOptionError(f"--shapes: malformed spec '{token}' in '{spec}'; expected {_SPELLINGS}")
    return entries


def _continues_comma_dims(entry: str) -> bool:
    """Whether a bare number after `entry` is one more of its dims (onnxsim's x:1,3,224,224)."""
    dims = entry.rpartition(":")[2]
    return bool(dims) and all(part.strip().lstrip("+-").isdigit() for part in dims.split(","))


def _parse_one(item: str) -> tuple[str, tuple[int, ...]]:
    # Split on the last colon: TensorFlow-exported names such as "input:0" contain one.
    name, sep, dims = item.rpartition(":")
    name, dims = name.strip(), dims.strip()
    if not sep or not name or not dims:
        raise InvalidOptionError(f"--shapes: malformed spec '{item}'; expected {_SPELLINGS}")
    if dims.startswith("[") and dims.endswith("]"):
        parts = [part.strip() for part in dims[1:-1].split(",")] if dims[1:-1].strip() else []
    elif "," in dims:
        parts = dims.split(",")
        if any("x" in part.lower() for part in parts):
            raise InvalidOptionError(
                f"--shapes: '{item}' mixes 'x' and ',' between dims; use one of {_SPELLINGS}"
            )
    else:
        parts = dims.lower().split("x")
    try:
        shape = tuple(int(d) for d in parts)
    except ValueError:
        raise InvalidOptionError(
            f"--shapes: malformed dims in '{item}'; expected integers, as in x:1x3x224x224, x:[1,3,224,224] "
            "or x:1,3,224,224"
        ) from None
    if any(d < 1 for d in shape):
        raise InvalidOptionError(
            f"--shapes: dims in '{item}' must be positive integers"
        )
    return name, shape


def model_input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The inputs a caller must feed: graph inputs that are not initializers."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if value.type.WhichOneof("value") != "tensor_type":
            kind = value.type.WhichOneof("value") or "untyped"
            raise ValidationError(
                f"input '{value.name}' is a {kind} value; only tensor inputs can be fed random data"
            )
        tensor_type = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        shape = None
        if tensor_type.HasField("shape"):
            shape = tuple(_dim(d) for d in tensor_type.shape.dim)
        specs.append(InputSpec(value.name, dtype, shape))
    return specs


def _dim(dim: onnx.TensorShapeProto.Dimension) -> Dim:
    if dim.HasField("dim_value"):
        # paddle2onnx writes dynamic dims as dim_value -1: symbolic, like an unnamed dim.
        return dim.dim_value if dim.dim_value >= 0 else None
    if dim.HasField("dim_param"):
        return dim.dim_param
    return None


def resolve_shapes(
    specs: Sequence[InputSpec],
    overrides: Mapping[str, tuple[int, ...]],
    default_dim: int = 1,
    default_other_dim: int = 8,
    suggested: Mapping[str | tuple[str, int], tuple[int, str]] | None = None,
) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Concrete shapes for every input, plus a note for each dim that had to be guessed.

    `suggested` gives a value and its reason for a symbolic dim, keyed by the dim's name or, for an
    unnamed dim, by (input name, axis): check.dim_choice derives these from the graph.
    """
    suggested = suggested or {}
    if default_dim < 1:
        raise InvalidOptionError(
            f"default dim must be a positive integer, got {default_dim}"
        )
    by_name = {spec.name: spec for spec in specs}
    for name, shape in overrides.items():
        if name not in by_name:
            known = ", ".join(by_name) or "none"
            raise InvalidOptionError(
                f"--shapes: model has no input '{name}' (inputs: {known})"
            )
        _check_override(by_name[name], shape)

    # A symbolic name fixed by one override (e.g. 'seq' via input_ids) should fix the
    # same name on other inputs (attention_mask), or the feeds would not fit together.
    bound: dict[str, tuple[int, str]] = {}
    for name, shape in overrides.items():
        for dim, value in zip(by_name[name].shape or (), shape, strict=False):
            if isinstance(dim, str):
                bound.setdefault(dim, (value, name))

    shapes: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    for spec in specs:
        if spec.name in overrides:
            shapes[spec.name] = tuple(overrides[spec.name])
            continue
        if spec.shape is None:
            raise InvalidOptionError(
                f"--shapes: input '{spec.name}' has no declared rank; pass --shapes {spec.name}:DxDx..."
            )
        resolved = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                resolved.append(dim)
            elif isinstance(dim, str) and dim in bound:
                value, source = bound[dim]
                resolved.append(value)
                notes.append(
                    f"input '{spec.name}' dim {axis} ('{dim}') set to {value} to match input '{source}'"
                )
            elif _key(spec.name, axis, dim) in suggested:
                value, reason = suggested[_key(spec.name, axis, dim)]
                if isinstance(dim, str):
                    bound.setdefault(dim, (value, spec.name))
                resolved.append(value)
                label = f"'{dim}'" if dim else "unnamed"
                notes.append(f"input '{spec.name}' dim {axis} ({label}) set to {value} ({reason}); "
                             "pass --shapes to choose")
            else:
                label = f"'{dim}'" if dim else "unnamed"
                # A batch of 1 is the usual deployment case; a sequence of 1 would leave attention
                # with a single token, so other symbolic dims get a small length instead.
                batch_like = axis == 0 or (isinstance(dim, str) and "batch" in dim.lower())
                value = default_dim if batch_like else default_other_dim
                if isinstance(dim, str):  # later inputs with the same symbol must agree
                    bound.setdefault(dim, (value, spec.name))
                resolved.append(value)
                notes.append(
                    f"input '{spec.name}' dim {axis} ({label}) set to {value}; pass --shapes to choose"
                )
        shapes[spec.name] = tuple(resolved)
    return shapes, notes


def headline_notes(notes: Sequence[str]) -> list[str]:
    """The notes of resolve_shapes worth saying before the work starts: sizes and lengths chosen, not
    batch dims set to 1 nor dims set to match another input."""
    return [note for note in notes if " set to 1;" not in note and "to match input" not in note]


def _key(name: str, axis: int, dim: Dim) -> str | tuple[str, int]:
    """A symbolic dim's key: its name (shared by every input that uses it), or (input, axis) if unnamed."""
    return dim if isinstance(dim, str) else (name, axis)


def _check_override(spec: InputSpec, shape: tuple[int, ...]) -> None:
    if spec.shape is None:
        return
    given = "x".join(map(str, shape))
    if len(shape) != len(spec.shape):
        raise InvalidOptionError(
            f"--shapes: input '{spec.name}' has rank {len(spec.shape)} but {given} has rank {len(shape)}"
        )
    for axis, (declared, value) in enumerate(zip(spec.shape, shape, strict=True)):
        if isinstance(declared, int) and declared != value:
            raise InvalidOptionError(
                f"--shapes: input '{spec.name}' dim {axis} is fixed to {declared} in the model, got {value} in {given}"
            )


def random_feeds(
    specs: Sequence[InputSpec],
    shapes: Mapping[str, tuple[int, ...]],
    seed: int,
    count: int = 1,
) -> list[dict[str, np.ndarray]]:
    """`count` feeds drawn from one seeded generator; feed i is the same whatever `count` is."""
    if count < 1:
        raise InvalidOptionError(
            f"number of random feeds must be at least 1, got {count}"
        )
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feeds.append(
            {spec.name: _random_array(rng, spec, shapes[spec.name]) for spec in specs}
        )
    return feeds


def _random_array(
    rng: np.random.Generator, spec: InputSpec, shape: tuple[int, ...]
) -> np.ndarray:
    dtype = spec.dtype
    if spec.values is not None and (dtype == np.bool_ or _is_float(dtype) or _is_integer(dtype)):
        return _ruled_array(rng, spec.values, dtype, shape)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if _is_float(dtype):
        # Draw in float64 and cast, so every float width sees the same underlying values.
        return rng.standard_normal(shape).astype(dtype)
    if _is_integer(dtype):
        # [0, 2) stays a valid token id, class index, or mask value for any vocabulary.
        return rng.integers(0, 2, size=shape).astype(dtype)
    raise ValidationError(
        f"input '{spec.name}' has type {dtype}; cannot generate random data for it"
    )


def _ruled_array(rng: np.random.Generator, rule: ValueRule, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if rule.kind == "mask":
        # Ones, then zeros over the last quarter of the last axis: a real padding mask's look, and
        # no row is all masked whichever value means "masked" (that would give NaN softmax rows).
        mask = np.ones(shape, dtype=np.int64)
        if len(shape) and shape[-1] > 1:
            mask[..., shape[-1] - max(1, shape[-1] // 4):] = 0
        return mask.astype(dtype)
    if rule.kind == "choices":
        return rng.choice(np.asarray(rule.choices, dtype=np.float64), size=shape).astype(dtype)
    if rule.kind == "ids":
        return rng.integers(int(rule.low), int(rule.high), size=shape).astype(dtype)
    if dtype == np.bool_ or _is_integer(dtype):
        return rng.integers(int(rule.low), int(rule.high), size=shape, endpoint=True).astype(dtype)
    return (rule.low + (rule.high - rule.low) * rng.random(shape)).astype(dtype)


def _is_float(dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return True
    # bfloat16 and float8 variants are ml_dtypes extension types (kind 'V').
    try:
        ml_dtypes.finfo(dtype)
    except ValueError:
        return False
    return True


def _is_integer(dtype: np.dtype) -> bool:
    if dtype.kind in "iu":
        return True
    try:
        ml_dtypes.iinfo(dtype)
    except ValueError:
        return False
    return True
