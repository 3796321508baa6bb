"""The checks the methods chapter shows: HVP errors, SLQ convergence, ghost Ritz values.

They run on the tiny problems of :mod:`hesslab.experiments.tiny_problems` (which also
back the test suite), so what the book shows is what the tests assert.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from hesslab.hvp import HessianOperator
from hesslab.lanczos import run_lanczos
from hesslab.operators import MatrixOperator
from hesslab.slq import slq
from hesslab.experiments.tiny_problems import Problem, exact_hessian
from hesslab.spectra import SpectralDensity


def hvp_errors(problems: Sequence[Problem], methods=("reverse", "forward", "auto"), num_vectors: int = 3,
               seed: int = 0) -> pd.DataFrame:
    """Relative error ‖Hv − H_exact v‖/‖H_exact v‖ per problem and method (batched products).

    Returns:
        DataFrame: rows problems, columns methods, plus ``dim``.
    """
    rows = {}
    g = torch.Generator().manual_seed(seed)
    for problem in problems:
        H = exact_hessian(problem)
        V = torch.randn(num_vectors, H.shape[0], generator=g, dtype=H.dtype)
        row = {"dim": H.shape[0]}
        for method in methods:
            op = HessianOperator(problem.model, problem.loss_fn, problem.data, method=method,
                                 batchnorm=problem.batchnorm)
            row[method] = float((op @ V - V @ H).norm() / (V @ H).norm())
        rows[problem.name] = row
    return pd.DataFrame(rows).T


def matrix_with_spectrum(eigenvalues, seed: int = 0) -> torch.Tensor:
    """``Q diag(eigenvalues) Qᵀ`` with a random orthogonal ``Q`` (float64)."""
    n = len(eigenvalues)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    return q @ torch.diag(torch.as_tensor(np.asarray(eigenvalues), dtype=torch.float64)) @ q.T


def slq_convergence(eigenvalues, steps=(5, 10, 20, 40, 80), num_probes: int = 10, seed: int = 0) -> pd.DataFrame:
    """Wasserstein-1 distance between SLQ and the exact spectrum, against Lanczos steps.

    Returns:
        DataFrame indexed by steps: ``W1`` and ``W1 / range`` (range = λ_max − λ_min).
    """
    ev = np.asarray(eigenvalues, dtype=np.float64)
    A = MatrixOperator(matrix_with_spectrum(ev, seed))
    w1 = [slq(A, num_steps=m, num_probes=num_probes, seed=seed, progress=False).wasserstein1(ev) for m in steps]
    return pd.DataFrame({"W1": w1, "W1 / range": np.array(w1) / (ev.max() - ev.min())},
                        index=pd.Index(list(steps), name="Lanczos steps"))


def ghost_ritz_values(eigenvalues, num_steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Ritz values of one Lanczos run with and without full reorthogonalisation.

    Returns:
        ``{"with reorthogonalisation": [m], "without": [m]}`` ascending.
    """
    ev = np.asarray(eigenvalues, dtype=np.float64)
    A = matrix_with_spectrum(ev, seed)
    v0 = torch.randn(1, len(ev), dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    out = {}
    for label, reo in (("with reorthogonalisation", True), ("without", False)):
        nodes, _ = run_lanczos(lambda q: q @ A, v0, num_steps, reorthogonalize=reo).ritz()
        out[label] = np.sort(nodes[0][~np.isnan(nodes[0])])
    return out


class SummedOperator:
    """The paper's code's Hessian: the *sum* of per-micro-batch Hessians, one operator per batch."""

    def __init__(self, problem: Problem):
        self.parts = [HessianOperator(problem.model, problem.loss_fn, [batch], batchnorm=problem.batchnorm)
                      for batch in problem.data]
        self.dim, self.dtype, self.device = self.parts[0].dim, self.parts[0].dtype, self.parts[0].device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``Σ_b H_b v`` for ``[n]`` or ``[k, n]``."""
        return sum(part.matvec(v) for part in self.parts)


def summed_vs_mean_spectra(problem: Problem, num_steps: int = 30, num_probes: int = 5,
                           seed: int = 0) -> dict[str, SpectralDensity]:
    """The spectrum of the mean-loss Hessian and of the sum over micro-batches (the paper's code).

    Both are measured, with the same probes: the mean through one
    :class:`~hesslab.HessianOperator` over all batches, the sum through
    :class:`SummedOperator`. With equal batch sizes the sum is the number of batches
    times the mean, so every eigenvalue is multiplied by it; with an absolute smoothing
    width and grid (as in the paper's code) this changes the plotted densities and JS values.
    """
    op = HessianOperator(problem.model, problem.loss_fn, problem.data, batchnorm=problem.batchnorm)
    mean = slq(op, num_steps=num_steps, num_probes=num_probes, seed=seed, progress=False)
    summed = slq(SummedOperator(problem), num_steps=num_steps, num_probes=num_probes, seed=seed, progress=False)
    return {"mean (hesslab)": mean, f"sum over {len(problem.data)} batches (paper's code)": summed}


def precision_effect(name: str = "gpt2-nano", profile: str = "cpu", *, seed: int = 0, k: int = 10,
                     cache=True) -> pd.DataFrame:
    """λ_max, λ_k and JS⁰ of ``name`` at initialisation in full float32 and in the fast precision mode.

    The same model, Hessian batches and probes; only the operator's ``precision`` differs
    (:class:`~hesslab.HessianOperator`: ``"fast"`` is bfloat16 autocast, and TF32 on a GPU).

    Returns:
        Rows ``float32`` and ``fast`` with ``lambda_max``, ``lambda_k``, ``js0`` and ``seconds``,
        and a row ``relative change`` (fast − float32) / |float32| (seconds: fast / float32).
    """
    from hesslab.experiments.batches import hessian_batches
    from hesslab.experiments.heterogeneity import JS_VARIANTS, blockwise_at_init
    from hesslab.experiments.models import build
    from hesslab.experiments.profiles import profile as get_profile
    from hesslab.js import js0
    from hesslab.storage.cached import top_eigenvalues

    settings = get_profile(profile)
    built = build(name, settings.model_size, seed=seed)
    data = hessian_batches(built, settings.blockwise, seed=seed)
    rows = {}
    for precision in ("float32", "fast"):
        start = time.perf_counter()
        op = HessianOperator(built.model, built.loss_fn, data, batchnorm="train", precision=precision)
        top = top_eigenvalues(op, k, tol=1e-3, seed=seed, cache=cache)
        spectra = blockwise_at_init(name, profile, seed=seed, device="cpu", cache=cache, progress=False,
                                    precision=precision)
        rows[precision] = {"lambda_max": float(top.values[0]), "lambda_k": float(top.values[k - 1]),
                           "js0": js0(spectra, **JS_VARIANTS["log"]), "seconds": time.perf_counter() - start}
    table = pd.DataFrame.from_dict(rows, orient="index")
    change = (table.loc["fast"] - table.loc["float32"]) / table.loc["float32"].abs()
    change["seconds"] = table.loc["fast", "seconds"] / table.loc["float32", "seconds"]
    table.loc["relative change"] = change
    return table
