"""The complexity bounds of the paper's Section 4 and the measured iteration ratios."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hesslab.experiments.quadratic.optimizers import (DEFAULT_TOL, Run, _check_budget, adam, blockwise_gd, compare,
                                                      gd)
from hesslab.experiments.quadratic.problems import PAPER_KAPPA, QuadraticProblem, make_problem

# --------------------------------------------------------------------------- theory
def _iterations_for_rate(rate: float, tol: float, prefactor: float = 1.0) -> float:
    """Smallest t with prefactor · rate^t ≤ tol (inf if rate ≥ 1)."""
    if rate >= 1:
        return math.inf
    if rate <= 0:
        return 1.0
    return max(0.0, math.ceil(math.log(tol / prefactor) / math.log(rate)))


def theory_bounds(problem: QuadraticProblem, tol: float = DEFAULT_TOL) -> dict:
    """Complexity bounds evaluated on one problem.

    * ``gd``: GD with η = 2/(λ_max+λ_min) has ‖g_t‖ ≤ ((κ−1)/(κ+1))ᵗ ‖g₀‖ exactly
      (g_t = (I − ηH)ᵗ g₀), so t ≥ ln(1/tol)/ln((κ+1)/(κ−1)) ≈ (κ/2) ln(1/tol)
      suffices, and a worst-case g₀ needs it: the paper's Θ(κ log 1/ε).
    * ``blockwise``: GD with η_l = 1/λ_max(H_l) contracts ‖g‖ by max_l (1 − 1/κ_l):
      ≈ max_l κ_l · ln(1/tol). The paper's Adam bound has this max_l κ_l form times an
      initialisation-dependent factor (its constants are unverified here).
    * ``adam_beta2_1``: Adam with β₁=0, β₂=1, no bias correction is GD preconditioned by
      D = diag(|g₀|)⁻¹; with its best fixed step, ‖g_t‖ ≤ √κ(D) ρ_Dᵗ ‖g₀‖ with
      ρ_D = (κ_D−1)/(κ_D+1), κ_D = κ(D^½ H D^½): this instance's exact bound.
    * ``momentum``: ln(1/tol)/ln((√κ+1)/(√κ−1)) ≈ (√κ/2) ln(1/tol), heavy ball's
      asymptotic rate with its optimal (β, η): a rate, not a bound for finite t.
    * ``paper_gd`` = κ ln(1/tol), ``paper_adam`` = max_l κ_l ln(1/tol): the orders of
      the paper's bounds with all constants set to 1 (for comparing the orders only).

    Args:
        problem: the quadratic.
        tol: relative gradient-norm tolerance.

    Returns:
        A dict with ``kappa``, ``block_kappas`` ``[L]``, ``max_block_kappa``,
        ``kappa_adam`` (κ_D) and the iteration bounds above (floats; inf if none).
    """
    _check_budget(tol, 1)
    kappa = problem.kappa
    kl = problem.block_kappas
    g0 = np.abs(problem.grad(problem.w0)).reshape(problem.num_blocks, problem.block_size)
    if (g0 == 0).any():
        kappa_d, cond_d = math.inf, math.inf
    else:
        s = 1.0 / np.sqrt(g0)
        ev = np.linalg.eigvalsh(s[:, :, None] * problem.blocks * s[:, None, :])
        kappa_d = float(ev.max() / ev.min())
        cond_d = float(g0.max() / g0.min())
    log_inv = math.log(1.0 / tol)
    return {
        "kappa": kappa,
        "block_kappas": kl,
        "max_block_kappa": float(kl.max()),
        "kappa_adam": kappa_d,
        "gd": _iterations_for_rate((kappa - 1) / (kappa + 1), tol),
        "blockwise": max(_iterations_for_rate(1 - 1 / k, tol) for k in kl),
        "momentum": _iterations_for_rate((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1), tol),
        "adam_beta2_1": _iterations_for_rate((kappa_d - 1) / (kappa_d + 1), tol, math.sqrt(cond_d)),
        "paper_gd": kappa * log_inv,
        "paper_adam": float(kl.max()) * log_inv,
    }


def iteration_ratio(slow: Run, fast: Run) -> tuple[float, str]:
    """``slow.iterations / fast.iterations`` and how to read it.

    Returns:
        ``(ratio, kind)``: kind ``"="`` when both converged; ``">="`` when only ``fast``
        did (ratio uses ``slow.max_iter``); ``"<="`` when only ``slow`` did (uses
        ``fast.max_iter``); ``"?"`` (NaN) when neither did.
    """
    if slow.converged and fast.converged:
        return slow.iterations / max(fast.iterations, 1), "="
    if fast.converged:
        return slow.max_iter / max(fast.iterations, 1), ">="
    if slow.converged:
        return slow.iterations / fast.max_iter, "<="
    return float("nan"), "?"


def measured_ratios(runs: dict[str, Run]) -> dict[str, tuple[float, str]]:
    """The chapter's measured claim on one problem: iteration ratios of :func:`compare` runs.

    Args:
        runs: ``{name: Run}`` with at least "GD" and "Adam" (others optional).

    Returns:
        ``{"GD/Adam": (ratio, kind), "GD+momentum/Adam": …, "GD/blockwise GD": …}`` for the
        pairs present (kind as in :func:`iteration_ratio`).
    """
    pairs = {"GD/Adam": ("GD", "Adam"), "GD+momentum/Adam": ("GD + momentum", "Adam"),
             "GD/blockwise GD": ("GD", "blockwise GD")}
    return {k: iteration_ratio(runs[a], runs[b]) for k, (a, b) in pairs.items() if a in runs and b in runs}


def format_ratio(ratio: tuple[float, str]) -> str:
    """``(62.3, "=")`` → ``"= 62"``, ``(3.1, ">=")`` → ``"≥ 3.1"``, ``(nan, "?")`` → ``"n/a"``."""
    value, kind = ratio
    if kind == "?":
        return "n/a"
    text = f"{value:.2g}" if value < 10 else f"{value:.0f}"
    return {"=": "= ", ">=": "≥ ", "<=": "≤ "}[kind] + text


def interactive_runs(kappa: float = PAPER_KAPPA, heterogeneity: float = 1.0, beta2: float = 0.999,
                     lr: float = 0.3, *, family: str = "model", block_size: int = 50,
                     tol: float = DEFAULT_TOL, max_iter: int = 3000, seed: int = 0) -> dict[str, Run]:
    """The slider view: GD (optimal step), blockwise GD and Adam at one (β₂, lr).

    Cheap enough to rerun on every slider move (closed-form GD, one Adam run).

    Args:
        kappa: global condition number.
        heterogeneity: t in ``[0, 1]`` (see :func:`case_spectra`).
        beta2: Adam's β₂ (β₁ = 0.9, bias-corrected; β₂ = 1 switches to Adam without
            bias correction, which allows it).
        lr: Adam's learning rate.
        family: ``"model"`` or ``"synthetic"``.
        block_size: ``d``.
        tol: relative gradient-norm tolerance.
        max_iter: iterations shown.
        seed: seed of the problem.

    Returns:
        ``{"GD": Run, "blockwise GD": Run, "Adam": Run}``.
    """
    problem = make_problem(family, heterogeneity, kappa=kappa, block_size=block_size, seed=seed)
    return {
        "GD": gd(problem, "optimal", tol=tol, max_iter=max_iter),
        "blockwise GD": blockwise_gd(problem, tol=tol, max_iter=max_iter),
        "Adam": adam(problem, lr, beta2=beta2, bias_correction=beta2 < 1, tol=tol, max_iter=max_iter,
                     name="Adam"),
    }


def heterogeneity_sweep(family: str = "model", ts: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), *,
                        kappa: float = PAPER_KAPPA, block_size: int = 50, tol: float = DEFAULT_TOL,
                        max_iter: int = 100_000, seed: int = 0,
                        methods: Sequence[str] = ("GD", "GD + momentum", "Adam", "blockwise GD"),
                        ) -> dict[str, np.ndarray]:
    """Iterations to the tolerance as the block spectra move from homogeneous to heterogeneous.

    Args:
        family: ``"model"`` (Case 2 → 1) or ``"synthetic"`` (Case 4 → 3).
        ts: degrees of heterogeneity.
        kappa: global condition number.
        block_size: ``d``.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.
        seed: seed of the problems.
        methods: passed to :func:`compare`.

    Returns:
        ``{"t": [T], "max_block_kappa": [T], method: [T] iterations (NaN if not reached)}``.
    """
    out: dict[str, list] = {"t": [], "max_block_kappa": []} | {m: [] for m in methods}
    for t in ts:
        problem = make_problem(family, t, kappa=kappa, block_size=block_size, seed=seed)
        runs = compare(problem, tol=tol, max_iter=max_iter, methods=methods)
        out["t"].append(t)
        out["max_block_kappa"].append(float(problem.block_kappas.max()))
        for m in methods:
            out[m].append(np.nan if runs[m].iterations is None else runs[m].iterations)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
