"""hesslab.gradients: per-block gradient norms (sliced blocks too) and their disparity."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesslab import NonFiniteError, block_gradient_norms, gradient_heterogeneity


def _problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
            for n in (5, 3)]
    return model, data


def test_norms_of_whole_and_sliced_blocks_match_the_weighted_mean_gradient():
    model, data = _problem()
    loss = sum(F.cross_entropy(model(x), y) * len(y) for x, y in data) / 8
    g0, b0, g2 = torch.autograd.grad(loss, [model[0].weight, model[0].bias, model[2].weight])
    blocks = {"first rows": [("0.weight", (slice(0, 2),)), ("0.bias", (slice(0, 2),))], "head": "2.weight"}
    norms = block_gradient_norms(model, F.cross_entropy, data, blocks)
    expected_first = math.sqrt(float(g0[:2].pow(2).sum() + b0[:2].pow(2).sum()))
    assert norms == {"first rows": pytest.approx(expected_first, rel=1e-12), "head": pytest.approx(float(g2.norm()))}
    assert all(p.grad is None for p in model.parameters())


def test_non_finite_loss_is_refused():
    model, data = _problem()
    with pytest.raises(NonFiniteError, match="batch 0"):
        block_gradient_norms(model, lambda out, y: F.cross_entropy(out * float("nan"), y), data)


def test_heterogeneity_summaries():
    same = gradient_heterogeneity({"a": 2.0, "b": 2.0, "c": 2.0})
    assert same["cv"] == 0 and same["log10_spread"] == 0
    one = gradient_heterogeneity({"a": 1.0, "b": 100.0})
    assert one["log10_spread"] == pytest.approx(2.0) and one["cv"] == pytest.approx(99 / 101)
    assert (one["steepest"], one["flattest"]) == ("b", "a")
    assert gradient_heterogeneity({"a": 0.0, "b": 1.0})["log10_spread"] == math.inf
    # one block holding all of it: cv = sqrt(B - 1)
    assert gradient_heterogeneity({"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0})["cv"] == pytest.approx(math.sqrt(3))
    with pytest.raises(ValueError):
        gradient_heterogeneity({"a": 1.0})
