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
