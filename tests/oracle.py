"""The zero-oracle: zero every weight touching the channels to be removed, then pruning them must not
change the outputs. It checks the dependency graph (every coupled member found), the rewrite (every
member sliced consistently) and the fixups (shape constants) in one go."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.deps import build_channel_graph
from onnxprune.io.model import Model
from onnxprune.plan import Budget, removal_count


def choose_channels(model: Model, ratio: float | None, seed: int) -> dict[int, np.ndarray]:
    """Random channels per prunable space: `ratio` of each, or a random ratio in [0.1, 0.7] if None."""
    rng = np.random.default_rng(seed)
    plan = {}
    for space in build_channel_graph(model).prunable:
        space_ratio = ratio if ratio is not None else float(rng.uniform(0.1, 0.7))
        count = removal_count(space.size, Budget(space_ratio))
        if count:
            plan[space.id] = np.sort(rng.choice(space.size, count, replace=False))
    return plan


def zero_channels(model: Model, plan: dict[int, np.ndarray]) -> None:
    """Zero producer rows, BN parameters and consumer columns of the planned channels, in place."""
    graph = build_channel_graph(model)
    for (tensor, axis), indices in graph.removal({k: list(v) for k, v in plan.items()}).items():
        if model.is_weight(tensor):
            weight = np.array(model.weight(tensor))
            index = [slice(None)] * weight.ndim
            index[axis] = indices
            weight[tuple(index)] = 0
            model.set_weight(tensor, weight)


def run(model_or_path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if isinstance(model_or_path, Model):
        source = model_or_path.to_proto().SerializeToString()
    else:
        source = str(model_or_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feed)))


def random_feed(model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for value in model.graph.input:
        if model.is_weight(value.name):
            continue
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 2 for d in tensor_type.shape.dim]
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        if dtype.kind in "iu":  # token ids stay small and valid; masks are all ones but the last token
            values = np.ones(shape) if "mask" in value.name else rng.integers(0, 50, size=shape)
            if "mask" in value.name and shape[-1] > 1:
                values[..., -1] = 0
            feed[value.name] = values.astype(dtype)
        else:
            feed[value.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def max_relative_error(reference: dict[str, np.ndarray], result: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for name, expected in reference.items():
        got = result[name]
        assert got.shape == expected.shape, f"{name}: {got.shape} != {expected.shape}"
        scale = max(float(np.max(np.abs(expected))), 1e-12)
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - expected))) / scale)
    return worst


def check_valid(path) -> None:
    onnx.checker.check_model(str(path), full_check=True)
