"""Figure 6: the pretrained/from-scratch pair and the verdicts the chapter prints."""

import numpy as np
import pandas as pd
import pytest
import torch

from hesslab.experiments import finetuning as ft
from hesslab.experiments.batches import hessian_batches, model_batches
from hesslab.experiments.models import build, spec
from hesslab.experiments.profiles import profile

PRE, SCRATCH = ft.PAIRS["GPT-2"]


def _tables(js_pre, js_scratch, gap_pre, gap_scratch):
    """Constructed JS⁰ and gap tables, one value per seed and model (every JS⁰ variant the same)."""
    js, gap = [], []
    for model, js_values, gap_values in [(PRE, js_pre, gap_pre), (SCRATCH, js_scratch, gap_scratch)]:
        for seed, (j, g) in enumerate(zip(js_values, gap_values)):
            js.append({"model": model, "seed": seed, "family": "transformer",
                       **{f"js0_{v}": j for v in ("log", "linear", "lambda10", "density")}})
            gap.append({"model": model, "seed": seed, "family": "transformer", "gap": g, "relative_gap": g})
    return pd.DataFrame(js), pd.DataFrame(gap)


def test_report_reproduces_when_pretrained_is_lower_on_both_axes():
    js, gap = _tables([0.20, 0.21, 0.22], [0.30, 0.31, 0.33], [0.05, 0.06, 0.04], [0.40, 0.45, 0.42])
    found = ft.pretrained_verdicts(js, gap, PRE, SCRATCH)
    assert found["js0"].holds and found["gap"].holds and found["relative_gap"].holds
    report = ft.pretrained_report(js, gap, PRE, SCRATCH, profile="smoke")
    assert "does **not**" not in report and report.rstrip().endswith("**reproduces**.")
    assert "0.21 ± 0.01 vs 0.313" in report  # the pretrained and scratch means, computed
    assert "SGD is behind AdamW in every seed" in report


def test_report_does_not_reproduce_when_pretrained_is_more_heterogeneous():
    js, gap = _tables([0.40, 0.41, 0.42], [0.30, 0.31, 0.33], [0.05, 0.06, 0.04], [0.40, 0.45, 0.42])
    found = ft.pretrained_verdicts(js, gap, PRE, SCRATCH)
    assert not found["js0"].holds and found["gap"].holds
    report = ft.pretrained_report(js, gap, PRE, SCRATCH, profile="cpu")
    assert "(i) Pretraining lowers heterogeneity" in report and "This does **not** reproduce" in report
    assert report.rstrip().endswith("does **not** reproduce beyond the seed spread.")


def test_gap_within_the_seed_spread_or_undefined_is_not_established():
    js, gap = _tables([0.20, 0.21, 0.22], [0.30, 0.31, 0.33], [0.10, 0.50, 0.30], [0.40, 0.45, 0.20])
    found = ft.pretrained_verdicts(js, gap, PRE, SCRATCH)
    assert found["js0"].holds and not found["gap"].holds
    assert "not higher in every seed" in found["gap"].summary
    js, gap = _tables([0.20, 0.21, 0.22], [0.30, 0.31, 0.33], [0.05, np.nan, 0.04], [0.40, 0.45, 0.42])
    gap.loc[gap.model == PRE, "gap"] = [-0.1, -0.2, -0.1]  # SGD ahead of AdamW when fine-tuning
    found = ft.pretrained_verdicts(js, gap, PRE, SCRATCH)
    assert found["gap"].holds, "the nats decide: SGD ahead of AdamW after pretraining, behind from scratch"
    assert not found["relative_gap"].holds and found["relative_gap"].numbers == {"undefined_seeds": [1]}
    report = ft.pretrained_report(js, gap, PRE, SCRATCH, profile="smoke")
    assert "undefined in seed(s) [1]" in report and "SGD is **not** behind AdamW" in report
    assert report.rstrip().endswith("**reproduces**.")


def test_one_seed_is_not_established_and_missing_models_raise():
    js, gap = _tables([0.1], [0.5], [0.0], [0.5])
    found = ft.pretrained_verdicts(js, gap, PRE, SCRATCH)
    assert not found["js0"].holds and "single seed" in found["js0"].summary
    with pytest.raises(ValueError, match="no rows"):
        ft.pretrained_verdicts(js[js.model == PRE], gap, PRE, SCRATCH)
    with pytest.raises(ValueError, match="unknown JS⁰ variant"):
        ft.pretrained_verdicts(js, gap, PRE, SCRATCH, variant="cosine")


def test_the_pair_shares_architecture_data_and_initialisation_and_differs_in_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HESSLAB_CACHE", str(tmp_path))
    assert spec(PRE).text == spec(SCRATCH).text == "second-half"
    assert profile("cpu").models[PRE] == profile("cpu").models[SCRATCH]
    assert all(profile(p).training_by_model.get(PRE) == profile(p).training_by_model.get(SCRATCH)
               for p in ("smoke", "cpu", "paper"))
    pre, scratch, init = build(PRE, "smoke", seed=1), build(SCRATCH, "smoke", seed=1), build("gpt2", "smoke", seed=1)
    changes = ft.weight_changes(pre.model, scratch.model)
    zero_at_init = [n for n, p in scratch.model.named_parameters() if not p.detach().any()]
    assert zero_at_init and changes.relative_change[zero_at_init].isna().all(), "biases start at zero"
    assert (changes.relative_change.drop(zero_at_init) > 0).all(), "pretraining moved every other tensor"
    # from scratch is exactly the initialisation that pretraining started from
    assert ft.weight_changes(scratch.model, init.model).relative_change.drop(zero_at_init).eq(0).all()
    for a, b in [(model_batches(pre, 3, 4, seed=1), model_batches(scratch, 3, 4, seed=1)),
                 (hessian_batches(pre, profile("smoke").blockwise, seed=1),
                  hessian_batches(scratch, profile("smoke").blockwise, seed=1))]:
        assert all(torch.equal(x, y) and torch.equal(t, u) for (x, t), (y, u) in zip(a, b))
    with pytest.raises(ValueError, match="differ in architecture"):
        ft.weight_changes(pre.model, build("gpt2-nano", "smoke").model)


def test_pretrained_and_scratch_spectra_are_cached_apart(tmp_path, monkeypatch):
    from hesslab.experiments.heterogeneity import blockwise_at_init

    monkeypatch.setenv("HESSLAB_CACHE", str(tmp_path))
    spectra = {name: blockwise_at_init(name, "smoke", num_steps=3, num_probes=1, progress=False)
               for name in (PRE, SCRATCH)}
    assert len(list((tmp_path / "blockwise_slq").glob("*.npz"))) == 2
    assert list(spectra[PRE]) == list(spectra[SCRATCH])
    assert spectra[PRE]["transformer.h.0.attn.q"].lambda_max != spectra[SCRATCH]["transformer.h.0.attn.q"].lambda_max


def test_seed_bars_draw_the_mean_over_seeds_and_leave_out_undefined_values():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hesslab.book.plotting import plot_seed_bars

    _, gap = _tables([0.2, 0.2, 0.2], [0.3, 0.3, 0.3], [0.1, np.nan, 0.3], [0.4, 0.5, 0.6])
    fig, ax = plt.subplots()
    plot_seed_bars(ax, gap, "relative_gap", [PRE, SCRATCH], {PRE: "green", SCRATCH: "purple"})
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == pytest.approx([0.2, 0.5])
    from matplotlib.collections import PathCollection

    assert [len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)] == [2, 3]
    assert [t.get_text() for t in ax.get_xticklabels()] == [PRE, SCRATCH]
    plt.close(fig)
