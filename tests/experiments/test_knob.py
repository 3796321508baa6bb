"""Figure 5's heterogeneity knob: verdicts on constructed sweeps, and ``c`` in every cache key."""

import functools
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import hesslab.experiments.training as _train
from hesslab.experiments import heterogeneity as het
from hesslab.experiments import knob
from hesslab.experiments.batches import model_batches
from hesslab.experiments.gap import base_config, fresh_model, gap_settings
from hesslab.experiments.models import build
from hesslab.storage.cache import open_cache

C_VALUES = (1.0, 2.0, 4.0, 8.0)
SEEDS = (0, 1, 2)


def _sweep(js0, gap, *, relative_at_1=(0.01, 0.02, 0.0), adam=0.05, noise=0.01):
    """A knob sweep: JS⁰ and gap per c (one value per c, plus per-seed noise)."""
    rows = []
    for i, c in enumerate(C_VALUES):
        for s in SEEDS:
            wobble = noise * (s - 1)
            g = gap[i] + wobble
            initial = 2.3 * c
            rel = relative_at_1[s] if c == 1 else g / (initial - adam)
            rows.append({"c": c, "seed": s, "js0_log": js0[i] + wobble, "js0_linear": 0.01, "initial": initial,
                         "adam": adam, "sgd": adam + g, "adam_lr": 1e-3, "sgd_lr": 1e-2, "adam_edge": False,
                         "sgd_edge": False, "gap": g, "relative_gap": rel})
    return pd.DataFrame(rows)


def _reference(mixer=0.4, cnn=0.1):
    return pd.DataFrame([{"model": m, "seed": s, "family": f, "js0_log": v + 0.01 * s}
                         for s in SEEDS for m, f, v in [("resnet18", "cnn", cnn), ("vgg16", "cnn", cnn / 2),
                                                         ("mlp-mixer", "mixer", mixer)]])


def _mixer_gaps(values=(0.2, 0.25, 0.3)):
    return pd.DataFrame({"model": "mlp-mixer", "seed": list(SEEDS), "relative_gap": list(values)})


GOOD = dict(js0=(0.1, 0.2, 0.3, 0.4), gap=(0.0, 0.1, 0.3, 0.6))


def test_a_clean_knob_reproduces_every_claim():
    long = _sweep(**GOOD)
    found = knob.knob_verdicts(long, _reference(), _mixer_gaps())
    assert all(v.holds for v in found.values()), {k: str(v) for k, v in found.items()}
    report = knob.knob_report(long, "c", _reference(), _mixer_gaps())
    assert "does **not**" not in report
    assert report.endswith("**reproduces** on the book's knob MLP.")
    assert "Best learning rates at an end of their grid: none." in report


def test_flat_heterogeneity_does_not_reproduce():
    long = _sweep(js0=(0.3, 0.3, 0.3, 0.3), gap=GOOD["gap"])
    found = knob.knob_verdicts(long)
    assert not found["js0_rises"].holds and found["gap_rises"].holds
    assert "JS⁰ at initialisation rises with c" in (report := knob.knob_report(long, "c"))
    assert "rises with c: Spearman" in report and "This does **not** reproduce." in report
    assert report.endswith("does **not** reproduce on the book's knob MLP beyond the seed spread.")


def test_a_gap_that_falls_with_c_does_not_reproduce():
    long = _sweep(js0=GOOD["js0"], gap=(0.6, 0.3, 0.1, 0.0))
    found = knob.knob_verdicts(long)
    assert not found["gap_rises"].holds and found["gap_rises"].numbers["correlation"]["rho"] < 0
    assert knob.knob_report(long, "c").endswith("does **not** reproduce on the book's knob MLP beyond the seed spread.")


def test_a_gap_at_c_1_does_not_vanish():
    long = _sweep(**GOOD, relative_at_1=(0.05, 0.3, 0.02))
    verdict = knob.vanishing_gap_verdict(long)
    assert not verdict.holds and "not below 0.1 in every seed" in str(verdict)
    assert verdict.numbers["gaps"] == [0.05, 0.3, 0.02]
    assert knob.vanishing_gap_verdict(long, threshold=0.5).holds
    with pytest.raises(ValueError, match="no c = 1"):
        knob.vanishing_gap_verdict(long[long.c > 1])
    single = knob.vanishing_gap_verdict(long[long.seed == 0])
    assert not single.holds and "single seed" in str(single)


def test_mixer_below_the_cnns_or_without_a_gap_does_not_reproduce():
    found = knob.mixer_verdicts(_reference(mixer=0.05, cnn=0.1), _mixer_gaps((0.1, -0.05, 0.0)))
    assert not found["mixer_js0"].holds and not found["mixer_gap"].holds
    report = knob.knob_report(_sweep(**GOOD), "c", _reference(mixer=0.05, cnn=0.1), _mixer_gaps((0.1, -0.05, 0.0)))
    assert report.count("This does **not** reproduce.") == 2
    with pytest.raises(ValueError, match="mlp-mixer"):
        knob.mixer_verdicts(_reference()[lambda d: d.model != "mlp-mixer"])


def test_adam_at_chance_is_named_and_the_post_hoc_check_is_labelled():
    long = _sweep(**GOOD)
    long.loc[long.c == 8.0, "adam"] = 2.5
    report = knob.knob_report(long, "c")
    assert "AdamW ends at or above the chance loss ln 10 = 2.30 nats at c = 8 (seed 0: 2.5)" in report
    assert "JS⁰ under the other variants (the same two tests): linear axis, shared max (paper's plot axis): " \
           "ρ = 0.00, does not rise beyond the margins." in report
    assert "Post hoc, over the c values where AdamW learned in every seed only" in report


