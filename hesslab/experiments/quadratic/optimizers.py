"""Optimisers on quadratic problems: GD, heavy ball, blockwise GD, Adam, sign descent.

Each returns a :class:`Run`; learning-rate grids run side by side and stop when one rate
reaches the tolerance, so the best rate's iteration count is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hesslab.experiments.quadratic.problems import QuadraticProblem

#: Default relative tolerance: iterations until ‖∇f(w_k)‖ ≤ tol · ‖∇f(w_0)‖.
DEFAULT_TOL = 1e-6

#: Learning-rate grids searched by :func:`compare` (log-spaced; see the chapter).
#: GD: multiples 0.05, 0.1, …, 1 of 2/(λ_max + λ_min) (a step ≥ 2/λ_max diverges, so larger
#: multiples are pointless; each grid point costs one bisection in closed form).
GD_FACTORS = tuple(round(0.05 * k, 2) for k in range(1, 21))
#: Heavy ball (β = 0.9): multiples of 1/λ_max (stable below 2(1 + β)/λ_max = 3.8/λ_max).
MOMENTUM_FACTORS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 3.5)
#: Adam (all variants): half-decades from 1e-3 to 10^0.5.
ADAM_LRS = tuple(float(x) for x in np.logspace(-3, 0.5, 8))
#: Scaled sign descent: half-decades from 1e-4 to 1e-1.
SIGN_LRS = tuple(float(x) for x in np.logspace(-4, -1, 7))

# --------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One optimiser run (the best of a grid, if one was searched).

    Attributes:
        name: optimiser label.
        grad_norms: ``[k + 1]`` ‖∇f(w_t)‖ for t = 0 … k (stops at the tolerance).
        lr: the learning rate used (the best of the grid).
        iterations: first t with ‖∇f(w_t)‖ ≤ tol·‖∇f(w_0)‖, or None if not reached.
        tol: the relative tolerance.
        max_iter: the iteration budget.
        search: ``{lr: iterations or None}`` over the grid (empty without a search);
            rates still running when the best one stopped are None.
        w: final iterate ``[n]`` (None for closed-form runs).
    """

    name: str
    grad_norms: np.ndarray
    lr: float
    iterations: int | None
    tol: float
    max_iter: int
    search: dict = field(default_factory=dict)
    w: np.ndarray | None = None

    @property
    def converged(self) -> bool:
        """Whether the tolerance was reached within the budget."""
        return self.iterations is not None

    @property
    def relative_grad_norms(self) -> np.ndarray:
        """``[k + 1]`` ‖∇f(w_t)‖ / ‖∇f(w_0)‖."""
        return self.grad_norms / self.grad_norms[0]


def _as_grid(lr) -> tuple[np.ndarray, bool]:
    grid = np.atleast_1d(np.asarray(lr, dtype=np.float64))
    if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all() or (grid <= 0).any():
        raise ValueError(f"learning rates must be positive finite numbers, got {lr!r}")
    return grid, np.ndim(lr) > 0


def _check_budget(tol: float, max_iter: int) -> None:
    if not 0 < tol < 1:
        raise ValueError(f"tol is relative to ||g_0|| and must lie in (0, 1), got {tol}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")


