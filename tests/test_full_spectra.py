"""hesslab.full_spectra: full-Hessian spectra on the gap study's checkpoints."""

import numpy as np
import pytest
import torch

from hesslab import HessianOperator, SpectralDensity, slq
from hesslab import full_spectra as fs
from hesslab.gap import STAGES, gap_study
from hesslab.heterogeneity import hessian_data
from hesslab.models import build


def test_stage_zero_is_the_initial_model_and_spectra_follow_training(tmp_path):
    study = gap_study("gpt2-nano", "smoke", cache=tmp_path, progress=False)
    fresh = build("gpt2-nano", "smoke").model.state_dict()
    assert all(torch.equal(fresh[k], study.adam.states[0.0][k]) for k in fresh)
    spectra = fs.spectra_over_training("gpt2-nano", "smoke", cache=tmp_path, progress=False)
    assert list(spectra) == list(STAGES)
    assert spectra[0.0].lambda_max != spectra[1.0].lambda_max
    # the stage-1.0 spectrum is the SLQ of the final model's Hessian on the same data
    built = build("gpt2-nano", "smoke")
    built.model.load_state_dict(study.adam.states[1.0])
    op = HessianOperator(built.model, built.loss_fn, hessian_data(built, "smoke"), batchnorm="train")
    steps, probes = fs.FULL_SETTINGS["smoke"]
    again = slq(op, num_steps=steps, num_probes=probes, seed=0)
    np.testing.assert_allclose(again.nodes, spectra[1.0].nodes, rtol=1e-6, atol=1e-9)


def test_normalisation_by_lambda10_and_its_fallback():
    spectrum = SpectralDensity.from_eigenvalues(np.arange(1, 21, dtype=float))
    assert fs.normalized_by_lambda10(spectrum).lambda_max == pytest.approx(20 / 11)
    negative = SpectralDensity.from_eigenvalues(np.r_[np.full(15, -1.0), [1.0, 2.0]])
    out = fs.normalized_by_lambda10(negative)
    assert out.lambda_max == pytest.approx(1.0) and "lambda_max" in out.info["normalized_by"]


def test_cross_family_js_is_zero_for_identical_spectra_and_stages_are_checked():
    s = SpectralDensity.from_eigenvalues(np.linspace(0.1, 3, 30))
    spectra = {"a": {0.0: s}, "b": {0.0: s}}
    assert fs.cross_family_js(spectra, "a", "b")[0.0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="not kept"):
        fs.spectra_over_training("gpt2-nano", "smoke", stages=(0.25,))
