"""Memory-bounded Lanczos: plans, chunking that never changes the answer, the float32 fallback."""

import numpy as np
import pytest
import torch

from cases import exact_hessian, tiny_mlp
from hesslab import HessianOperator, MatrixOperator, blockwise_slq, hutchinson_trace, slq, top_eigenvalues
from hesslab.blocks import resolve_blocks
from hesslab.memory import BasisMemoryError, lanczos_bytes, plan_basis
from hesslab.operators import dense_matrix, probe_vectors

F64, F32 = torch.float64, torch.float32


def spd(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=g))
    return q @ torch.diag(torch.linspace(-1.0, 3.0, n, dtype=F64)) @ q.T


def test_plan_prefers_float64_and_fits_as_many_probes_as_the_budget_allows():
    one = lanczos_bytes(1000, 20, 1, F64)
    assert one == (20 + 4) * 1000 * 8
    plan = plan_basis(1000, 20, 10, memory_budget=3 * one + 1)
    assert (plan.probe_chunk, plan.dtype, plan.pinned) == (3, F64, False)
    assert plan.nbytes == 3 * one <= plan.budget
    assert plan_basis(1000, 20, 10, memory_budget=100 * one).probe_chunk == 10


def test_plan_falls_back_to_float32_then_offloads_then_names_the_knobs():
    one64, one32 = lanczos_bytes(1000, 20, 1, F64), lanczos_bytes(1000, 20, 1, F32)
    assert plan_basis(1000, 20, 4, memory_budget=one32).dtype == F32
    with pytest.raises(BasisMemoryError, match="basis_dtype=None"):
        plan_basis(1000, 20, 4, memory_budget=one32, dtype=F64)
    # a GPU whose memory cannot hold one probe: the basis goes to pinned host memory (no GPU needed to plan)
    offloaded = plan_basis(1000, 20, 4, "cuda", memory_budget=one32 - 1, host_budget=2 * one64)
    assert offloaded.pinned and offloaded.device.type == "cpu" and offloaded.dtype == F64 and offloaded.probe_chunk == 2
    with pytest.raises(BasisMemoryError, match="memory_budget=.*num_steps=.*offload=True"):
        plan_basis(1000, 20, 4, "cuda", memory_budget=one32 - 1, offload=False)
    with pytest.raises(BasisMemoryError, match="probe_chunk="):
        plan_basis(1000, 20, 4, memory_budget=2 * one64, probe_chunk=3, dtype=F64)
    with pytest.raises(ValueError, match="memory_budget"):
        plan_basis(1000, 20, 4, memory_budget=0)


def test_probe_i_is_the_same_vector_in_any_chunk():
    whole = probe_vectors(50, 6, seed=3)
    parts = torch.cat([probe_vectors(50, 2, 3, start=0), probe_vectors(50, 4, 3, start=2)])
    assert torch.equal(whole, parts)
    assert torch.equal(probe_vectors(50, 1, 3, F32, start=4)[0], whole[4].float())


def test_slq_result_does_not_depend_on_the_probe_chunk():
    A = MatrixOperator(spd(80))
    whole = slq(A, num_steps=30, num_probes=5, seed=2, progress=False)
    assert whole.info["probe_chunk"] == 5 and whole.info["basis_dtype"] == "float64"
    budget = lanczos_bytes(80, 30, 2, F64)
    chunked = slq(A, num_steps=30, num_probes=5, seed=2, memory_budget=budget, progress=False)
    assert chunked.info["probe_chunk"] == 2 and chunked.info["basis_dtype"] == "float64"
    # the same probes; products of a [2, n] and a [5, n] batch may round differently (1e-16
    # relative), which full reorthogonalisation keeps at that level
    np.testing.assert_allclose(chunked.nodes, whole.nodes, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chunked.weights, whole.weights, rtol=1e-9, atol=1e-12)


