"""Gradient heterogeneity chapter: twin encoders, Λ_G and Λ_P, the report's both branches."""

import numpy as np
import pandas as pd
import pytest
import torch

from hesslab.experiments import sign_methods as sm
from hesslab.experiments.models import build, family_of
from hesslab.spectra import SpectralDensity

MODELS = (sm.POSTLN, sm.PRELN, "resnet18")
VERDICTS = 10  # (i) 1, (ii) 2, (iii) 4, (iv) 1, (v) 2


def test_the_twins_share_their_initial_weights_and_differ_in_layer_norm_placement():
    post, pre = build(sm.POSTLN, "smoke", seed=5).model, build(sm.PRELN, "smoke", seed=5).model
    a, b = post.state_dict(), pre.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not post.norm_first and pre.norm_first
    x = torch.rand(3, 1, 8, 8)
    assert not torch.allclose(post(x), pre(x))  # same weights, another function
    assert family_of(sm.POSTLN) == family_of(sm.PRELN) == "transformer"
    other = build(sm.POSTLN, "smoke", seed=6).model.state_dict()
    assert not torch.equal(other["head.weight"], a["head.weight"])


def test_measured_blocks_are_the_weights_not_the_biases():
    blocks = sm.measured_blocks(build(sm.POSTLN, "smoke").model)
    assert {"layers.0.q.weight", "layers.0.k.weight", "layers.0.v.weight", "layers.1.ffn2.weight",
            "layers.0.ln1.weight", "head.weight", "position"} <= set(blocks)
    assert not any(b.endswith("bias") for b in blocks)


def test_digit_batches_keep_only_their_classes():
    (x, y), = sm.digit_batches(sm.FINETUNING_CLASSES, 1, None)
    assert set(y.tolist()) == set(sm.FINETUNING_CLASSES) and x.shape[1:] == (1, 8, 8)
    small = sm.digit_batches(sm.PRETRAINING_CLASSES, 3, 16, seed=1)
    assert len(small) == 3 and all(set(b[1].tolist()) <= set(sm.PRETRAINING_CLASSES) for b in small)


def test_weighted_hessian_complexities_by_hand():
    """g = (3, 4), λ = (10, 1), d = (1, 3): Λ_G = (9·10 + 16·1)/25 = 4.24, Λ_P = (1·10 + 3·1)/4 = 3.25."""
    out = sm.weighted_hessian_complexity([3.0, 4.0], [10.0, 1.0], [1, 3])
    assert out["gradient"] == pytest.approx(4.24) and out["sign"] == pytest.approx(3.25)
    assert out["largest"] == 10 and out["gradient_share"] == pytest.approx(0.424)
    # all the gradient on the sharp block: Λ_G is the largest curvature, Λ_P unchanged
    assert sm.weighted_hessian_complexity([1.0, 0.0], [10.0, 1.0], [1, 3])["gradient"] == pytest.approx(10.0)
    with pytest.raises(ValueError):
        sm.weighted_hessian_complexity([1.0], [1.0, 2.0], [1, 1])


def test_coordinate_gradients_average_to_the_full_batch_gradient():
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    loss = torch.nn.functional.cross_entropy
    per = sm.coordinate_gradients(model, loss, [(x[:4], y[:4]), (x[4:], y[4:])], ["weight", "bias"])
    full = sm.coordinate_gradients(model, loss, [(x, y)], ["weight", "bias"])
    assert per.shape == (2, 8) and np.allclose(per.mean(0), full[0])


def _tables(claims_hold: bool):
    """Block and run tables over 3 seeds where every claim holds, or every one fails."""
    blocks, runs = [], []
    spreads = {sm.POSTLN: 3.0, sm.PRELN: 1.0, "resnet18": 0.5}
    gaps = {sm.POSTLN: {"sgd-plain": 0.8, "sgd": 0.6, "signsgd": 0.2, "signum": 0.1},
            sm.PRELN: {"sgd-plain": 0.5, "sgd": 0.3, "signsgd": 0.1, "signum": 0.05},
            "resnet18": {"sgd-plain": 0.05, "sgd": 0.0, "signsgd": 0.02, "signum": 0.01}}
    if not claims_hold:
        spreads = {sm.POSTLN: 1.0, sm.PRELN: 3.0, "resnet18": 4.0}
        gaps = {sm.POSTLN: {"sgd-plain": 0.1, "sgd": 0.05, "signsgd": 0.6, "signum": 0.5},
                sm.PRELN: {"sgd-plain": 0.3, "sgd": 0.4, "signsgd": 0.7, "signum": 0.6},
                "resnet18": {"sgd-plain": 0.9, "sgd": 0.9, "signsgd": 0.8, "signum": 0.8}}
    for name in MODELS:
        for seed in range(3):
            norms = 10 ** np.linspace(-spreads[name], 0, 6) * (1 + 0.01 * seed)
            lam = 2 * norms if claims_hold else 1 / norms
            blocks += [{"model": name, "seed": seed, "block": f"b{i}", "dim": 10 * (i + 1), "grad_norm": g,
                        "full_grad_norm": g, "lambda_max": l} for i, (g, l) in enumerate(zip(norms, lam))]
            runs += [{"model": name, "seed": seed, "optimizer": opt, "lr": 0.1, "initial": 2.3, "final": 0.5,
                      "relative_gap": gap + 0.01 * seed, "edge": False}
                     for opt, gap in gaps[name].items()]
            runs.append({"model": name, "seed": seed, "optimizer": "adamw", "lr": 1e-3, "initial": 2.3,
                         "final": 0.4, "relative_gap": 0.0, "edge": False})
    return pd.DataFrame(blocks), pd.DataFrame(runs)


def test_the_report_reproduces_when_every_claim_holds():
    report = sm.gradient_report(*_tables(True), "smoke")
    assert report.count("This reproduces") == VERDICTS and "does **not**" not in report


def test_the_report_does_not_reproduce_when_every_claim_fails():
    report = sm.gradient_report(*_tables(False), "smoke")
    assert report.count("does **not** reproduce") == VERDICTS and "This reproduces" not in report
    assert "ρ is not positive" in report


def test_a_model_that_fits_the_set_is_named():
    blocks, runs = _tables(True)
    assert "fit the fine-tuning set" not in sm.gradient_report(blocks, runs, "smoke")
    runs.loc[runs.model == "resnet18", "final"] = 0.01
    assert "fit the fine-tuning set (final loss below 2% of the initial loss) on resnet18:" in sm.gradient_report(
        blocks, runs, "smoke")


def test_an_undefined_relative_gap_is_not_established():
    blocks, runs = _tables(True)
    runs.loc[(runs.model == sm.POSTLN) & (runs.optimizer == "signsgd"), "relative_gap"] = np.nan
    report = sm.gradient_report(blocks, runs, "smoke")
    assert "undefined" in report and report.count("does **not** reproduce") == 1


def test_heterogeneity_table_and_block_js_distance():
    blocks, _ = _tables(True)
    het = sm.heterogeneity_table(blocks)
    post = het[(het.model == sm.POSTLN) & (het.seed == 0)].iloc[0]
    assert post.log10_spread == pytest.approx(3.0) and post.steepest == "b5"
    assert post.Lambda_G_share <= 1 and post.Lambda_P <= post.lambda_max
    same = SpectralDensity.from_eigenvalues([1.0, 2.0, 3.0])
    spectra = {"a": same, "b": same, "c": SpectralDensity.from_eigenvalues([1e-4, 2e-4, 3e-4])}
    distance = sm.block_js_distance(spectra)
    assert distance.idxmax() == "c" and distance["a"] == pytest.approx(distance["b"])
