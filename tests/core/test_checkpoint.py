"""The core's resume protocol: slq, blockwise_slq and top_eigenvalues with an in-memory checkpoint."""

import numpy as np
import pytest

import hesslab
from cases import tiny_gpt2, tiny_mlp
from hesslab import HessianOperator, MemoryCheckpoint


def _interrupt_after(monkeypatch, calls: int):
    """Make the ``calls``-th HessianOperator product raise KeyboardInterrupt; return the call counter."""
    real, count = HessianOperator.block_products, {"n": 0}

    def flaky(self, requests):
        count["n"] += 1
        if count["n"] == calls:
            raise KeyboardInterrupt
        return real(self, requests)

    monkeypatch.setattr(HessianOperator, "block_products", flaky)
    return count


def test_slq_resumes_from_the_last_finished_probe_chunk(monkeypatch):
    case = tiny_mlp()
    op = HessianOperator(case.model, case.loss_fn, case.data)
    kw = dict(num_steps=8, num_probes=4, probe_chunk=2, seed=3, progress=False)
    reference = hesslab.slq(op, **kw)
    checkpoint = MemoryCheckpoint()
    real, count = HessianOperator.matvec, {"n": 0}

    def flaky(self, v):
        count["n"] += 1
        if count["n"] == 12:  # 1 round-off probe + 8 steps of chunk one, then inside chunk two
            raise KeyboardInterrupt
        return real(self, v)

    monkeypatch.setattr(HessianOperator, "matvec", flaky)
    with pytest.raises(KeyboardInterrupt):
        hesslab.slq(op, checkpoint=checkpoint, **kw)
    assert checkpoint.saves == 1 and not checkpoint.progress.finished
    assert len(checkpoint.progress.arrays["steps"]) == 2, "the first chunk's two probes are saved"
    count["n"] = -1000
    resumed = hesslab.slq(op, checkpoint=checkpoint, **kw)
    assert count["n"] + 1000 == 1 + 8, "only the round-off probe and the unfinished chunk are recomputed"
    assert checkpoint.progress.finished
    np.testing.assert_allclose(resumed.nodes, reference.nodes, rtol=1e-12)
    np.testing.assert_allclose(resumed.weights, reference.weights, rtol=1e-12)


def test_blockwise_slq_resumes_by_groups_of_blocks(monkeypatch):
    case = tiny_gpt2()
    kw = dict(blocks="gpt2-qkv", num_steps=5, num_probes=2, seed=1, progress=False)
    reference = hesslab.blockwise_slq(case.model, case.loss_fn, case.data, **kw)
    checkpoint = MemoryCheckpoint()
    _interrupt_after(monkeypatch, 2 * 6 + 3)  # two groups of (1 round-off pass + 5 steps), then mid-group
    with pytest.raises(KeyboardInterrupt):
        hesslab.blockwise_slq(case.model, case.loss_fn, case.data, checkpoint=checkpoint, resume_chunk=3, **kw)
    saved = {int(k.split(".")[0]) for k in checkpoint.progress.arrays}
    assert saved == set(range(6)) and not checkpoint.progress.finished
    monkeypatch.undo()
    resumed = hesslab.blockwise_slq(case.model, case.loss_fn, case.data, checkpoint=checkpoint, resume_chunk=3, **kw)
    assert list(resumed) == list(reference) and checkpoint.progress.finished
    for name in reference:
        np.testing.assert_allclose(resumed[name].nodes, reference[name].nodes, rtol=1e-10, atol=1e-12,
                                   equal_nan=True)


def test_top_eigenvalues_returns_a_finished_result_without_products(monkeypatch):
    case = tiny_mlp()
    op = HessianOperator(case.model, case.loss_fn, case.data)
    checkpoint = MemoryCheckpoint()
    first = hesslab.top_eigenvalues(op, 3, checkpoint=checkpoint)
    monkeypatch.setattr(HessianOperator, "matvec", lambda self, v: pytest.fail("no product when finished"))
    again = hesslab.top_eigenvalues(op, 3, checkpoint=checkpoint)
    np.testing.assert_array_equal(again.values, first.values)
    assert again.converged == first.converged and again.vectors is None
