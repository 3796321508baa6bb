"""The checks the methods chapter shows, asserted."""

import numpy as np
import torch

from hesslab import HessianOperator
from hesslab.experiments.methods import ghost_ritz_values, hvp_errors, slq_convergence, summed_vs_mean_spectra
from hesslab.experiments.tiny_problems import tiny_mlp, tiny_problems


def test_hvp_errors_of_every_method_are_at_rounding_level():
    table = hvp_errors(tiny_problems(), num_vectors=2)
    worst = table.drop(columns="dim").to_numpy().max()
    assert worst < 1e-10, table


def test_summing_micro_batches_scales_the_spectrum_by_their_number():
    problem = tiny_mlp()
    spectra = summed_vs_mean_spectra(problem, num_steps=10, num_probes=2)
    mean, summed = spectra.values()
    # the paper's code: the sum of per-batch Hessian-vector products, computed independently here
    per_batch = [HessianOperator(problem.model, problem.loss_fn, [b]) for b in problem.data]
    v = torch.randn(per_batch[0].dim, dtype=torch.float64)
    total = sum(op @ v for op in per_batch)
    whole = HessianOperator(problem.model, problem.loss_fn, problem.data) @ v
    assert torch.allclose(total, len(problem.data) * whole, rtol=1e-10)
    # the spectra are measured separately (same probes): every Ritz value scales by the number of batches
    count = len(problem.data)
    assert np.allclose(summed.nodes, count * mean.nodes, rtol=1e-8, equal_nan=True)
    assert np.allclose(summed.weights, mean.weights, atol=1e-10)


def test_slq_converges_and_ghosts_disappear():
    ev = np.concatenate([np.linspace(0, 1, 198), [4.0, 9.0]])
    table = slq_convergence(ev, steps=(5, 40), num_probes=5)
    assert table["W1"].iloc[1] < table["W1"].iloc[0]
    ritz = ghost_ritz_values(ev, 120)
    assert (np.abs(ritz["without"] - 9.0) < 1e-6).sum() >= 2
    assert (np.abs(ritz["with reorthogonalisation"] - 9.0) < 1e-6).sum() == 1
