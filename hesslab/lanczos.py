"""Lanczos tridiagonalisation, batched over probe vectors, with full reorthogonalisation.

Everything here sees a linear operator only through ``matvec``; vectors stay on the
operator's device. One Lanczos run per probe vector ``v`` gives a tridiagonal
``T = U diag(θ) Uᵀ``; the Ritz values ``θ_i`` with weights ``τ_i = U_{1i}²`` are the
Gauss quadrature rule of the spectral measure seen from ``v`` (Golub & Meurant), which
is what stochastic Lanczos quadrature (SLQ) averages over probes.

Without reorthogonalisation (the paper's code) the Lanczos vectors lose
orthogonality once a Ritz value converges, and copies of converged extreme
eigenvalues ("ghosts") appear; full reorthogonalisation (two Gram–Schmidt passes
against all previous vectors) removes them at ``O(m² n)`` extra flops per probe.

Breakdown (``β_j ≈ 0``: the Krylov space is invariant, e.g. after ``n`` steps in
dimension ``n``, or after as many steps as the matrix has distinct eigenvalues)
truncates that probe's tridiagonal; it is recorded, never papered over by dividing by
a small constant. "≈ 0" is relative to the operator: ``β_j`` below ``breakdown_tol``
times the largest ``|α|, β`` seen so far, or below ``noise_floor``, the operator's own
round-off (:func:`hesslab.operators.operator_noise`). A float32 Hessian-vector product
carries round-off far above float32's epsilon times the scale, and past a true
breakdown Lanczos would otherwise go on with directions made of that round-off,
adding Ritz values of (numerically) zero weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: relative breakdown threshold on β_j / max(|α|, β) by the dtype the operator computes in
BREAKDOWN_TOL = {torch.float64: 1e-13, torch.float32: 1e-6, torch.bfloat16: 1e-3, torch.float16: 1e-3}


@dataclass
class LanczosResult:
    """Tridiagonal matrices of a batch of Lanczos runs.

    Attributes:
        alpha: ``[k, m]`` diagonals (float64, CPU); entries past ``steps`` are unused.
        beta: ``[k, m]`` off-diagonals; ``beta[l, j]`` couples steps ``j`` and ``j+1``.
        steps: ``[k]`` size of each probe's tridiagonal (``< m`` after breakdown).
        breakdown: ``[k]`` whether the probe stopped early on ``β ≈ 0``.
    """

    alpha: np.ndarray
    beta: np.ndarray
    steps: np.ndarray
    breakdown: np.ndarray

    def tridiagonal(self, probe: int) -> np.ndarray:
        """The ``[s, s]`` tridiagonal matrix of one probe (``s = steps[probe]``)."""
        s = int(self.steps[probe])
        off = self.beta[probe, : s - 1]
        return np.diag(self.alpha[probe, :s]) + np.diag(off, 1) + np.diag(off, -1)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values and Gauss weights per probe.

        Returns:
            ``(nodes, weights)``, each ``[k, m]``; a probe with ``s < m`` steps has
            ``nodes[l, s:] = nan`` and ``weights[l, s:] = 0``. Each row of weights sums
            to 1 and nodes are ascending.
        """
        k, m = self.alpha.shape
        nodes = np.full((k, m), np.nan)
        weights = np.zeros((k, m))
        for probe in range(k):
            s = int(self.steps[probe])
            theta, u = np.linalg.eigh(self.tridiagonal(probe))
            nodes[probe, :s] = theta
            weights[probe, :s] = u[0] ** 2
        return nodes, weights