def _iterate(problem: QuadraticProblem, name: str, lrs, step, tol: float, max_iter: int,
             diverge: float = 1e8, check_every: int = 64) -> Run:
    """Run ``w ← w − step(g, t, lr)`` for every rate of a grid side by side.

    ``step(g, t, lr)`` gets ``g`` ``[L, d, B]`` (B = grid size), the iteration ``t`` (1, 2,
    …) and ``lr`` ``[B]``, and returns the update ``[L, d, B]``. Stops when any rate
    reaches ``tol`` (the best rate's iteration count is then exact), or all diverged
    (‖g‖ > diverge·‖g₀‖, checked every ``check_every`` iterations), or after ``max_iter``.
    """
    _check_budget(tol, max_iter)
    grid, searched = lrs
    L, d, B = problem.num_blocks, problem.block_size, grid.size
    H = problem.blocks
    b = problem.b.reshape(L, d, 1)
    w = np.repeat(problem.w0.reshape(L, d, 1), B, axis=2)
    g = H @ w - b
    sq = np.empty((max_iter + 1, B))
    sq[0] = np.einsum("ldb,ldb->b", g, g)
    target = tol**2 * sq[0]
    hit, t = None, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, max_iter + 1):
            w -= step(g, t, grid)
            np.matmul(H, w, out=g)
            g -= b
            sq[t] = np.einsum("ldb,ldb->b", g, g)
            if (sq[t] <= target).any():
                hit = t
                break
            if t % check_every == 0 and not (sq[t] <= diverge**2 * sq[0]).any():
                break  # every rate diverged (or is NaN)
    hist = np.sqrt(sq[: t + 1])  # [k + 1, B]
    if hit is not None:
        best = int(np.argmin(np.where(sq[t] <= target, sq[t], np.inf)))
    else:
        finite = np.where(np.isfinite(hist), hist, np.inf)
        final = np.where(finite[-1] <= diverge * hist[0], finite.min(axis=0), np.inf)
        best = int(np.argmin(final)) if np.isfinite(final).any() else 0
    search = {float(x): (hit if sq[t, i] <= target[i] else None) for i, x in enumerate(grid)} if searched else {}
    return Run(name, hist[:, best].copy(), float(grid[best]), hit, tol, max_iter, search,
               w[:, :, best].reshape(-1).copy())


def _eigen_coordinates2(problem: QuadraticProblem) -> np.ndarray:
    """``[n]`` squared coordinates of ∇f(w_0) in the eigenbasis of H (block by block)."""
    L, d = problem.num_blocks, problem.block_size
    g0 = problem.grad(problem.w0).reshape(L, d)
    return np.einsum("lji,lj->li", problem.eigenvectors, g0).reshape(-1) ** 2


def _closed_form_iterations(c2: np.ndarray, log_r: np.ndarray, target2: float, max_iter: int) -> int | None:
    """First t ≤ max_iter with S(t) = Σ c2 r^(2t) ≤ target2 (bisection; S is non-increasing for |r| ≤ 1)."""
    with np.errstate(over="ignore", invalid="ignore"):
        def s(t):
            return float(c2 @ np.exp(2.0 * t * log_r))

        if s(0) <= target2:
            return 0
        if not s(max_iter) <= target2:
            return None
        lo, hi = 0, max_iter
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if s(mid) <= target2 else (mid, hi)
        return hi


def _closed_form(problem: QuadraticProblem, name: str, rates: np.ndarray, lr: float, tol: float,
                 max_iter: int, search=None, chunk: int = 2048, c2=None) -> Run:
    """‖g_t‖ for a linear method that is diagonal in the eigenbasis: ĝ_t = r^t ĝ_0.

    With every |r| ≤ 1 the iteration count comes from a bisection on t and the history
    is evaluated once up to it; otherwise (some component grows) t is scanned in chunks
    until the tolerance, divergence or ``max_iter``.
    """
    _check_budget(tol, max_iter)
    c2 = _eigen_coordinates2(problem) if c2 is None else c2
    log_r = np.log(np.abs(rates.reshape(-1)) + 1e-300)
    target2 = (tol**2) * c2.sum()
    out, t0 = [], 0
    stop = max_iter
    if (log_r <= 0).all():
        hit = _closed_form_iterations(c2, log_r, target2, max_iter)
        stop = max_iter if hit is None else hit
    with np.errstate(over="ignore", invalid="ignore"):
        while t0 <= stop:
            ts = np.arange(t0, min(t0 + chunk, stop + 1))
            sq = np.exp(2.0 * np.outer(ts, log_r)) @ c2
            below = np.nonzero(sq <= target2)[0]
            if below.size:
                out.append(sq[: below[0] + 1])
                break
            out.append(sq)
            if not np.isfinite(sq[-1]) or sq[-1] > 1e16 * c2.sum():
                break  # diverged
            t0 += chunk
    sq = np.concatenate(out)
    iterations = int(sq.size - 1) if sq[-1] <= target2 else None
    return Run(name, np.sqrt(sq), float(lr), iterations, tol, max_iter, search or {})