def test_grid_edges_are_named():
    long = _sweep(**GOOD)
    long.loc[(long.c == 8.0) & (long.seed == 1), "sgd_edge"] = True
    assert knob.grid_edges(long) == ["c = 8, seed 1: sgd"]
    runs = {lr: SimpleNamespace(final_loss=loss) for lr, loss in [(0.1, 1.0), (0.3, 0.5), (1.0, 0.7)]}
    assert not knob.at_grid_edge(runs)
    runs[1.0] = SimpleNamespace(final_loss=0.1)
    assert knob.at_grid_edge(runs)


def test_summary_has_mean_and_sd_per_c():
    summary = knob.knob_summary(_sweep(**GOOD))
    assert list(summary.index) == list(C_VALUES)
    assert summary.loc[2.0, "js0_log_mean"] == pytest.approx(0.2)
    assert summary.loc[2.0, "js0_log_sd"] == pytest.approx(0.01)
    assert (summary.seeds == 3).all()


def test_the_training_cache_key_changes_with_c(tmp_path):
    settings = gap_settings(knob.MODEL, "smoke")
    built = build(knob.MODEL, "smoke", seed=0, c=1.0)
    batches = model_batches(built, 2, 8, seed=0)
    config = base_config(settings, "sgd", 0)
    store = open_cache(tmp_path)

    def key(c):
        make = functools.partial(fresh_model, knob.MODEL, "smoke", 0, {"c": c})
        return _train._built_and_stored(make, built.loss_fn, batches, config, store, {"options": {"c": c}})[1]

    assert key(1.0) == key(1.0)
    assert key(1.0) != key(4.0)
    # the model alone (its multipliers buffer) tells two c apart, even under one description
    make = [functools.partial(fresh_model, knob.MODEL, "smoke", 0, {"c": c}) for c in (1.0, 4.0)]
    keys = [_train._built_and_stored(m, built.loss_fn, batches, config, store, {"model": "x"})[1] for m in make]
    assert keys[0] != keys[1]


def test_the_reparametrized_knob_changes_only_the_parametrisation():
    """Same function at initialisation for every c; block l's Hessian is the plain MLP's times c**(2l)."""
    import torch

    from hesslab import HessianOperator, exact_block_eigenvalues

    plain, steep = (build(knob.MODEL, "smoke", seed=0, dtype=torch.float64, **knob.model_options(c, True))
                    for c in (1.0, 2.0))
    assert knob.model_options(2.0) == {"c": 2.0} and knob.model_options(2.0, True) == {"c": 2.0, "reparametrized": True}
    x = torch.randn(16, 64, dtype=torch.float64)
    assert torch.allclose(plain.model(x), steep.model(x), rtol=1e-12, atol=1e-14)
    data = [(x, torch.randint(0, 10, (16,)))]
    blocks = ["layers.0.bias", "layers.1.bias", "layers.2.bias"]
    eig = [exact_block_eigenvalues(HessianOperator(b.model, b.loss_fn, data), blocks) for b in (plain, steep)]
    for l, name in enumerate(blocks):
        np.testing.assert_allclose(eig[1][name], 4.0 ** l * eig[0][name], rtol=1e-9, atol=1e-12)


def test_a_cached_spectrum_is_never_served_for_another_c(tmp_path):
    first = het.blockwise_at_init(knob.MODEL, "smoke", cache=tmp_path, progress=False, device="cpu",
                                  options={"c": 1.0})
    steep = het.blockwise_at_init(knob.MODEL, "smoke", cache=tmp_path, progress=False, device="cpu",
                                  options={"c": 4.0})
    again = het.blockwise_at_init(knob.MODEL, "smoke", cache=tmp_path, progress=False, device="cpu",
                                  options={"c": 1.0})
    top = {name: s.lambda_max for name, s in first.items()}
    assert {name: s.lambda_max for name, s in again.items()} == top
    # c = 4 multiplies the last layer's output by 16: its curvature is far larger
    last = list(first)[-1]
    assert steep[last].lambda_max > 10 * first[last].lambda_max
    assert math.isfinite(het.js0_variants(steep)["log"])


def test_the_knob_grids_are_wide_enough_for_every_c():
    grids = gap_settings(knob.MODEL, "cpu")["lrs"]
    assert min(grids["sgd"]) <= 1e-7 and max(grids["sgd"]) >= 1.0
    assert min(grids["adamw"]) <= 1e-5 and max(grids["adamw"]) >= 0.1
    assert np.all(np.diff(np.log10(grids["sgd"])) <= 0.51)


def test_the_sweep_measures_every_c_and_reads_its_cache(tmp_path):
    long = knob.knob_sweep([1, 4], "smoke", seeds=[0], cache=tmp_path, progress=False, device="cpu")
    assert list(long.c) == [1.0, 4.0] and list(long.seed) == [0, 0]
    plain, steep = long.iloc[0], long.iloc[1]
    # c = 4 multiplies the logits by 16 (smoke: three layers): the initial loss is far above ln 10
    assert plain.initial == pytest.approx(math.log(10), abs=0.3) and steep.initial > 2 * plain.initial
    assert (long.adam < long.initial).all() and np.isfinite(long.relative_gap).all()
    assert set(long.columns) >= {f"js0_{v}" for v in het.JS_VARIANTS} | {"gap", "adam_edge", "sgd_edge"}
    again = knob.knob_sweep([1, 4], "smoke", seeds=[0], cache=tmp_path, progress=False, device="cpu")
    pd.testing.assert_frame_equal(again, long)