def test_float32_basis_costs_float32_accuracy_only():
    """A float32 basis stores every Lanczos vector to float32's unit round-off u = 6e-8;
    the Ritz values then carry errors of order m·u·‖A‖ (m steps of accumulated rounding)."""
    ev = np.linspace(-1.0, 3.0, 120)
    A = MatrixOperator(spd(120))
    budget32 = lanczos_bytes(120, 40, 1, F32)  # below one float64 probe
    d32 = slq(A, num_steps=40, num_probes=4, seed=1, memory_budget=budget32, progress=False)
    d64 = slq(A, num_steps=40, num_probes=4, seed=1, progress=False)
    assert d32.info["basis_dtype"] == "float32" and d64.info["basis_dtype"] == "float64"
    bound = 40 * np.finfo(np.float32).eps * np.abs(ev).max() * 10
    assert np.nanmax(np.abs(d32.nodes - d64.nodes)) < bound
    assert abs(np.nanmax(d32.nodes) - ev.max()) < bound


def test_blockwise_slq_within_a_budget_equals_the_unbounded_run_and_seeds_by_block_name():
    case = tiny_mlp()
    kw = dict(num_steps=6, num_probes=3, seed=5, progress=False)
    free = blockwise_slq(case.model, case.loss_fn, case.data, **kw)
    dims = [p.numel() for p in case.model.parameters()]
    tight = blockwise_slq(case.model, case.loss_fn, case.data, memory_budget=lanczos_bytes(max(dims), 6, 1, F64), **kw)
    assert tight[max(free, key=lambda n: free[n].dim)].info["probe_chunk"] == 1
    blocks = resolve_blocks(case.model)
    alone = blockwise_slq(case.model, case.loss_fn, case.data, blocks=[blocks[-1].name], **kw)
    for name in free:
        np.testing.assert_allclose(tight[name].nodes, free[name].nodes, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(alone[blocks[-1].name].nodes, free[blocks[-1].name].nodes, rtol=1e-10, atol=1e-12)


def test_blockwise_slq_holds_one_group_of_bases_at_a_time(monkeypatch):
    import sys
    import weakref

    from hesslab.lanczos import LanczosProcess

    slq_module = sys.modules["hesslab.slq"]  # the package exports the function under the same name

    alive, most = weakref.WeakSet(), [0]

    class Counted(LanczosProcess):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            alive.add(self)
            most[0] = max(most[0], len(alive))

    monkeypatch.setattr(slq_module, "LanczosProcess", Counted)
    case = tiny_mlp()
    largest = max(p.numel() for p in case.model.parameters())
    blockwise_slq(case.model, case.loss_fn, case.data, ["0.weight"], num_steps=6, num_probes=3,
                  memory_budget=lanczos_bytes(largest, 6, 1, F64), progress=False)
    assert most[0] == 1  # three groups of one probe each, never two bases alive together


def test_blockwise_slq_refuses_a_budget_below_one_probe():
    case = tiny_mlp()
    with pytest.raises(BasisMemoryError, match="memory_budget="):
        blockwise_slq(case.model, case.loss_fn, case.data, num_steps=4, num_probes=1, memory_budget=64,
                      progress=False)


def test_hutchinson_trace_does_not_depend_on_the_chunk():
    A = spd(60)
    whole = hutchinson_trace(A, num_probes=12, seed=4)
    chunked = hutchinson_trace(A, num_probes=12, seed=4, probe_chunk=5)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)


def test_dense_matrix_builds_the_identity_chunk_by_chunk():
    case = tiny_mlp()
    op = HessianOperator(case.model, case.loss_fn, case.data)
    np.testing.assert_allclose(dense_matrix(op, chunk=7).numpy(), exact_hessian(case).numpy(), rtol=1e-9, atol=1e-12)


def test_top_eigenvalues_refuses_a_basis_beyond_the_budget():
    A = MatrixOperator(spd(100))
    with pytest.raises(BasisMemoryError, match="max_basis="):
        top_eigenvalues(A, 3, max_basis=20, memory_budget=2 * 20 * 100 * 8)
    assert top_eigenvalues(A, 3, max_basis=20, memory_budget=2 * 23 * 100 * 8).converged