def gd(problem: QuadraticProblem, lr="optimal", *, tol: float = DEFAULT_TOL, max_iter: int = 100_000,
       method: str = "closed") -> Run:
    """Gradient descent ``w ← w − η ∇f(w)`` with one fixed step for all parameters.

    Args:
        problem: the quadratic.
        lr: ``"optimal"`` (η = 2/(λ_max + λ_min): the worst-case optimal fixed step, rate
            (κ−1)/(κ+1) per iteration for ‖g‖), a step, or a sequence of steps (the one
            needing fewest iterations is kept).
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.
        method: ``"closed"`` (ĝ_t = (1 − ηλ)^t ĝ_0 in the eigenbasis: exact and fast) or
            ``"iterate"`` (the actual recursion).

    Returns:
        The :class:`Run`.
    """
    lam = problem.eigenvalues
    if isinstance(lr, str):
        if lr != "optimal":
            raise ValueError(f"lr must be 'optimal', a number or a sequence, got {lr!r}")
        lr = 2.0 / (lam.max() + lam.min())
    grid, searched = _as_grid(lr)
    if method == "iterate":
        return _iterate(problem, "GD", (grid, searched), lambda g, t, eta: eta * g, tol, max_iter)
    if method != "closed":
        raise ValueError(f"method must be 'closed' or 'iterate', got {method!r}")
    c2 = _eigen_coordinates2(problem)
    target2 = tol**2 * c2.sum()
    counts = []
    for eta in grid:
        r = np.abs(1.0 - eta * lam.reshape(-1))
        counts.append(_closed_form_iterations(c2, np.log(r + 1e-300), target2, max_iter) if (r <= 1).all() else None)
    if any(c is not None for c in counts):
        best = min((c, i) for i, c in enumerate(counts) if c is not None)[1]
    else:  # none converged: keep the rate with the smallest ‖g‖ at max_iter (a stable one if any)
        final = [(np.abs(1.0 - eta * lam) ** (2 * max_iter)).reshape(-1) @ c2 for eta in grid]
        best = int(np.nanargmin(final))
    run = _closed_form(problem, "GD", 1.0 - grid[best] * lam, grid[best], tol, max_iter, c2=c2)
    if searched:
        run.search = {float(eta): c for eta, c in zip(grid, counts)}
    return run


def blockwise_gd(problem: QuadraticProblem, step: str = "max", *, tol: float = DEFAULT_TOL,
                 max_iter: int = 100_000) -> Run:
    """GD with one step per block: η_l = 1/λ_max(H_l) (``"max"``) or 2/(λ_max + λ_min) (``"optimal"``).

    A block-diagonal preconditioner that knows each block's scale: ‖g‖ contracts per
    block by ``1 − 1/κ_l`` (``"max"``), so it needs about ``max_l κ_l · ln(1/tol)``
    iterations whatever the global κ. Computed in closed form (exact).

    Args:
        problem: the quadratic.
        step: ``"max"`` or ``"optimal"``.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.

    Returns:
        The :class:`Run` (``lr`` is NaN: the steps differ per block).
    """
    lam = problem.eigenvalues
    if step == "max":
        eta = 1.0 / lam.max(axis=1, keepdims=True)
    elif step == "optimal":
        eta = 2.0 / (lam.max(axis=1, keepdims=True) + lam.min(axis=1, keepdims=True))
    else:
        raise ValueError(f"step must be 'max' or 'optimal', got {step!r}")
    return _closed_form(problem, "blockwise GD", 1.0 - eta * lam, float("nan"), tol, max_iter)


