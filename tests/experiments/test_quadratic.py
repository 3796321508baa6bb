"""Quadratic Cases 1–4 (Figures 8–9): construction, optimisers against exact answers, the claim."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hesslab.experiments import quadratic as q


def small_problem(seed=0, kappa=50.0):
    ev = q.scale_to_condition_number(np.random.default_rng(seed).uniform(1, 9, (3, 6)), kappa)
    return q.block_quadratic(ev, seed=seed)


@pytest.mark.parametrize("case", [1, 2, 3, 4])
@pytest.mark.parametrize("kappa", [5000.0, 37.5])
def test_constructed_hessian_has_requested_spectrum_and_condition_number(case, kappa):
    problem = q.make_case(case, block_size=20, kappa=kappa)
    dense = problem.hessian()
    assert np.allclose(dense, dense.T, rtol=0, atol=0)
    eig = np.linalg.eigvalsh(dense)
    expected = np.sort(problem.eigenvalues.ravel())
    err = np.max(np.abs(eig - expected) / expected)
    assert err < 1e-8, f"case {case}: eigenvalues of the built H differ from the requested ones by {err:.2e} (rel)"
    built_kappa = eig[-1] / eig[0]
    assert abs(built_kappa / kappa - 1) < 1e-8, f"case {case}: κ(H) = {built_kappa!r}, requested {kappa}"
    for l in range(problem.num_blocks):
        block = dense[l * 20:(l + 1) * 20, l * 20:(l + 1) * 20]
        block_err = np.max(np.abs(np.linalg.eigvalsh(block) / problem.eigenvalues[l] - 1))
        assert block_err < 1e-8, f"case {case} block {l}: spectrum off by {block_err:.2e}"


def test_cases_differ_in_block_heterogeneity():
    kappas = {c: q.make_case(c, block_size=20).block_kappas for c in q.CASES}
    for het, hom in [(1, 2), (3, 4)]:
        assert kappas[het].max() < 50 < 500 < kappas[hom].min(), (
            f"max block κ in Case {het}: {kappas[het].max():.1f}; min block κ in Case {hom}: {kappas[hom].min():.1f}")


def test_heterogeneity_endpoints_are_the_cases_and_interior_interpolates():
    for family, (het, hom) in {"model": (1, 2), "synthetic": (3, 4)}.items():
        for t, case in [(1.0, het), (0.0, hom)]:
            _, ev = q.case_spectra(family, t, block_size=16)
            assert np.allclose(ev, q.make_case(case, block_size=16).eigenvalues, rtol=1e-12)
        _, mid = q.case_spectra(family, 0.5, block_size=16)
        assert mid.min() == 1.0 and mid.max() == q.PAPER_KAPPA
        kl = mid.max(1) / mid.min(1)
        assert q.make_case(het, block_size=16).block_kappas.max() < kl.max() < q.PAPER_KAPPA


def test_standin_spectra_file_is_reproduced_by_its_generator():
    payload = json.loads(q.SPECTRA_FILE.read_text())
    assert payload["provenance"]["kind"] == "stand-in"
    assert payload["provenance"]["generator"] == "hesslab.experiments.quadratic.write_spectra_file(size=500, seed=0)"
    regenerated = q.standin_block_spectra(size=500, seed=0)
    for family, blocks in regenerated.items():
        for name, ev in blocks.items():
            assert np.allclose(payload["families"][family][name], ev, rtol=1e-15, atol=0), (family, name)


def test_missing_spectra_file_falls_back_to_the_same_standins(monkeypatch, tmp_path):
    shipped = q.model_block_spectra("gpt2-like", block_size=16)[1]
    monkeypatch.setattr(q, "SPECTRA_FILE", tmp_path / "absent.json")
    provenance, _ = q.load_block_spectra()
    assert provenance["kind"] == "stand-in"
    assert np.allclose(q.model_block_spectra("gpt2-like", block_size=16)[1], shipped, rtol=1e-14)


def test_gd_matches_closed_form_error_recursion():
    problem = small_problem()
    H, w_star = problem.hessian(), problem.solution()
    eta, k = 1.5 / problem.eigenvalues.max(), 40
    run = q.gd(problem, eta, method="iterate", tol=1e-15, max_iter=k)
    assert run.iterations is None and run.grad_norms.size == k + 1
    expected = w_star + np.linalg.matrix_power(np.eye(problem.dim) - eta * H, k) @ (problem.w0 - w_star)
    err = np.max(np.abs(run.w - expected))
    assert err < 1e-10, f"w_k − w* differs from (I − ηH)^k (w_0 − w*) by {err:.2e}"
    closed = q.gd(problem, eta, method="closed", tol=1e-15, max_iter=k)
    rel = np.max(np.abs(closed.grad_norms / run.grad_norms - 1))
    assert rel < 1e-9, f"closed-form and iterated ‖g_t‖ differ by {rel:.2e} (rel)"


def test_gd_rate_is_kappa_minus_one_over_kappa_plus_one():
    problem = q.make_case(4, block_size=10, kappa=200.0)
    run = q.gd(problem, "optimal", tol=1e-12, max_iter=20000)
    g = run.grad_norms
    rate = (g[-1] / g[-501]) ** (1 / 500)
    expected = (200 - 1) / (200 + 1)
    assert abs(rate - expected) < 1e-5, f"empirical GD rate {rate:.6f}, theory (κ−1)/(κ+1) = {expected:.6f}"
    assert run.iterations <= q.theory_bounds(problem, tol=1e-12)["gd"]


def test_blockwise_gd_closed_form_equals_iterated_block_steps():
    problem = small_problem(seed=3)
    diag = np.repeat(1.0 / problem.eigenvalues.max(axis=1), problem.block_size)
    iterated = q.preconditioned_gd(problem, diag, 1.0, tol=1e-9, max_iter=2000)
    closed = q.blockwise_gd(problem, tol=1e-9, max_iter=2000)
    # Round-off of the iterated run: each step adds about eps·‖H‖‖w‖ to the iterate and
    # the contraction (‖I − DH‖ ≤ 1) does not amplify it, so after t steps the gradients
    # differ by at most ~ t·eps·κ·‖g_0‖ (a factor 10 for the constants), whatever the BLAS.
    t = max(closed.iterations, iterated.iterations)
    kappa = problem.eigenvalues.max() / problem.eigenvalues.min()
    bound = 10 * t * np.finfo(float).eps * kappa * closed.grad_norms[0]
    n = min(len(iterated.grad_norms), len(closed.grad_norms))
    assert np.abs(iterated.grad_norms[:n] - closed.grad_norms[:n]).max() <= bound
    # the stopping test can flip by one step only if ‖g‖ sits within that round-off of the threshold
    threshold = 1e-9 * closed.grad_norms[0]
    near = np.abs(closed.grad_norms[closed.iterations - 1:closed.iterations + 1] - threshold).min() <= bound
    assert iterated.iterations == closed.iterations or (near and abs(iterated.iterations - closed.iterations) == 1)
    assert closed.iterations <= q.theory_bounds(problem, tol=1e-9)["blockwise"]


def test_same_seed_gives_the_same_run_and_another_seed_another():
    runs = [q.adam(q.make_case(1, block_size=12, seed=s), [0.01, 0.1], max_iter=300) for s in (5, 5, 6)]
    assert np.array_equal(runs[0].grad_norms, runs[1].grad_norms)
    assert runs[0].lr == runs[1].lr and runs[0].iterations == runs[1].iterations
    assert not np.array_equal(runs[0].grad_norms[:50], runs[2].grad_norms[:50])


def test_adam_beta1_0_beta2_1_without_bias_correction_is_preconditioned_gd():
    problem = small_problem(seed=1)
    g0 = problem.grad(problem.w0)
    a = q.adam(problem, 0.02, beta1=0.0, beta2=1.0, bias_correction=False, eps=0.0, tol=1e-12, max_iter=200)
    p = q.preconditioned_gd(problem, 1.0 / np.abs(g0), 0.02, tol=1e-12, max_iter=200)
    err = np.max(np.abs(a.grad_norms / p.grad_norms - 1))
    assert err < 1e-12 and np.allclose(a.w, p.w, rtol=1e-12, atol=1e-14), f"histories differ by {err:.2e}"


def _torch_run(problem, make_opt, steps):
    w = torch.tensor(problem.w0, dtype=torch.float64, requires_grad=True)
    H = torch.tensor(problem.hessian())
    b = torch.tensor(problem.b)
    opt = make_opt([w])
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * w @ H @ w - b @ w).backward()
        opt.step()
    return w.detach().numpy()


def test_adam_equals_torch_adam_and_heavy_ball_equals_torch_sgd_momentum():
    problem, steps = small_problem(seed=2), 30
    ours = q.adam(problem, 0.05, tol=1e-15, max_iter=steps)
    ref = _torch_run(problem, lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.9, 0.999), eps=1e-8), steps)
    assert np.allclose(ours.w, ref, rtol=1e-12, atol=1e-12), np.max(np.abs(ours.w - ref))
    eta = 0.5 / problem.eigenvalues.max()
    ours = q.heavy_ball(problem, eta, momentum=0.9, tol=1e-15, max_iter=steps)
    ref = _torch_run(problem, lambda p: torch.optim.SGD(p, lr=eta, momentum=0.9), steps)
    assert np.allclose(ours.w, ref, rtol=1e-12, atol=1e-12), np.max(np.abs(ours.w - ref))


def test_learning_rate_search_keeps_the_fastest_rate():
    problem = q.make_case(3, block_size=12)
    grid = [0.01, 0.1, 0.3]
    best = q.adam(problem, grid, max_iter=5000)
    singles = {lr: q.adam(problem, lr, max_iter=5000).iterations for lr in grid}
    fastest = min((it, lr) for lr, it in singles.items() if it is not None)
    assert (best.iterations, best.lr) == fastest, (best.iterations, best.lr, singles)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="kappa"):
        q.make_case(1, kappa=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        q.make_problem("synthetic", 1.5)
    with pytest.raises(ValueError, match="positive"):
        q.block_quadratic(-np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\[L, d\]"):
        q.block_quadratic(np.ones(5))
    with pytest.raises(ValueError, match="case must be"):
        q.make_case(5)
    problem = small_problem()
    with pytest.raises(ValueError, match="w must be"):
        problem.grad(np.ones(problem.dim + 1))
    with pytest.raises(ValueError, match="tol"):
        q.gd(problem, tol=2.0)
    with pytest.raises(ValueError, match="learning rates"):
        q.adam(problem, [0.1, -1.0])
    with pytest.raises(ValueError, match="bias"):
        q.adam(problem, 0.1, beta2=1.0)


def test_measured_claim_heterogeneous_cases_favour_adam():
    """GD ≫ Adam in Cases 1 and 3; in Cases 2 and 4 Adam's edge is momentum only."""
    ratios = {}
    for case in q.CASES:
        runs = q.compare(q.make_case(case, block_size=25), max_iter=60_000,
                         methods=("GD", "GD + momentum", "Adam", "blockwise GD"))
        assert all(r.converged for r in runs.values()), {k: r.iterations for k, r in runs.items()}
        ratios[case] = {k: v[0] for k, v in q.measured_ratios(runs).items()}
    msg = f"measured iteration ratios per case: {ratios}"
    for het, hom in [(1, 2), (3, 4)]:
        assert ratios[het]["GD/Adam"] > 30, msg
        assert ratios[het]["GD/Adam"] > 2.5 * ratios[hom]["GD/Adam"], msg
        assert ratios[het]["GD+momentum/Adam"] > 1.8, msg
        assert ratios[hom]["GD+momentum/Adam"] < 1.0, msg
        assert ratios[het]["GD/blockwise GD"] > 50, msg
        assert ratios[hom]["GD/blockwise GD"] < 1.5, msg


@pytest.mark.parametrize("family", ["model", "synthetic"])
def test_slider_view_runs_at_the_slider_extremes(family):
    for kappa, t, beta2 in [(10.0, 0.0, 0.9), (1e5, 1.0, 1.0)]:
        view = q.interactive_runs(kappa, t, beta2, 0.1, family=family, block_size=8, max_iter=200)
        assert set(view) == {"GD", "blockwise GD", "Adam"}
        assert all(np.isfinite(r.grad_norms[0]) and r.grad_norms.size >= 2 for r in view.values())
