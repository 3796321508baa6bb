"""Verdicts with margins: each rule says "not established" on inputs where the claim is false."""

import itertools

import numpy as np
import pytest
from scipy.stats import spearmanr

from hesslab.experiments import verdicts as v


def test_ratio_holds_only_above_the_threshold_in_every_seed_and_beyond_the_spread():
    assert v.ratio_verdict([20.0, 25.0, 30.0], [1.0, 1.1, 0.9]).holds
    one_seed_below = v.ratio_verdict([20.0, 0.9, 30.0], [1.0, 1.0, 1.0])
    assert not one_seed_below.holds and "not above 1× in every seed" in one_seed_below.summary
    # above 1 in every seed, but the geometric spread (×/÷ 1.9) exceeds the geometric mean (1.5)
    noisy = v.ratio_verdict([1.05, 3.0, 1.02], [1.0, 1.0, 1.0])
    assert not noisy.holds and "not beyond the seed spread" in noisy.summary
    assert noisy.numbers["geometric_mean"] == pytest.approx((1.05 * 3.0 * 1.02) ** (1 / 3))
    # an order of magnitude is a different claim from an ordering
    assert not v.ratio_verdict([5.0, 6.0, 5.5], [1.0, 1.0, 1.0], threshold=10).holds


def test_a_single_seed_never_establishes_a_ratio_or_an_ordering():
    assert not v.ratio_verdict([100.0], [1.0]).holds
    assert "single seed" in v.ordering_verdict([1.0], [100.0]).summary


def test_ordering_needs_every_seed_and_separated_one_sigma_bars():
    assert v.ordering_verdict([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]).holds
    assert not v.ordering_verdict([1.0, 1.1, 0.9], [2.0, 0.8, 1.9]).holds, "reversed in one seed"
    assert not v.ordering_verdict([1.0, 1.5, 0.5], [1.6, 2.1, 1.1]).holds, "bars overlap"
    assert not v.ordering_verdict([2.0, 2.1, 1.9], [1.0, 1.1, 0.9]).holds, "the opposite order"


def test_permutation_pvalue_is_exact_for_small_samples():
    x = np.arange(5.0)
    assert v.permutation_pvalue(x, x) == pytest.approx(1 / 120)
    y = np.array([0.0, 2.0, 1.0, 4.0, 3.0])
    rho = spearmanr(x, y).statistic
    count = sum(spearmanr(x, y[list(p)]).statistic >= rho - 1e-12 for p in itertools.permutations(range(5)))
    assert v.permutation_pvalue(x, y) == pytest.approx(count / 120)


def test_correlation_verdict_rejects_negative_weak_and_chance_correlations():
    x = np.arange(7.0)
    assert v.correlation_verdict(x, x + 0.01 * np.sin(x)).holds
    assert not v.correlation_verdict(x, -x).holds
    # the reviewer's case: ρ = 0.11 must not pass as "the paper's claim"
    weak = np.array([3.0, 0.0, 6.0, 1.0, 5.0, 2.0, 4.0])
    result = v.correlation_verdict(x, weak)
    assert result.numbers["rho"] == pytest.approx(spearmanr(x, weak).statistic)
    assert not result.holds and "not established" in result.summary
    with pytest.raises(ValueError, match="at least 3"):
        v.correlation_verdict([1.0, 2.0], [1.0, 2.0])


def test_reproduces_words():
    assert v.reproduces(v.Verdict(True, "")) == "reproduces"
    assert v.reproduces(v.Verdict(False, "")) == "does **not** reproduce"