def heavy_ball(problem: QuadraticProblem, lr, *, momentum: float = 0.9, tol: float = DEFAULT_TOL,
               max_iter: int = 100_000) -> Run:
    """GD with heavy-ball momentum, in PyTorch's SGD form: ``u ← βu + g``, ``w ← w − ηu``.

    The fair baseline for Adam with β₁ = 0.9: on a quadratic, tuned momentum alone
    turns GD's κ into about √κ, whatever the block structure, so it separates what
    Adam gains from momentum from what it gains from per-coordinate step sizes. The
    paper's "SGD" in its training runs is SGD with momentum.

    Args:
        problem: the quadratic.
        lr: a step or a sequence of steps (best kept).
        momentum: β in ``[0, 1)``.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.

    Returns:
        The :class:`Run`.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
    state: dict = {}

    def step(g, t, eta):
        if t == 1:
            state["u"] = np.zeros_like(g)
        u = state["u"]
        u *= momentum
        u += g
        return eta * u

    return _iterate(problem, f"GD + momentum {momentum:g}", _as_grid(lr), step, tol, max_iter)


def preconditioned_gd(problem: QuadraticProblem, diag, lr, *, tol: float = DEFAULT_TOL,
                      max_iter: int = 100_000) -> Run:
    """``w ← w − η D ∇f(w)`` with a fixed diagonal ``D`` (iterated).

    Args:
        problem: the quadratic.
        diag: ``[n]`` positive diagonal of ``D``.
        lr: a step or a sequence of steps (best kept).
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.

    Returns:
        The :class:`Run`.
    """
    D = np.asarray(diag, dtype=np.float64)
    if D.shape != (problem.dim,) or (D <= 0).any():
        raise ValueError(f"diag must be a positive [n] vector with n = {problem.dim}, got shape {D.shape}")
    D = D.reshape(problem.num_blocks, problem.block_size, 1)
    return _iterate(problem, "preconditioned GD", _as_grid(lr), lambda g, t, eta: eta * (D * g), tol, max_iter)


def adam(problem: QuadraticProblem, lr=ADAM_LRS, *, beta1: float = 0.9, beta2: float = 0.999,
         eps: float = 1e-8, bias_correction: bool = True, tol: float = DEFAULT_TOL,
         max_iter: int = 100_000, name: str | None = None) -> Run:
    """Adam with full-batch gradients (the best rate of a grid, if a sequence is given).

    With ``bias_correction=True`` this is PyTorch's ``torch.optim.Adam`` (m₀ = v₀ = 0,
    m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ), update η m̂/(√v̂ + ε)). With ``bias_correction=False``
    the moments start at the first gradient, m₀ = g₀ and v₀ = g₀² (the paper's "Adam
    with no bias correction", Algorithm 3 as recalled, unverified), and are used as they
    are. Then β₁ = 0, β₂ = 1 gives ``w ← w − η g/(|g₀| + ε)``: GD preconditioned by
    ``diag(|g₀|)⁻¹``, the variant the paper's theory analyses.

    Args:
        problem: the quadratic.
        lr: a rate or a sequence of rates.
        beta1: first-moment decay in ``[0, 1)``.
        beta2: second-moment decay in ``[0, 1]``.
        eps: added to √v̂.
        bias_correction: see above.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.
        name: label (default from the settings).

    Returns:
        The :class:`Run`.
    """
    if not (0 <= beta1 < 1 and 0 <= beta2 <= 1):
        raise ValueError(f"need 0 <= beta1 < 1 and 0 <= beta2 <= 1, got {beta1}, {beta2}")
    if beta2 == 1 and bias_correction:
        raise ValueError("beta2 = 1 with bias correction divides by zero; use bias_correction=False")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if name is None:
        name = "Adam" if bias_correction else "Adam (no bias corr.)"
        if (beta1, beta2) != (0.9, 0.999):
            name += f" β=({beta1:g}, {beta2:g})"
    state: dict = {}

    def step(g, t, eta):
        if t == 1 and not bias_correction:
            # the moments start at g₀ (no bias to correct); t = 1 uses them as they are
            state["m"], state["v"] = g.copy(), g * g
        elif t == 1:
            state["m"], state["v"] = (1.0 - beta1) * g, (1.0 - beta2) * (g * g)
        else:
            m, v = state["m"], state["v"]
            m *= beta1
            m += (1.0 - beta1) * g
            if beta2 < 1:
                v *= beta2
                v += (1.0 - beta2) * (g * g)
        # PyTorch's form: η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε), with the scalars folded
        c1, c2 = (1.0 - beta1**t, math.sqrt(1.0 - beta2**t)) if bias_correction else (1.0, 1.0)
        denom = np.sqrt(state["v"])
        denom += eps * c2
        return (eta * (c2 / c1)) * (state["m"] / denom)

    return _iterate(problem, name, _as_grid(lr), step, tol, max_iter)


def sign_descent(problem: QuadraticProblem, lr=SIGN_LRS, *, tol: float = DEFAULT_TOL,
                 max_iter: int = 100_000) -> Run:
    """Sign descent scaled by the mean absolute gradient: ``w ← w − η (‖g‖₁/n) sign(g)``.

    Plain sign descent with a constant step cannot converge (its steps never shrink);
    scaling by ‖g‖₁/n makes it ℓ∞-steepest descent (the step of the ℓ∞-norm dual),
    which converges linearly at a constant η. Our choice; the paper plots Adam, not
    sign descent.

    Args:
        problem: the quadratic.
        lr: a rate or a sequence of rates.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.

    Returns:
        The :class:`Run`.
    """
    n = problem.dim

    def step(g, t, eta):
        return eta * (np.abs(g).sum(axis=(0, 1)) / n) * np.sign(g)

    return _iterate(problem, "sign descent", _as_grid(lr), step, tol, max_iter)


def compare(problem: QuadraticProblem, *, tol: float = DEFAULT_TOL, max_iter: int = 100_000,
            methods: Sequence[str] = ("GD", "GD + momentum", "Adam", "Adam (no bias corr.)",
                                      "Adam β=(0, 1)", "sign descent", "blockwise GD"),
            cap_at_gd: bool = True) -> dict[str, Run]:
    """The book's optimiser set on one problem, learning rates tuned on fixed grids.

    GD: the best of :data:`GD_FACTORS` × 2/(λ_max + λ_min); GD + momentum (β = 0.9): the
    best of :data:`MOMENTUM_FACTORS` × 1/λ_max; the Adam variants: the best of
    :data:`ADAM_LRS`; sign descent: :data:`SIGN_LRS`; blockwise GD: 1/λ_max(H_l).
    "Adam" is bias-corrected Adam (0.9, 0.999); "Adam β=(0, 1)" is Adam without bias
    correction with β₁ = 0, β₂ = 1 (GD preconditioned by diag(|g₀|)⁻¹).

    Args:
        problem: the quadratic.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget per run.
        methods: which of the above to run (GD is always run first when capping).
        cap_at_gd: give the iterated methods a budget of GD's iteration count (when GD
            converged): a method that needs more is slower than GD, which is all the
            comparison needs, and non-converging runs then cost no more than GD's count.

    Returns:
        ``{name: Run}`` in the order of ``methods``.
    """
    lam = problem.eigenvalues
    eta = 2.0 / (lam.max() + lam.min())
    makers = {
        "GD": lambda n: gd(problem, [f * eta for f in GD_FACTORS], tol=tol, max_iter=n),
        "GD + momentum": lambda n: heavy_ball(problem, [f / lam.max() for f in MOMENTUM_FACTORS],
                                              tol=tol, max_iter=n),
        "Adam": lambda n: adam(problem, ADAM_LRS, tol=tol, max_iter=n),
        "Adam (no bias corr.)": lambda n: adam(problem, ADAM_LRS, bias_correction=False, tol=tol,
                                               max_iter=n),
        "Adam β=(0, 1)": lambda n: adam(problem, ADAM_LRS, beta1=0.0, beta2=1.0, bias_correction=False,
                                        eps=0.0, tol=tol, max_iter=n, name="Adam β=(0, 1)"),
        "sign descent": lambda n: sign_descent(problem, SIGN_LRS, tol=tol, max_iter=n),
        "blockwise GD": lambda n: blockwise_gd(problem, tol=tol, max_iter=n),
    }
    unknown = set(methods) - set(makers)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {list(makers)}")
    runs: dict[str, Run] = {}
    budget = max_iter
    if cap_at_gd:
        runs["GD"] = makers["GD"](max_iter)
        if runs["GD"].converged:
            budget = max(1, runs["GD"].iterations)
    for m in methods:
        if m not in runs:
            runs[m] = makers[m](max_iter if m == "blockwise GD" else budget)
    return {m: runs[m] for m in methods}
