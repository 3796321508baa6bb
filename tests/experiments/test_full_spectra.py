"""hesslab.experiments.full_spectra: full-Hessian spectra on the gap study's checkpoints."""

import numpy as np
import pytest
import torch

from hesslab import HessianOperator, SpectralDensity, slq, top_eigenvalues
from hesslab.experiments import full_spectra as fs
from hesslab.experiments.gap import STAGES, gap_study
from hesslab.experiments.batches import hessian_batches
from hesslab.experiments.profiles import profile
from hesslab.experiments.models import build
from hesslab.experiments.tiny_problems import exact_hessian, tiny_cnn, tiny_gpt2


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
    smoke = profile("smoke")
    data = hessian_batches(built, smoke.full_spectra)
    for (x, y), (x2, y2) in zip(data, hessian_batches(built, smoke.blockwise)):  # the blockwise chapters' data
        assert torch.equal(x, x2) and torch.equal(y, y2)
    op = HessianOperator(built.model, built.loss_fn, data, batchnorm=fs.BATCHNORM)
    again = slq(op, num_steps=smoke.full_spectra.num_steps, num_probes=smoke.full_spectra.num_probes, seed=0)
    np.testing.assert_allclose(again.nodes, spectra[1.0].nodes, rtol=1e-6, atol=1e-9)
    top = top_eigenvalues(op, fs.NORMALIZE_K)
    bound = spectra[1.0].info["top_residuals"]  # Weyl: each value within its residual of the eigenvalue
    assert np.all(np.abs(np.array(spectra[1.0].info["top_eigenvalues"]) - top.values) <= np.array(bound) + 1e-6 * top.values[0])
    assert spectra[1.0].info["top_converged"]
    one = fs.full_spectrum("gpt2-nano", "smoke", 0.5, cache=tmp_path, progress=False)
    np.testing.assert_allclose(one.nodes, spectra[0.5].nodes)
    np.testing.assert_allclose(one.info["top_eigenvalues"], spectra[0.5].info["top_eigenvalues"])


@pytest.mark.parametrize("make", [tiny_cnn, lambda: tiny_gpt2(n_embd=4, n_head=1, vocab=7)], ids=["cnn-batchnorm", "gpt2"])
def test_full_spectrum_with_all_lanczos_steps_is_the_exact_spectrum(make):
    """SLQ of the full Hessian with as many steps as parameters finds every eigenvalue (float64)."""
    problem = make()
    problem.batchnorm = fs.BATCHNORM
    exact = np.linalg.eigvalsh(exact_hessian(problem).numpy())
    op = HessianOperator(problem.model, problem.loss_fn, problem.data, batchnorm=fs.BATCHNORM)
    spectrum = slq(op, num_steps=op.dim, num_probes=2, seed=0, progress=False)
    scale = np.abs(exact).max()
    for row in spectrum.nodes:
        row = np.sort(row[~np.isnan(row)])
        # every Ritz value is an eigenvalue, and the extreme ones are found
        assert np.abs(row[:, None] - exact[None]).min(axis=1).max() < 1e-8 * scale
        assert row[-1] == pytest.approx(exact[-1], rel=1e-9) and row[0] == pytest.approx(exact[0], rel=1e-9)
    # lambda_10 with multiplicity, the normalisation of Figure 1
    top = top_eigenvalues(op, fs.NORMALIZE_K)
    assert top.converged and top.values == pytest.approx(exact[::-1][: fs.NORMALIZE_K], rel=1e-8)
    spectrum.info["top_eigenvalues"] = top.values.tolist()
    assert fs.normalized_by_lambda10(spectrum).lambda_max == pytest.approx(exact[-1] / exact[-10], rel=1e-8)


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


def _cross(cross_level, within_level, noise=0.01, seeds=3):
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = [{"seed": s, "kind": kind, "pair": f"{kind}{i}", "stage": stage, "js": level + noise * rng.standard_normal()}
            for s in range(seeds) for kind, level in [("cross", cross_level), ("within", within_level)]
            for i in range(2) for stage in (0.0, 1.0)]
    return pd.DataFrame(rows)


def test_figure1_verdicts_reject_full_spectra_that_carry_the_family():
    import pandas as pd

    from hesslab.experiments.full_spectra import figure1_verdicts

    blockwise = pd.Series([0.3, 0.3, 0.3])
    alike = figure1_verdicts(_cross(0.05, 0.05), blockwise)
    assert alike["alike"].holds and alike["blocks_differ_more"].holds
    # CNN-vs-Transformer pairs far apart, same-family pairs close: the family shows
    carries = figure1_verdicts(_cross(0.2, 0.05), blockwise)
    assert not carries["alike"].holds
    # full spectra differ more than a Transformer's blocks do
    assert not figure1_verdicts(_cross(0.5, 0.5), blockwise)["blocks_differ_more"].holds


def test_spike_share_counts_mass_near_zero():
    from hesslab import SpectralDensity
    from hesslab.experiments.full_spectra import spike_share

    s = SpectralDensity.from_eigenvalues(np.array([0.0, 0.05, -0.05, 1.0]))
    assert spike_share(s) == pytest.approx(0.75) and spike_share(s, width=0.01) == pytest.approx(0.25)