class LanczosProcess:
    """A batch of ``k`` Lanczos runs advanced one operator application at a time.

    Use ``query()`` to get the current vectors ``[k, n]``, apply the operator to them
    yourself (possibly together with other processes, see
    :func:`hesslab.blockwise_slq`), and hand the result to ``advance``.

    Args:
        v0: ``[k, n]`` start vectors (normalised here); their dtype is the basis dtype.
        num_steps: ``m``, at most ``n`` (clipped).
        reorthogonalize: full reorthogonalisation (keeps all ``m`` vectors,
            ``m·k·n`` numbers); ``False`` keeps two and shows the ghosts.
        breakdown_tol: relative threshold on ``β``; default from the operator dtype.
        operator_dtype: dtype the operator computes in (sets the default tolerance).
        noise_floor: absolute threshold on ``β``: the size of the operator's round-off
            on a unit vector times a safety factor (see
            :func:`hesslab.operators.operator_noise`); 0 disables it.
        pin_memory: keep the basis in pinned host memory (``v0`` on the host, the
            operator on a GPU: see :mod:`hesslab.memory`).
    """

    def __init__(
        self,
        v0: Tensor,
        num_steps: int,
        *,
        reorthogonalize: bool = True,
        breakdown_tol: float | None = None,
        operator_dtype: torch.dtype | None = None,
        noise_floor: float = 0.0,
        pin_memory: bool = False,
    ):
        if v0.ndim != 2 or v0.shape[1] == 0 or v0.shape[0] == 0:
            raise ValueError(f"start vectors must be [k, n] with k, n > 0, got {tuple(v0.shape)}")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        norms = v0.norm(dim=1, keepdim=True)
        if not bool((norms > 0).all()):
            raise ValueError("a start vector is zero")
        k, n = v0.shape
        self.k, self.n = k, n
        self.num_steps = min(num_steps, n)
        self.reorthogonalize = reorthogonalize
        dtype = operator_dtype or v0.dtype
        self.tol = breakdown_tol if breakdown_tol is not None else BREAKDOWN_TOL.get(dtype, 1e-6)
        if not noise_floor >= 0:
            raise ValueError(f"noise_floor must be >= 0, got {noise_floor}")
        self.noise_floor = float(noise_floor)
        keep = self.num_steps if reorthogonalize else 2
        self._basis = torch.zeros(keep, k, n, dtype=v0.dtype, device=v0.device, pin_memory=pin_memory)
        self._basis[0] = v0 / norms
        self._alpha = v0.new_zeros(k, self.num_steps)
        self._beta = v0.new_zeros(k, self.num_steps)
        self._scale = v0.new_zeros(k)
        self._active = torch.ones(k, dtype=torch.bool, device=v0.device)
        self._steps = torch.zeros(k, dtype=torch.long, device=v0.device)
        self.j = 0

    @property
    def done(self) -> bool:
        """True once ``num_steps`` steps are taken or every probe broke down."""
        return self.j >= self.num_steps or not bool(self._active.any())

    def query(self) -> Tensor:
        """The current Lanczos vectors ``q_j``, ``[k, n]`` (zero rows for stopped probes)."""
        return self._basis[self.j if self.reorthogonalize else self.j % 2]

    def advance(self, w: Tensor) -> None:
        """Take one step given ``w = A q_j`` (``[k, n]``, any float dtype, any device)."""
        if self.done:
            raise RuntimeError("this Lanczos process has finished")
        j = self.j
        w = w.to(self._basis.device, self._basis.dtype, copy=True)
        q = self.query()
        alpha = (w * q).sum(dim=1)
        w -= alpha[:, None] * q
        if j > 0:
            q_prev = self._basis[j - 1] if self.reorthogonalize else self._basis[(j - 1) % 2]
            w -= self._beta[:, j - 1, None] * q_prev
        if self.reorthogonalize:
            basis = self._basis[: j + 1]
            for _ in range(2):  # "twice is enough" (Kahan–Parlett)
                coef = torch.einsum("jkn,kn->jk", basis, w)
                w -= torch.einsum("jk,jkn->kn", coef, basis)
        beta = w.norm(dim=1)
        active = self._active
        self._alpha[:, j] = torch.where(active, alpha, 0)
        self._scale = torch.maximum(self._scale, torch.maximum(alpha.abs(), beta))
        self._steps = torch.where(active, j + 1, self._steps)
        broke = active & (beta <= torch.clamp(self.tol * self._scale, min=self.noise_floor))
        if j + 1 >= self.n:  # the Krylov space cannot grow past the dimension
            broke = active.clone()
        self._active = active & ~broke
        self._beta[:, j] = torch.where(self._active, beta, 0)
        self.j = j + 1
        if self.j < self.num_steps:
            nxt = torch.where(self._active[:, None], w / beta.clamp_min(torch.finfo(w.dtype).tiny)[:, None], 0)
            self._basis[self.j if self.reorthogonalize else self.j % 2] = nxt

    def result(self) -> LanczosResult:
        """The tridiagonals so far, on the host."""
        steps = self._steps.cpu().numpy()
        return LanczosResult(
            alpha=self._alpha.double().cpu().numpy(),
            beta=self._beta.double().cpu().numpy(),
            steps=steps,
            breakdown=~self._active.cpu().numpy() & (steps < self.num_steps),
        )


def run_lanczos(
    matvec: Callable[[Tensor], Tensor],
    v0: Tensor,
    num_steps: int,
    *,
    reorthogonalize: bool = True,
    breakdown_tol: float | None = None,
    operator_dtype: torch.dtype | None = None,
    noise_floor: float = 0.0,
    progress: bool = False,
) -> LanczosResult:
    """Run ``k`` Lanczos processes on ``matvec`` from the rows of ``v0``.

    Args:
        matvec: maps ``[k, n]`` to ``[k, n]`` (the operator applied to each row);
            receives vectors in ``v0``'s dtype and device.
        v0: ``[k, n]`` (or ``[n]``) start vectors.
        num_steps: Lanczos steps ``m`` (clipped to ``n``).
        reorthogonalize: full reorthogonalisation (recommended; see module doc).
        breakdown_tol: relative ``β`` threshold (default by ``operator_dtype``).
        operator_dtype: dtype the operator computes in.
        noise_floor: absolute ``β`` threshold (the operator's round-off); see :class:`LanczosProcess`.
        progress: show a progress bar over steps.

    Returns:
        The :class:`LanczosResult`.
    """
    from tqdm.auto import tqdm

    if v0.ndim == 1:
        v0 = v0[None]
    proc = LanczosProcess(v0, num_steps, reorthogonalize=reorthogonalize,
                          breakdown_tol=breakdown_tol, operator_dtype=operator_dtype, noise_floor=noise_floor)
    bar = tqdm(total=proc.num_steps, desc="Lanczos", disable=not progress, leave=False)
    while not proc.done:
        proc.advance(matvec(proc.query()))
        bar.update()
    bar.close()
    return proc.result()
