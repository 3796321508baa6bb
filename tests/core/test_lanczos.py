"""Lanczos, SLQ, top eigenvalues and traces against exact eigen-decompositions."""

import numpy as np
import pytest
import torch

from cases import exact_hessian, tiny_cnn, tiny_gpt2
from hesslab import (HessianOperator, LanczosProcess, MatrixOperator, SpectralDensity, hutchinson_trace,
                     operator_noise, run_lanczos, slq, top_eigenvalues)


def matrix_with_spectrum(eigenvalues, seed=0):
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.as_tensor(eigenvalues, dtype=torch.float64)) @ q.T


def test_full_steps_give_exact_eigenvalues():
    ev = np.sort(np.random.default_rng(0).normal(size=60))
    density = slq(matrix_with_spectrum(ev), num_steps=60, num_probes=3, progress=False)
    for row in density.nodes:
        assert np.allclose(np.sort(row), ev, atol=1e-10), np.abs(np.sort(row) - ev).max()
    assert np.allclose(density.weights.sum(axis=1), 1.0)


def test_few_steps_quadrature_is_close_in_wasserstein1():
    """Bound tested: with m = 20 steps and 20 probes, W1 < 0.5% of the spectral range
    (measured about 0.17% here); it shrinks as m grows."""
    ev = np.concatenate([np.linspace(0.0, 1.0, 398), [5.0, 10.0]])
    A = matrix_with_spectrum(ev)
    w1 = {m: slq(A, num_steps=m, num_probes=20, progress=False).wasserstein1(ev) for m in (10, 20, 40)}
    assert w1[20] < 0.005 * (ev.max() - ev.min()), w1
    assert w1[40] < w1[10], w1


