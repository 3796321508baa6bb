"""Verdicts with margins: does a measured result reproduce a claim of the paper?

Every verdict the book prints comes from one of these functions, never from a typed
sentence. Each returns a :class:`Verdict`: whether the claim holds *beyond the noise of the
measurement* (seed spread, a permutation test), and one sentence with the numbers that
decide it. The rules, stated once:

* **ratios** (:func:`ratio_verdict`, e.g. the smallest Transformer JS⁰ over the largest CNN
  JS⁰): the ratio must exceed the threshold in *every* seed, and its geometric mean divided
  by one geometric standard deviation over seeds must exceed it too;
* **orderings** (:func:`ordering_verdict`, ``a < b``): ``b > a`` in every seed, and the means
  differ by more than the sum of the two standard deviations (the one-sigma bars do not
  overlap);
* **correlations** (:func:`correlation_verdict`): Spearman's ρ > 0 with a one-sided
  permutation p-value below ``alpha`` and a bootstrap interval that excludes 0.

With a single seed there is no spread, so a ratio or an ordering is *not established*
(``holds=False``) however large it is: the sentence says so.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

#: the largest sample for which :func:`permutation_pvalue` enumerates every permutation
EXACT_PERMUTATIONS_UP_TO = 8


@dataclass(frozen=True)
class Verdict:
    """The outcome of testing one claim.

    Attributes:
        holds: the claim holds beyond the margin.
        summary: one sentence fragment with the deciding numbers.
        numbers: the numbers themselves (for tables and tests).
    """

    holds: bool
    summary: str
    numbers: dict = field(default_factory=dict)

    def says(self, yes: str, no: str) -> str:
        """``yes`` when the claim holds, else ``no``."""
        return yes if self.holds else no

    def __str__(self) -> str:
        return self.summary


def _samples(values, name: str) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).ravel()
    if out.size == 0:
        raise ValueError(f"{name} has no values")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} has non-finite values: {out}")
    return out


def ratio_verdict(numerator, denominator, *, threshold: float = 1.0, what: str = "ratio") -> Verdict:
    """Is ``numerator / denominator`` above ``threshold``, seed by seed and beyond the seed spread?

    Args:
        numerator: ``[seeds]`` positive values (e.g. the smallest Transformer JS⁰ per seed).
        denominator: ``[seeds]`` positive values, paired with ``numerator`` by seed.
        threshold: the ratio the claim needs (1: a strict ordering; 10: an order of magnitude).
        what: the ratio's name, for the sentence.

    Returns:
        A :class:`Verdict`; ``numbers`` has ``ratios``, ``geometric_mean``, ``geometric_sd``.
    """
    top, bottom = _samples(numerator, "numerator"), _samples(denominator, "denominator")
    if top.shape != bottom.shape:
        raise ValueError(f"numerator and denominator must pair up by seed, got {top.size} and {bottom.size} values")
    if (top <= 0).any() or (bottom <= 0).any():
        raise ValueError("a ratio verdict needs positive values")
    ratios = top / bottom
    logs = np.log(ratios)
    mean = float(np.exp(logs.mean()))
    spread = float(np.exp(logs.std(ddof=1))) if ratios.size > 1 else math.nan
    numbers = {"ratios": ratios.tolist(), "geometric_mean": mean, "geometric_sd": spread, "seeds": ratios.size}
    if ratios.size == 1:
        return Verdict(False, f"{what} {mean:.3g}× from a single seed: no spread, so not established", numbers)
    every = bool((ratios > threshold).all())
    margin = mean / spread > threshold
    text = (f"{what} {mean:.3g}× (geometric mean over {ratios.size} seeds, ×/÷ {spread:.2f}; "
            f"range {ratios.min():.3g}–{ratios.max():.3g}×)")
    if every and margin:
        return Verdict(True, f"{text}, above {threshold:g}× in every seed and beyond the seed spread", numbers)
    why = (f"not above {threshold:g}× in every seed" if not every
           else f"above {threshold:g}× in every seed but not beyond the seed spread")
    return Verdict(False, f"{text}: {why}", numbers)


def ordering_verdict(low, high, *, what: str = "") -> Verdict:
    """Is ``high`` above ``low`` in every seed and beyond one standard deviation of each?

    Args:
        low: ``[seeds]`` values that the claim puts lower.
        high: ``[seeds]`` values that the claim puts higher, paired with ``low`` by seed.
        what: a label for the sentence (e.g. ``"JS⁰ of VGG vs BERT"``).

    Returns:
        A :class:`Verdict`; ``numbers`` has the means, standard deviations and per-seed differences.
    """
    a, b = _samples(low, "low"), _samples(high, "high")
    if a.shape != b.shape:
        raise ValueError(f"low and high must pair up by seed, got {a.size} and {b.size} values")
    sd_a = float(a.std(ddof=1)) if a.size > 1 else math.nan
    sd_b = float(b.std(ddof=1)) if b.size > 1 else math.nan
    numbers = {"low_mean": float(a.mean()), "low_sd": sd_a, "high_mean": float(b.mean()), "high_sd": sd_b,
               "differences": (b - a).tolist(), "seeds": a.size}
    label = f"{what}: " if what else ""
    if a.size == 1:
        return Verdict(False, f"{label}{a[0]:.3g} vs {b[0]:.3g} from a single seed: no spread, so not established",
                       numbers)
    text = f"{label}{a.mean():.3g} ± {sd_a:.2g} vs {b.mean():.3g} ± {sd_b:.2g} (mean ± sd over {a.size} seeds)"
    every = bool((b > a).all())
    apart = b.mean() - a.mean() > sd_a + sd_b
    if every and apart:
        return Verdict(True, f"{text}: the second is higher in every seed, beyond the seed spread", numbers)
    why = "the second is not higher in every seed" if not every else "the difference is within the seed spread"
    return Verdict(False, f"{text}: {why}", numbers)


def spearman_rho(x, y) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (ties get mean ranks; 0 when either is constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else 0.0


def permutation_pvalue(x, y, *, permutations: int = 20_000, seed: int = 0) -> float:
    """One-sided p-value of Spearman's ρ > 0: the share of reorderings of ``y`` with ρ at least as large.

    Exact (every permutation) for at most :data:`EXACT_PERMUTATIONS_UP_TO` points, else
    ``permutations`` random ones (the observed order counted once, so p ≥ 1/(permutations+1)).
    """
    x, y = _samples(x, "x"), _samples(y, "y")
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    if denominator == 0:
        return 1.0
    # ranks of a reordered y are the reordered ranks of y: permute the centred ranks only
    if x.size <= EXACT_PERMUTATIONS_UP_TO:
        orders = np.array(list(itertools.permutations(range(y.size))))
        extra = 0
    else:
        rng = np.random.default_rng(seed)
        orders = np.argsort(rng.random((permutations, y.size)), axis=1)
        extra = 1
    values = ry[orders] @ rx / denominator
    observed = float(ry @ rx / denominator)
    return float(((values >= observed - 1e-12).sum() + extra) / (len(orders) + extra))


def bootstrap_interval(x, y, *, resamples: int = 5_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's ρ, resampling the ``(x, y)`` pairs."""
    x, y = _samples(x, "x"), _samples(y, "y")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, x.size, size=(resamples, x.size))
    values = np.array([spearman_rho(x[i], y[i]) for i in picks])
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def correlation_verdict(x, y, *, alpha: float = 0.05, what: str = "Spearman's ρ", seed: int = 0) -> Verdict:
    """Does ``y`` rise with ``x``? Spearman's ρ with a permutation p-value and a bootstrap interval.

    Args:
        x: ``[n]`` values (e.g. JS⁰ per model).
        y: ``[n]`` values (e.g. the gap per model).
        alpha: the largest one-sided permutation p-value that counts.
        what: the statistic's label in the sentence.
        seed: seed of the bootstrap and of random permutations.

    Returns:
        A :class:`Verdict` that holds when ρ > 0, p < ``alpha`` and the 95 % bootstrap
        interval lies above 0; ``numbers`` has ``rho``, ``p``, ``n``, ``interval``.
    """
    x, y = _samples(x, "x"), _samples(y, "y")
    if x.shape != y.shape or x.size < 3:
        raise ValueError(f"x and y need the same number (at least 3) of points, got {x.size} and {y.size}")
    rho = spearman_rho(x, y)
    p = permutation_pvalue(x, y, seed=seed)
    low, high = bootstrap_interval(x, y, seed=seed)
    numbers = {"rho": rho, "p": p, "n": x.size, "interval": (low, high)}
    text = (f"{what} = {rho:.2f} (n = {x.size}, one-sided permutation p = {p:.3f}, "
            f"95 % bootstrap interval {low:.2f} to {high:.2f})")
    holds = rho > 0 and p < alpha and low > 0
    if holds:
        return Verdict(True, f"{text}: positive beyond chance", numbers)
    why = ("ρ is not positive" if rho <= 0 else f"p ≥ {alpha:g}" if p >= alpha else "the interval includes 0")
    return Verdict(False, f"{text}: not established ({why})", numbers)


def reproduces(verdict: Verdict) -> str:
    """``"reproduces"`` or ``"does **not** reproduce"``, the chapters' two words for a verdict."""
    return verdict.says("reproduces", "does **not** reproduce")
