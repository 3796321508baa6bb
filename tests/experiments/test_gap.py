"""hesslab.experiments.gap: AdamW vs SGD grid searches and the gap."""

import math

import pytest
import torch

from hesslab.experiments.gap import STAGES, gap_settings, gap_study
from hesslab.experiments.models import build


@pytest.mark.parametrize("name", ["vgg16", "gpt2-nano"])
def test_gap_study_keeps_the_best_run_of_each_grid(name, tmp_path):
    study = gap_study(name, "smoke", cache=tmp_path, progress=False, device="cpu")
    settings = gap_settings(name, "smoke")
    for optimizer, best in (("adamw", study.adam), ("sgd", study.sgd)):
        runs = study.runs[optimizer]
        assert sorted(runs) == sorted(settings["lrs"][optimizer])
        assert best.final_loss == min(r.final_loss for r in runs.values())
        assert all(len(r.losses) == settings["steps"] for r in runs.values())
    assert study.gap == pytest.approx(study.sgd.final_loss - study.adam.final_loss)
    assert math.isfinite(study.gap)
    # checkpoints at every stage; stage 0 is the freshly built model
    assert list(study.adam.states) == list(STAGES)
    fresh = build(name, "smoke").model.state_dict()
    assert all(torch.equal(fresh[k], study.sgd.states[0.0][k]) for k in fresh)
    # the cache returns the same runs
    again = gap_study(name, "smoke", cache=tmp_path, progress=False, device="cpu")
    assert (again.adam.losses == study.adam.losses).all() and again.adam.config == study.adam.config


def test_settings_per_kind_and_errors():
    text, vision = gap_settings("gpt2-nano", "cpu"), gap_settings("resnet18", "cpu")
    assert text["steps"] > vision["steps"] and text["clip"] == 1.0 and vision["clip"] is None
    assert gap_settings("gpt2", "cpu")["steps"] == 500
    assert gap_settings("gpt2", "paper")["size"] == "paper"
    with pytest.raises(ValueError, match="unknown profile"):
        gap_settings("gpt2", "laptop")
    with pytest.raises(ValueError, match="unknown model"):
        gap_settings("gpt5", "cpu")


def _gap_table(levels, adam=1.0, initial=3.0, noise=0.01, seeds=3):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for (model, family), level in zip([("resnet18", "cnn"), ("vgg16", "cnn"), ("mlp-mixer", "mixer"),
                                       ("bert", "transformer"), ("gpt2", "transformer")], levels):
        for seed in range(seeds):
            rel = level + noise * rng.standard_normal()
            rows.append({"model": model, "seed": seed, "family": family, "initial": initial, "adam": adam,
                         "sgd": adam + rel * (initial - adam), "relative_gap": rel})
    return pd.DataFrame(rows)


def test_gap_report_says_does_not_reproduce_when_sgd_lags_on_cnns_instead():
    from hesslab.experiments.gap import gap_report

    good = gap_report(_gap_table([0.0, 0.01, 0.3, 0.4, 0.5]), "c")
    assert good.count("This reproduces the paper") == 2
    bad = gap_report(_gap_table([0.5, 0.4, 0.0, 0.01, 0.02]), "c")
    assert bad.count("does **not** reproduce") == 2
    noisy = gap_report(_gap_table([0.0, 0.1, 0.15, 0.2, 0.3], noise=0.2), "c")
    assert "This reproduces" not in noisy


def test_gap_report_names_models_whose_training_set_both_optimisers_fit():
    from hesslab.experiments.gap import gap_report

    report = gap_report(_gap_table([0.0, 0.0, 0.0, 0.4, 0.5], adam=0.01, initial=3.0), "c")
    fitted = report.split("on ")[-1]
    assert "Both optimisers fit the training set" in report
    assert all(m in fitted for m in ("resnet18", "vgg16", "mlp-mixer")) and "bert" not in fitted


def test_relative_gap_is_the_share_of_adams_progress():
    from hesslab.experiments.gap import relative_gap

    assert relative_gap(3.0, 1.0, 1.0) == 0 and relative_gap(3.0, 1.0, 3.0) == 1 and relative_gap(3.0, 1.0, 2.0) == 0.5
    with pytest.raises(ValueError, match="did not lower"):
        relative_gap(1.0, 1.5, 2.0)
