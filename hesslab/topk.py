"""The k largest eigenvalues of a symmetric operator, counted with multiplicity.

Single-vector Lanczos cannot see multiplicity: in exact arithmetic the Krylov space of
one start vector meets each eigenspace in one direction, so a ``k``-fold eigenvalue
shows up once, and "the 10th largest Ritz value" is the 10th largest *distinct*
eigenvalue (a zero-initialised linear head, whose Hessian repeats each eigenvalue once
per class, gave λ₁₀ 25 % low). :func:`top_eigenvalues` therefore grows a **block**
Krylov space from ``p ≥ k`` start vectors, which holds up to ``p`` directions of every
eigenspace, and extracts Ritz pairs by Rayleigh–Ritz on it:

* the basis ``V`` (orthonormal rows) and the products ``W = A V`` are kept, so the
  projected matrix ``T = V Wᵀ`` and every Ritz pair's residual
  ``‖A y − θ y‖ = ‖Uᵀ W − θ Uᵀ V‖`` are exact for the computed products;
* each step adds the residuals of the top ``p`` Ritz pairs, orthogonalised twice
  against ``V`` (in exact arithmetic they span the next block-Lanczos block); a
  candidate that lies numerically in ``span V`` is replaced by a fresh random
  direction, so invariant subspaces (zero blocks, a matrix with few distinct
  eigenvalues) do not stall the search;
* when the basis would exceed ``max_basis`` it restarts from its best
  ``max_basis − p`` Ritz vectors (thick restart), which bounds memory.

It stops when every one of the top ``k`` residuals is below
``max(tol · |θ|_max, 10 · noise)``, where ``noise`` is the operator's round-off on a
unit vector (:func:`hesslab.slq.operator_noise`); by Weyl's theorem each reported
eigenvalue is then within its residual of a true eigenvalue. Ritz values never exceed
the true ones in order (Cauchy interlacing), so an unconverged answer errs low.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from hesslab.checkpoint import Checkpoint
from hesslab.distributed import agreed_budget
from hesslab.memory import BasisMemoryError, default_memory_budget
from hesslab.operators import as_operator, matvec_in, operator_noise, probe_vectors

#: default relative residual tolerance by the dtype the operator computes in
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}

#: an orthogonalised candidate shorter than this fraction of its length before lies in ``span V``
_IN_SPAN = 1e-8


@dataclass
class TopEigenvalues:
    """The ``k`` largest eigenvalues of an operator, with their Ritz vectors and residuals.

    Attributes:
        values: ``[k]`` eigenvalues, descending, counted with multiplicity.
        residuals: ``[k]`` ``‖A y_i − θ_i y_i‖`` of the unit Ritz vectors (each value is
            within its residual of a true eigenvalue).
        tolerance: the absolute residual bound the run aimed for.
        converged: every residual is within ``tolerance``.
        matvecs: operator applications used (vectors, not calls).
        noise: the operator's measured round-off on a unit vector.
        vectors: ``[k, n]`` unit Ritz vectors (basis dtype, operator's device); None when
            the result was loaded from the cache.
    """

    values: np.ndarray
    residuals: np.ndarray
    tolerance: float
    converged: bool
    matvecs: int
    noise: float
    vectors: Tensor | None = None

    def __len__(self) -> int:
        """``k``."""
        return len(self.values)


def _extend(basis: Tensor, candidates: Tensor, generator: torch.Generator) -> Tensor:
    """Orthonormal rows spanning ``candidates`` beyond ``span(basis)``; lost ones replaced by random rows."""
    n = candidates.shape[1]
    room = n - basis.shape[0]
    accepted: list[Tensor] = []
    for c in candidates:
        if len(accepted) >= room:
            break
        for _ in range(3):  # a candidate in span(basis) is replaced by a random direction, twice at most
            norm0 = c.norm()
            q = c.clone()
            for _ in range(2):  # "twice is enough"
                if basis.shape[0]:
                    q -= (basis @ q) @ basis
                if accepted:
                    done = torch.stack(accepted)
                    q -= (done @ q) @ done
            norm = q.norm()
            if norm0 > 0 and norm > _IN_SPAN * norm0:
                accepted.append(q / norm)
                break
            c = torch.randn(n, generator=generator, dtype=torch.float64).to(candidates)
    return torch.stack(accepted) if accepted else candidates[:0]


def _rayleigh_ritz(V: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """Ritz values (descending) and coefficient vectors ``U`` (columns) of ``T = V Wᵀ``."""
    T = V @ W.T
    theta, U = torch.linalg.eigh(0.5 * (T + T.T))
    return theta.flip(0), U.flip(1)


def resolved_settings(op, k: int, *, tol: float | None = None, block_size: int | None = None,
                      max_basis: int | None = None, max_matvecs: int | None = None) -> dict:
    """The settings :func:`top_eigenvalues` runs with, defaults filled in and checked.

    Returns:
        ``{"tol", "block_size", "max_basis", "max_matvecs"}``.
    """
    n = op.dim
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the dimension {n}, got {k}")
    p = min(block_size or k, n)
    if p < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    max_basis = min(n, max_basis or max(k + 2 * p, 4 * p, 30))
    if max_basis < min(n, k + p):
        raise ValueError(f"max_basis={max_basis} must be at least k + block_size = {k + p} (or the dimension)")
    return {"tol": TOLERANCE.get(op.dtype, 1e-5) if tol is None else float(tol), "block_size": p,
            "max_basis": max_basis, "max_matvecs": max_matvecs or max(100 * p, 500)}


def top_eigenvalues(
    op,
    k: int = 1,
    *,
    tol: float | None = None,
    block_size: int | None = None,
    max_basis: int | None = None,
    max_matvecs: int | None = None,
    seed: int = 0,
    basis_dtype: torch.dtype = torch.float64,
    memory_budget: int | None = None,
    checkpoint: Checkpoint | None = None,
    progress: bool = False,
) -> TopEigenvalues:
    """The ``k`` largest eigenvalues of a symmetric operator, counted with multiplicity.

    Args:
        op: an operator with ``dim``, ``dtype``, ``device`` and batched ``matvec`` (e.g. a
            :class:`~hesslab.HessianOperator` or a block of one), or a dense symmetric matrix.
        k: how many eigenvalues.
        tol: relative residual tolerance (times the largest ``|Ritz value|``); default by
            the operator's dtype (:data:`TOLERANCE`). The operator's own round-off sets a
            floor (10 × :func:`~hesslab.operators.operator_noise`).
        block_size: start vectors ``p``; eigenvalues of multiplicity up to ``p`` are found
            in exact arithmetic. Default ``k``.
        max_basis: most basis vectors held (memory ``2 · max_basis · dim`` numbers);
            default ``max(k + 2p, 4p, 30)``, at most ``dim``.
        max_matvecs: budget of operator applications; default ``max(100 p, 500)``.
            An unconverged result warns and says so in ``converged``.
        seed: seed of the start vectors (and of refills).
        basis_dtype: dtype of the basis (float64 even for float32 operators).
        memory_budget: bytes the basis ``V`` and its products ``W`` may use on the
            operator's device (default half the free memory); a ``max_basis`` that does
            not fit raises :class:`~hesslab.memory.BasisMemoryError` before any product.
        checkpoint: where the finished result (values, residuals, convergence; not the
            vectors) is saved and returned from on the next call (:mod:`hesslab.checkpoint`;
            :func:`hesslab.storage.cached.top_eigenvalues` keys one on disk).
        progress: progress bar over operator applications.

    Returns:
        A :class:`TopEigenvalues`.
    """
    op = as_operator(op)
    settings = resolved_settings(op, k, tol=tol, block_size=block_size, max_basis=max_basis, max_matvecs=max_matvecs)
    n, p, max_basis, max_matvecs, rel_tol = (op.dim, settings["block_size"], settings["max_basis"],
                                             settings["max_matvecs"], settings["tol"])
    need = 2 * (max_basis + p) * n * torch.empty((), dtype=basis_dtype).element_size()
    budget = agreed_budget(op, memory_budget, default_memory_budget)  # the same on every rank
    if need > budget:
        raise BasisMemoryError(
            f"top_eigenvalues keeps 2 × (max_basis + block_size) = {2 * (max_basis + p)} vectors of {n:,} numbers: "
            f"{need / (1 << 30):.3g} GiB, more than memory_budget ({budget / (1 << 30):.3g} GiB); lower max_basis= "
            f"(at least k + block_size = {k + p}), raise memory_budget=, or pass basis_dtype=torch.float32")
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None and saved.finished:
        return TopEigenvalues(saved.arrays["values"], saved.arrays["residuals"], float(saved.meta["tolerance"]),
                              bool(saved.meta["converged"]), int(saved.meta["matvecs"]), float(saved.meta["noise"]))
    matvec = matvec_in(op, basis_dtype)
    noise = operator_noise(op, seed=seed, basis_dtype=basis_dtype)
    generator = torch.Generator().manual_seed(int(seed) + 1)
    V = torch.zeros(0, n, dtype=basis_dtype, device=op.device)
    W = torch.zeros_like(V)
    candidates = probe_vectors(n, p, seed, basis_dtype, op.device)
    matvecs, scale, converged = 0, 0.0, False
    bar = tqdm(total=max_matvecs, desc=f"top-{k} eigenvalues", disable=not progress, leave=False)
    while True:
        block = _extend(V, candidates, generator)
        if block.shape[0]:
            V, W = torch.cat([V, block]), torch.cat([W, matvec(block)])
            matvecs += block.shape[0]
            bar.update(block.shape[0])
        theta, U = _rayleigh_ritz(V, W)
        scale = max(scale, float(theta.abs().max()))
        bound = max(rel_tol * scale, 10.0 * noise)
        top = min(max(k, p), V.shape[0])
        Y, AY = U[:, :top].T @ V, U[:, :top].T @ W
        R = AY - theta[:top, None] * Y
        residuals = R.norm(dim=1)
        if V.shape[0] >= k and bool((residuals[:k] <= bound).all()):
            converged = True
            break
        if V.shape[0] >= n or not block.shape[0]:  # the basis spans everything: Ritz pairs are exact
            converged = V.shape[0] >= k
            break
        if matvecs >= max_matvecs:
            break
        if V.shape[0] + p > max_basis:  # thick restart from the best Ritz vectors
            keep = max_basis - p
            V, W = U[:, :keep].T @ V, U[:, :keep].T @ W
        candidates = R[:p]
    bar.close()
    values = theta[:k].double().cpu().numpy()
    result = TopEigenvalues(values, residuals[:k].double().cpu().numpy(), bound, converged, matvecs, noise,
                            (U[:, :k].T @ V))
    if checkpoint is not None:
        checkpoint.save({"values": result.values, "residuals": result.residuals},
                        {"tolerance": bound, "converged": converged, "matvecs": matvecs, "noise": noise}, finished=True)
    if not converged:
        warnings.warn(f"top_eigenvalues did not converge in {matvecs} operator applications: largest residual "
                      f"{result.residuals.max():.3g} > {bound:.3g}; raise max_matvecs or max_basis, or loosen tol",
                      RuntimeWarning, stacklevel=2)
    return result


__all__ = ["TopEigenvalues", "TOLERANCE", "top_eigenvalues"]
