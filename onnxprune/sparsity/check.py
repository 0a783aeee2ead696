"""`check-sparsity`: per weight feeding sparse math, whether TensorRT could use it sparse (and why
not), and whether it follows the N:M pattern now."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io.model import Model
from .eligibility import find_candidates, untiled_reason
from .pattern import Pattern, to_rows, violations


def density(array: np.ndarray) -> float:
    """Fraction of non-zero elements (-0.0 counts as zero)."""
    return round(float(np.count_nonzero(array)) / max(array.size, 1), 4)


def pattern_status(array: np.ndarray, axis: int, pattern: Pattern) -> dict[str, Any]:
    """Density of a weight and, along `axis`, whether it follows the N:M pattern (groups over N)."""
    status: dict[str, Any] = {"density": density(array)}
    if pattern.structured:
        rows = to_rows(array, axis)
        over = violations(rows, pattern.keep, pattern.group)
        status.update(pattern_ok=over == 0, violations=over, groups=rows.size // pattern.group)
    return status


def check_model(model: Model, pattern: Pattern) -> dict[str, Any]:
    from ..measure.trt import sparsity_metadata

    weights = []
    for candidate in find_candidates(model, pattern.group):
        entry = candidate.to_dict()
        array = model.weight(candidate.name)
        if candidate.eligible:
            entry.update(pattern_status(array, candidate.axis, pattern))
            # Eligible, but `prune --sparse` leaves it dense unless --sparse-any-shape: say why.
            entry["left_dense_by_default"] = untiled_reason(candidate)
        else:
            entry.update(density=density(array), pattern_ok=None)
        weights.append(entry)
    eligible = [w for w in weights if w["eligible"]]
    sparse = [w for w in eligible if w["pattern_ok"]]
    annotation = sparsity_metadata(model.proto)
    result: dict[str, Any] = {
        "command": "check-sparsity",
        "schema_version": 1,
        "pattern": str(pattern),
        "weights": weights,
        "eligible": len(eligible),
        "sparse": len(sparse),
        "dense": len(eligible) - len(sparse),
        "ineligible": len(weights) - len(eligible),
        "sparse_params": sum(int(np.prod(w["shape"])) for w in sparse),
        "eligible_params": sum(int(np.prod(w["shape"])) for w in eligible),
        "annotation": annotation,
    }
    if annotation is not None:
        listed = {entry["name"] for entry in annotation.get("weights", []) if isinstance(entry, dict)}
        ok = {w["name"] for w in sparse}
        result["annotation_mismatch"] = sorted(listed - ok)
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"{'weight':40} {'op':8} {'shape':>16} {'axis':>4}  {'density':>7}  {result['pattern']:>5}"]
    for w in result["weights"]:
        shape = "x".join(str(d) for d in w["shape"])
        if w["eligible"]:
            verdict = "yes" if w["pattern_ok"] else f"no ({w['violations']} of {w['groups']} groups)"
            if w.get("left_dense_by_default"):
                verdict += f"; --sparse leaves it dense: {w['left_dense_by_default']}"
        else:
            verdict = f"ineligible: {w['reason']}"
        lines.append(f"{w['name'][:40]:40} {w['op']:8} {shape:>16} {w['axis']:>4}  {w['density']:7.3f}  {verdict}")
    lines.append(f"{result['eligible']} eligible weight(s): {result['sparse']} follow {result['pattern']}, "
                 f"{result['dense']} do not; {result['ineligible']} ineligible")
    if result.get("annotation_mismatch"):
        lines.append(f"warning: metadata lists {len(result['annotation_mismatch'])} weight(s) as sparse that are not: "
                     + ", ".join(result["annotation_mismatch"][:5]))
    return "\n".join(lines)
