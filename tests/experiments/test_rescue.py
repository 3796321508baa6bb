"""SGD with a learning rate per block: factors from curvature, the study, and its report."""

import numpy as np
import pandas as pd
import pytest
import torch

from hesslab import HessianOperator, exact_block_eigenvalues
from hesslab.experiments.batches import hessian_batches
from hesslab.experiments.models import build
from hesslab.experiments.profiles import profile
from hesslab.experiments.rescue import (MAX_FACTOR, block_curvatures, block_factors, block_grid, closed_share,
                                        rescue_report, rescue_study)


def test_factors_equalise_the_stability_margins_and_are_capped():
    curvatures = pd.Series({"stiff": 10.0, "flat": 1.0, "flatter": 1e-3, "negative": -1.0})
    factors = block_factors(curvatures)
    assert factors.to_dict() == {"stiff": 1.0, "flat": 10.0, "flatter": MAX_FACTOR, "negative": MAX_FACTOR}
    # lr · factor · λ is the stiffest block's lr · λ wherever the cap does not bind
    assert factors["flat"] * curvatures["flat"] == factors["stiff"] * curvatures["stiff"]
    assert block_factors(curvatures, max_factor=5.0)["flat"] == 5.0
    with pytest.raises(ValueError, match="positive"):
        block_factors(pd.Series({"a": 0.0, "b": -2.0}))


def test_block_grid_reaches_below_plain_sgds():
    assert block_grid([0.03, 0.1, 0.3, 1.0]) == [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]


def test_closed_share():
    assert closed_share(adam=1.0, sgd=2.0, block_sgd=1.0) == 1.0
    assert closed_share(adam=1.0, sgd=2.0, block_sgd=2.0) == 0.0
    assert closed_share(adam=1.0, sgd=2.0, block_sgd=2.5) == -0.5
    assert np.isnan(closed_share(adam=1.0, sgd=0.9, block_sgd=0.5))


def test_curvatures_are_the_blocks_largest_eigenvalues():
    """Each λ_max is a Ritz value, a Rayleigh quotient of H_bb: never above the exact largest
    eigenvalue (up to float32 rounding of the HVPs), and exact for blocks of at most 10 entries
    (10 Lanczos steps span the whole block)."""
    curvatures = block_curvatures("hetero-mlp", "smoke", seed=0, cache=None, progress=False)
    built = build("hetero-mlp", profile("smoke").model_size, seed=0)
    data = hessian_batches(built, profile("smoke").blockwise, seed=0)
    exact = exact_block_eigenvalues(HessianOperator(built.model, built.loss_fn, data), built.blocks, max_dim=300)
    assert set(exact) < set(curvatures.index) and len(exact) >= 4
    scale = max(abs(e).max() for e in exact.values())
    for block, eigenvalues in exact.items():
        assert curvatures[block] <= eigenvalues[-1] + 1e-4 * scale, block
        if eigenvalues.size <= 10:
            assert curvatures[block] == pytest.approx(eigenvalues[-1], rel=1e-3, abs=1e-4 * scale), block


def test_the_study_trains_a_third_optimiser_from_the_same_start(tmp_path):
    study = rescue_study("hetero-mlp", "smoke", seed=0, cache=tmp_path, progress=False)
    assert study.block_sgd.config.optimizer == "sgd" and study.block_sgd.config.block_scales
    assert dict(study.block_sgd.config.block_scales) == study.factors.to_dict()
    assert study.block_sgd.losses[0] == pytest.approx(study.gap.sgd.losses[0], rel=1e-6), "the same initial loss"
    assert set(study.runs) == set(block_grid(study.gap.runs["sgd"])) > set(study.gap.runs["sgd"]), "SGD's grid, and lower"
    again = rescue_study("hetero-mlp", "smoke", seed=0, cache=tmp_path, progress=False)
    np.testing.assert_array_equal(again.block_sgd.losses, study.block_sgd.losses)
    assert not np.array_equal(study.block_sgd.losses, study.gap.sgd.losses)


def _long(block_relative_gap, relative_gap, closed, family="transformer"):
    n = len(relative_gap)
    return pd.DataFrame({"model": "m", "seed": range(n), "family": family, "relative_gap": relative_gap,
                         "block_relative_gap": block_relative_gap, "closed": closed})


def test_report_says_what_was_measured_both_ways():
    good = rescue_report(_long([0.05, 0.06, 0.04], [0.5, 0.6, 0.55], [0.9, 0.9, 0.92]), "cpu")
    assert "per-block SGD beats plain SGD" in good and "at least half, beyond the seed spread" in good
    bad = rescue_report(_long([0.5, 0.7, 0.4], [0.5, 0.6, 0.55], [0.0, -0.2, 0.3]), "cpu")
    assert "does **not** beat" in bad and "not established as at least half" in bad
    one_seed = rescue_report(_long([0.01], [0.9], [0.99]), "cpu")
    assert "does **not** beat" in one_seed, "a single seed establishes nothing"
    no_gap = rescue_report(_long([0.1, 0.1, 0.1], [-0.1, 0.0, 0.1], [np.nan, np.nan, 0.0], family="cnn"), "cpu")
    assert "no gap to close" in no_gap


def test_block_scales_train_on_float32_models():
    torch.manual_seed(0)  # the factors are float, the masks take the parameter's dtype
    from hesslab.experiments.training import TrainConfig, gradient_scales

    model = build("hetero-mlp", "smoke").model
    [(param, factors), *_] = gradient_scales(model, TrainConfig("sgd", 0.1, 1, block_scales=(("layers.0.weight", 2.0),)))
    assert factors.dtype == param.dtype == torch.float32 and factors.shape == param.shape


def test_curvatures_follow_the_reparametrised_knob_exactly():
    """Block l of the reparametrised knob MLP has the plain MLP's Hessian times c**(2l): the same
    probe spans the same Krylov space, so each Ritz value scales by c**(2l) (to float32 rounding)."""
    plain = block_curvatures("hetero-mlp", "smoke", seed=0, cache=None, progress=False)
    steep = block_curvatures("hetero-mlp", "smoke", seed=0, cache=None, progress=False,
                             options={"c": 2.0, "reparametrized": True})
    for block, value in plain.items():
        layer = int(block.split(".")[1])
        assert steep[block] == pytest.approx(4.0 ** layer * value, rel=1e-3), block


def test_model_labels_name_the_options():
    from hesslab.experiments.rescue import model_label

    assert model_label("gpt2") == "gpt2"
    assert model_label("hetero-mlp", {"c": 8.0, "reparametrized": True}) == "hetero-mlp (c=8, reparametrized)"