def test_reorthogonalisation_removes_ghost_eigenvalues():
    ev = np.concatenate([np.linspace(0.0, 1.0, 398), [5.0, 10.0]])
    A = matrix_with_spectrum(ev)
    v0 = torch.randn(1, 400, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    copies = {}
    for reo in (False, True):
        nodes, _ = run_lanczos(lambda q: q @ A, v0, 150, reorthogonalize=reo).ritz()
        copies[reo] = int((np.abs(nodes[0] - 10.0) < 1e-6).sum())
    assert copies[False] >= 3, f"expected ghost copies of λ=10 without reorthogonalisation: {copies}"
    assert copies[True] == 1, f"one Ritz value per eigenvalue with reorthogonalisation: {copies}"


def test_breakdown_truncates_and_is_recorded():
    ev = np.repeat([1.0, 2.0, 7.0], 20)  # 3 distinct eigenvalues: Krylov space of dimension 3
    A = matrix_with_spectrum(ev)
    result = run_lanczos(lambda q: q @ A, torch.randn(2, 60, dtype=torch.float64), 10)
    assert result.steps.tolist() == [3, 3] and result.breakdown.all()
    nodes, weights = result.ritz()
    assert np.allclose(nodes[:, :3], [[1, 2, 7]] * 2, atol=1e-10)
    assert np.isnan(nodes[:, 3:]).all() and (weights[:, 3:] == 0).all()
    assert np.allclose(weights.sum(axis=1), 1.0)


def test_float64_basis_on_float32_operator():
    ev = np.linspace(1, 2, 50)
    A = matrix_with_spectrum(ev).float()
    density = slq(MatrixOperator(A), num_steps=50, num_probes=2, progress=False)
    assert np.allclose(np.sort(density.nodes[0][~np.isnan(density.nodes[0])]), ev, atol=1e-5)


@pytest.mark.parametrize("make", [tiny_cnn, lambda: tiny_gpt2(n_embd=4, vocab=7)], ids=["cnn", "gpt2"])
def test_slq_on_hessian_finds_the_exact_eigenvalues(make):
    case = make()
    H = exact_hessian(case)
    ev = torch.linalg.eigvalsh(H).numpy()
    op = HessianOperator(case.model, case.loss_fn, case.data)
    density = slq(op, num_steps=op.dim, num_probes=2, progress=False)
    scale = np.abs(ev).max()
    for row in density.nodes:
        ritz = row[~np.isnan(row)]
        # every Ritz value is an eigenvalue; repeated eigenvalues appear once
        assert np.abs(ritz[:, None] - ev[None]).min(axis=1).max() < 1e-8 * scale
        assert np.abs(ev[:, None] - ritz[None]).min(axis=1).max() < 1e-8 * scale
    top = top_eigenvalues(op, k=3)
    assert top.converged and np.allclose(top.values, ev[::-1][:3], rtol=1e-8)


def test_trace_estimates_agree_with_exact_trace():
    ev = np.random.default_rng(3).uniform(0, 1, 300)
    A = matrix_with_spectrum(ev)
    est, se = hutchinson_trace(A, num_probes=200, seed=0)
    assert abs(est - ev.sum()) < 5 * se, (est, se, ev.sum())
    density = slq(A, num_steps=30, num_probes=30, progress=False)
    assert abs(density.trace() - ev.sum()) < 0.05 * ev.sum()


def test_density_integrates_to_one_and_normalisation():
    ev = np.random.default_rng(4).gamma(2.0, size=100)
    d = SpectralDensity.from_eigenvalues(ev)
    grid = d.grid(4000, pad=0.5)
    assert abs(np.trapezoid(d.density(grid, 0.05), grid) - 1) < 1e-3
    n10 = d.normalized(k=10)
    assert np.isclose(np.nanmax(n10.nodes) * n10.scale, ev.max())
    assert np.isclose(np.sort(ev)[-10] / n10.scale, 1.0)


def test_kth_largest_counts_distinct_eigenvalues_like_the_exact_k_th():
    ev = np.linspace(1, 100, 100)
    density = slq(matrix_with_spectrum(ev), num_steps=100, num_probes=10, progress=False)
    # the count is an estimate: n·τ of one probe on one eigenvalue is χ²₁, so the count of the
    # top 10 over 10 probes has standard deviation √(2·10/10) ≈ 1.4 eigenvalues; 3σ around λ_10 = 91
    assert 87.0 <= density.kth_largest(10) <= 95.0, density.kth_largest(10)
    assert SpectralDensity.from_eigenvalues(ev).kth_largest(10) == 91.0


def test_kth_largest_counts_repeated_eigenvalues_with_multiplicity():
    ev = np.concatenate([np.full(12, 5.0), np.linspace(0.0, 1.0, 188)])  # λ_1 = ... = λ_12 = 5
    assert SpectralDensity.from_eigenvalues(ev).kth_largest(10) == 5.0
    density = slq(matrix_with_spectrum(ev), num_steps=60, num_probes=20, progress=False)
    # per-probe Ritz values see 5 once; its Gauss weights carry the multiplicity (12 ± 1.1 here)
    assert density.kth_largest(10) == pytest.approx(5.0, rel=1e-10)
    assert density.kth_largest(20) < 1.0 + 1e-9  # 12 copies, not 20 (6.8σ)


def test_zero_weight_nodes_are_never_counted():
    nodes = np.array([[9.0, 3.0, 2.0, 1.0]])
    weights = np.array([[0.0, 0.5, 0.25, 0.25]])  # a node at 9 with no weight
    density = SpectralDensity(nodes, weights, dim=4)
    assert density.kth_largest(1) == 3.0 and density.kth_largest(3) == 2.0


def test_lanczos_weights_are_squared_components_of_the_start_vector_on_eigenvectors():
    ev = np.sort(np.random.default_rng(5).normal(size=30))
    A = matrix_with_spectrum(ev, seed=2)
    v = torch.randn(30, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    v = v / v.norm()
    nodes, weights = run_lanczos(lambda q: q @ A, v[None], 30).ritz()
    _, X = torch.linalg.eigh(A)
    assert np.allclose(nodes[0], ev, atol=1e-10)
    assert np.allclose(weights[0], (v @ X).square().numpy(), atol=1e-10)
    # with m < n steps: a Gauss rule, exact for the moments v^T A^j v, j < 2m
    m = 6
    nodes, weights = run_lanczos(lambda q: q @ A, v[None], m).ritz()
    for j in range(2 * m):
        exact = float(v @ torch.linalg.matrix_power(A, j) @ v)
        assert np.sum(weights[0] * nodes[0] ** j) == pytest.approx(exact, rel=1e-9, abs=1e-9)


def _linear_regression(dtype, classes=11, inputs=3, seed=0):
    """A zero-initialised linear head under squared loss: H = I_classes ⊗ Σ / classes, each eigenvalue repeated."""
    from hesslab.experiments.tiny_problems import Problem

    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(inputs, classes, bias=False).to(dtype)
    torch.nn.init.zeros_(model.weight)
    x = torch.randn(40, inputs, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    data = [(x.to(dtype), torch.randn(40, classes, generator=g, dtype=torch.float64).to(dtype))]
    return Problem("linear", model, torch.nn.functional.mse_loss, data)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_breakdown_is_detected_relative_to_the_operators_round_off(dtype):
    problem = _linear_regression(dtype)
    op = HessianOperator(problem.model, problem.loss_fn, problem.data)
    exact = np.unique(np.round(np.linalg.eigvalsh(exact_hessian(_linear_regression(torch.float64)).numpy()), 12))
    assert exact.size == 3  # three distinct eigenvalues, 11-fold each
    density = slq(op, num_steps=30, num_probes=4, seed=7, progress=False)
    assert density.info["steps"] == [3] * 4, density.info["steps"]  # the Krylov space has dimension 3
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for row, weights in zip(density.nodes, density.weights):
        assert np.allclose(row[:3], exact, rtol=tol)
        assert (weights[:3] > 1e-3).all() and (weights[3:] == 0).all()  # no node of (numerically) zero weight


class _Cancelling:
    """A float32 operator computed as (A + cI)v − cv: its round-off is about c·eps32, far above eps32·‖A‖.

    Double backward through a network cancels large terms in the same way.
    """

    def __init__(self, A, c):
        self.shifted, self.c = (A + c * torch.eye(A.shape[0], dtype=A.dtype)).float(), c
        self.dim, self.dtype, self.device = A.shape[0], torch.float32, A.device

    def matvec(self, v):
        return v @ self.shifted.T - self.c * v


def test_breakdown_is_detected_under_large_float32_round_off():
    A = matrix_with_spectrum(np.repeat([1.0, 2.0, 7.0], 20))  # 3 distinct eigenvalues
    op = _Cancelling(A, c=1e4)
    noise = operator_noise(op)
    assert noise > 1e-4 * 7.0, noise  # β/scale at breakdown is ~1e-4, far above float32's 1e-6 tolerance
    density = slq(op, num_steps=30, num_probes=3, seed=1, progress=False)
    assert density.info["steps"] == [3, 3, 3], density.info["steps"]
    assert np.allclose(density.nodes[:, :3], [[1.0, 2.0, 7.0]] * 3, atol=20 * noise)
    assert (density.weights[:, :3] > 0.05).all()


def test_operator_noise_measures_the_round_off():
    A = matrix_with_spectrum(np.linspace(1.0, 2.0, 200))
    noise64 = operator_noise(MatrixOperator(A))
    noise32 = operator_noise(MatrixOperator(A.float()))
    assert noise64 < 1e-13 and 1e-8 < noise32 < 1e-5, (noise64, noise32)


def test_top_eigenvalues_count_multiplicity_on_a_hessian():
    problem = _linear_regression(torch.float64)
    ev = np.sort(np.linalg.eigvalsh(exact_hessian(problem).numpy()))[::-1]
    op = HessianOperator(problem.model, problem.loss_fn, problem.data)
    top = top_eigenvalues(op, k=12)
    assert top.converged and np.all(top.residuals <= top.tolerance)
    assert np.allclose(top.values, ev[:12], rtol=1e-9), (top.values, ev[:12])  # 11 copies, then the next one
    # single-vector Lanczos sees λ_1 once: its 10th largest Ritz value is the wrong eigenvalue
    nodes = slq(op, num_steps=op.dim, num_probes=1, progress=False).nodes[0]
    assert np.sort(nodes[~np.isnan(nodes)])[::-1].size == 3


@pytest.mark.parametrize("name, ev", [
    ("repeated top", np.concatenate([np.full(12, 5.0), np.linspace(0.0, 1.0, 88)])),
    ("zero block", np.concatenate([np.zeros(60), np.linspace(1.0, 3.0, 40)])),
    ("all zero", np.zeros(50)),
    ("nearly singular", np.concatenate([np.full(15, 1e-9), np.full(5, 1e-3), -np.linspace(0, 1, 30)])),
    ("clustered", np.concatenate([1.0 + 1e-7 * np.arange(10), np.linspace(0.0, 0.9, 90)])),
])
def test_top_eigenvalues_with_multiplicity_on_hard_spectra(name, ev):
    A = matrix_with_spectrum(ev, seed=4)
    exact = np.sort(ev)[::-1]
    top = top_eigenvalues(A, k=10)
    assert top.converged, name
    scale = max(np.abs(ev).max(), 1e-300)
    # Weyl: every value within its residual of an eigenvalue; here the exact top-10
    assert np.all(np.abs(top.values - exact[:10]) <= np.maximum(top.residuals, 0) + 1e-12 * scale), \
        (name, top.values, exact[:10])
    assert np.all(top.residuals <= top.tolerance)
    V = top.vectors
    assert torch.allclose(V @ V.T, torch.eye(10, dtype=V.dtype), atol=1e-10)


def test_top_eigenvalues_with_a_smaller_block_than_k():
    ev = np.linspace(0.0, 10.0, 120)  # distinct eigenvalues: one start vector suffices
    top = top_eigenvalues(matrix_with_spectrum(ev), k=6, block_size=2, tol=1e-7)
    assert top.converged and len(top.residuals) == 6
    assert np.all(np.abs(top.values - np.sort(ev)[::-1][:6]) <= top.residuals + 1e-12)


def test_top_eigenvalues_report_non_convergence():
    A = matrix_with_spectrum(np.linspace(0.0, 1.0, 400))  # no gap: slow
    with pytest.warns(RuntimeWarning, match="did not converge"):
        top = top_eigenvalues(A, k=5, max_matvecs=20)
    assert not top.converged and top.matvecs >= 20
    assert np.all(top.values <= 1.0 + 1e-12)  # Ritz values err low (interlacing)


def test_top_eigenvalues_input_errors():
    A = matrix_with_spectrum(np.linspace(0, 1, 10))
    with pytest.raises(ValueError, match="k must be"):
        top_eigenvalues(A, k=11)
    with pytest.raises(ValueError, match="max_basis"):
        top_eigenvalues(A, k=3, max_basis=4)


def test_lanczos_process_validates_input():
    with pytest.raises(ValueError, match="zero"):
        LanczosProcess(torch.zeros(1, 4, dtype=torch.float64), 3)
    with pytest.raises(ValueError, match=r"\[k, n\]"):
        LanczosProcess(torch.ones(4, dtype=torch.float64), 3)
