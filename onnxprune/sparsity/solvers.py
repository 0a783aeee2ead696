"""Numeric kernels that choose which weights become zero, on a weight in rows layout [R, K] (K = the
sparse axis; an N:M group is M consecutive columns of a row, see `pattern.to_rows`).

- magnitude: |W|, compared per group (N:M) or over the whole weight (unstructured);
- Wanda (Sun et al. 2023): |W_ij| * ||X_j||, compared per group (N:M) or per row (unstructured,
  `row_unstructured_mask`), since Wanda's comparison group is one output;
- SparseGPT (Frantar & Alistarh 2023): prunes column by column with the inverse Hessian of the layer
  objective ||WX - W'X||^2 and moves the error of each pruned column onto the columns still to come;
  a port of IST-DASLab's `SparseGPT.fasterprune` (same mask rules, same block updates).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..report import progress
from .pattern import Pattern


def magnitude_scores(rows: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(rows, dtype=np.float64))


def wanda_scores(rows: np.ndarray, input_norm: np.ndarray) -> np.ndarray:
    """|W_ij| * ||X_j||: `input_norm` [K] is the L2 norm of input feature j over the calibration rows."""
    norm = np.asarray(input_norm, dtype=np.float64).reshape(-1)
    assert norm.shape[0] == rows.shape[1], "one input norm per column"
    return np.abs(np.asarray(rows, dtype=np.float64)) * norm[None, :]


def row_unstructured_mask(scores: np.ndarray, ratio: float) -> np.ndarray:
    """True where kept: in every row, all but the int(ratio * K) lowest scores (Wanda's per-output
    comparison; ties go to the lower index, as with the reference's stable sort)."""
    width = scores.shape[1]
    drop = int(width * ratio)
    mask = np.ones(scores.shape, dtype=bool)
    if drop:
        order = np.argsort(scores, axis=1, kind="stable")[:, :drop]
        np.put_along_axis(mask, order, False, axis=1)
    return mask


# Columns updated one by one inside a block; the rest of the block gets their errors in one product
# (two-level lazy batching: the same result as the reference's per-column updates, several times faster).
SUB_BLOCK = 16


def _lowest(scores, count: int, earlier):
    """True for the `count` lowest scores of each row of [R, M]; ties go to the lower index (as a
    stable sort), so the mask is the same on every machine. M is small: rank by pairwise comparison.
    `earlier` [M, M]: earlier[j, k] is k < j."""
    a, b = scores.unsqueeze(2), scores.unsqueeze(1)  # [R, M, 1] vs [R, 1, M]: is b ranked before a?
    rank = ((b < a) | ((b == a) & earlier)).sum(dim=2)
    return rank < count


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _inverse_hessian_factor(hessian, damp: float, log: Callable[[str], None]):
    """Upper Cholesky factor U of (H + damp * mean(diag H) * I)^-1 (H^-1 = U^T U), as the reference's
    cholesky, cholesky_inverse, cholesky(upper=True) gives it, computed with one factorization and one
    triangular inverse (several times faster on CPU): with P the reversal permutation and L L^T = P H P,
    U = P L^-1 P is upper triangular with a positive diagonal and U^T U = H^-1.

    The reference fails when H + damping is not positive definite (rounding on a nearly singular
    float32 H); here the damping grows tenfold until the factorization succeeds, and says so."""
    import torch

    columns = hessian.shape[0]
    mean_diag = torch.mean(torch.diag(hessian))
    diagonal = torch.arange(columns, device=hessian.device)
    flipped = torch.flip(hessian, (0, 1))
    for attempt in range(6):
        factor = damp * 10**attempt
        damped = flipped.clone()
        damped[diagonal, diagonal] += factor * mean_diag
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            if attempt:
                log(f"sparsegpt: Hessian not positive definite with damping {damp:g}, used {factor:g}")
            identity = torch.eye(columns, dtype=hessian.dtype, device=hessian.device)
            inverse = torch.linalg.solve_triangular(lower, identity, upper=False)
            return torch.flip(inverse, (0, 1))
    raise ValueError("sparsegpt: the Hessian is not positive definite even with 1e5 x the damping")


def sparsegpt(
    rows: np.ndarray,
    gram: np.ndarray,
    pattern: Pattern,
    block: int = 128,
    damp: float = 0.01,
    device: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> np.ndarray:
    """SparseGPT: the pruned rows [R, K] (float64) for `pattern`, given H = X^T X [K, K] of the inputs
    the weight multiplies (any positive scale: the result does not depend on it, except very slightly
    when some inputs are dead, since their H_jj = 1 enters mean(diag H) for the damping, as in the reference).

    Follows `fasterprune` of github.com/IST-DASLab/sparsegpt: dead inputs (H_jj == 0) get H_jj = 1
    and W[:, j] = 0; H^-1 via Cholesky, then its upper Cholesky factor; columns in blocks of `block`.
    N:M: when the loop reaches the start of a group, the M-N columns of each row with the lowest
    w^2 / Hinv_jj^2 are pruned. Unstructured: per block, every weight whose score is at most the
    (int(ratio * size))-th lowest of the block (the reference's rule, one more than int(ratio * size)
    when the scores are distinct). Zeros are exact: pruned entries are set to 0 and never updated again.

    On CPU it runs in float64; on CUDA (the default when torch sees a GPU) in float32, as the reference.
    """
    import torch

    device = device or _default_device()
    dtype = torch.float32 if str(device).startswith("cuda") else torch.float64
    weight = torch.as_tensor(np.asarray(rows, dtype=np.float64), device=device).to(dtype).clone()
    hessian = torch.as_tensor(np.asarray(gram, dtype=np.float64), device=device).to(dtype).clone()
    count, columns = weight.shape
    assert hessian.shape == (columns, columns), "the Gram matrix must be [K, K] for rows [R, K]"
    sub_block = SUB_BLOCK
    if pattern.structured:
        assert columns % pattern.group == 0, "eligibility guarantees K % M == 0"
        # Groups must not straddle blocks: whole groups per block and per sub-block.
        block = max(block - block % pattern.group, pattern.group)
        sub_block = pattern.group * -(-SUB_BLOCK // pattern.group)
    prune_per_group = pattern.group - pattern.keep

    with torch.no_grad():
        dead = torch.diag(hessian) == 0
        hessian[dead, dead] = 1
        weight[:, dead] = 0
        hinv = _inverse_hessian_factor(hessian, damp, log)
        del hessian
        if pattern.structured:
            earlier = torch.ones(pattern.group, pattern.group, dtype=torch.bool, device=device).tril(diagonal=-1)

        blocks = range(0, columns, block)
        # Only big weights get a bar of their own (many small ones would flicker past).
        bar = progress.bar(log if len(blocks) > 8 else None, f"sparsegpt {count}x{columns}", total=len(blocks),
                           unit="block")
        for i1 in blocks:
            i2 = min(i1 + block, columns)
            w1 = weight[:, i1:i2].clone()
            q1 = torch.zeros_like(w1)
            err1 = torch.zeros_like(w1)
            hinv1 = hinv[i1:i2, i1:i2]
            diag1 = torch.diag(hinv1)
            if pattern.structured:
                pruned = torch.zeros_like(w1, dtype=torch.bool)
            else:
                score = w1**2 / diag1.reshape(1, -1) ** 2
                threshold = torch.sort(score.flatten())[0][int(score.numel() * pattern.ratio)]
                pruned = score <= threshold
            for j1 in range(0, i2 - i1, sub_block):
                j2 = min(j1 + sub_block, i2 - i1)
                for i in range(j1, j2):
                    if pattern.structured and i % pattern.group == 0:
                        group = w1[:, i:i + pattern.group] ** 2 / diag1[i:i + pattern.group].reshape(1, -1) ** 2
                        pruned[:, i:i + pattern.group] = _lowest(group, prune_per_group, earlier)
                    w = w1[:, i]
                    q = w.clone()
                    q[pruned[:, i]] = 0
                    q1[:, i] = q
                    err = (w - q) / hinv1[i, i]
                    w1[:, i:j2] -= err.unsqueeze(1).matmul(hinv1[i, i:j2].unsqueeze(0))
                    err1[:, i] = err
                # The rest of the block at once: the same sums as the reference's per-column updates.
                w1[:, j2:] -= err1[:, j1:j2].matmul(hinv1[j1:j2, j2:])
            weight[:, i1:i2] = q1
            weight[:, i2:] -= err1.matmul(hinv[i1:i2, i2:])
            bar.update()
        bar.close()
    return weight.to(device="cpu", dtype=torch.float64).numpy()
