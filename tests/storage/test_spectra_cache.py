"""Blockwise spectra are cached with provenance and resume after an interruption."""

import numpy as np
import pytest

from cases import tiny_gpt2
import hesslab
from hesslab import HessianOperator
from hesslab.storage.cached import blockwise_slq, slq
from hesslab.storage.cache import ResultCache

KW = dict(blocks="gpt2-qkv", num_steps=6, num_probes=2, seed=3, progress=False)


def same(a, b, rtol=0.0):
    """Equal spectra: bit-identical by default; ``rtol`` allows for a different summation order."""
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_allclose(a[name].nodes, b[name].nodes, rtol=rtol, atol=0)
        np.testing.assert_allclose(a[name].weights, b[name].weights, rtol=rtol, atol=1e-15 if rtol else 0)


def test_cached_blockwise_spectra_load_back_bit_identical(tmp_path):
    case = tiny_gpt2()
    first = blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, **KW)
    files = list((tmp_path / "blockwise_slq").glob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "blockwise_slq").glob("*.partial.*"))
    again = blockwise_slq(case.model, case.loss_fn, case.data, cache=ResultCache(tmp_path), **KW)
    same(first, again)
    assert again[next(iter(again))].info["data_passes"] == first[next(iter(first))].info["data_passes"]


def test_changed_model_or_settings_are_not_served_from_cache(tmp_path):
    case = tiny_gpt2()
    blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, **KW)
    blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, **{**KW, "seed": 4})
    next(case.model.parameters()).data.mul_(1.01)
    blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, **KW)
    assert len(list((tmp_path / "blockwise_slq").glob("*.npz"))) == 3


def test_interrupted_run_resumes_and_equals_uninterrupted(tmp_path, monkeypatch):
    case = tiny_gpt2()
    reference = hesslab.blockwise_slq(case.model, case.loss_fn, case.data, **KW)
    calls = {"n": 0}
    real = HessianOperator.block_products

    def flaky(self, requests):
        calls["n"] += 1
        if calls["n"] == 17:  # mid-way through the third group of blocks (7 passes per group)
            raise KeyboardInterrupt
        return real(self, requests)

    monkeypatch.setattr(HessianOperator, "block_products", flaky)
    with pytest.raises(KeyboardInterrupt):
        blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, resume_chunk=3, **KW)
    assert list((tmp_path / "blockwise_slq").glob("*.partial.npz")), "finished groups must be checkpointed"
    calls["n"] = -10_000
    resumed = blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, resume_chunk=3, **KW)
    # a fresh operator may pick vmap-ed or looped backwards (timed): equal to rounding
    same(resumed, reference, rtol=1e-10)
    # per group of 3 blocks one pass measures the blocks' round-off, then 6 Lanczos steps: the
    # two groups finished before the interruption (14 passes) are loaded, only the rest is computed
    full = 7 * -(-len(reference) // 3)
    assert calls["n"] + 10_000 == full - 14, f"resumed run made {calls['n'] + 10_000} of {full} passes"
    assert not list((tmp_path / "blockwise_slq").glob("*.partial.*"))


def test_full_slq_cached_and_resumed_by_probe_chunks(tmp_path, monkeypatch):
    case = tiny_gpt2()
    op = HessianOperator(case.model, case.loss_fn, case.data)
    kw = dict(num_steps=5, num_probes=4, probe_chunk=2, seed=1, progress=False)
    reference = hesslab.slq(op, **kw)
    real, calls = HessianOperator.matvec, {"n": 0}

    def flaky(self, v):
        calls["n"] += 1
        if calls["n"] == 9:  # in the second probe chunk (call 1 measures the round-off, 2-6 the first chunk)
            raise KeyboardInterrupt
        return real(self, v)

    monkeypatch.setattr(HessianOperator, "matvec", flaky)
    with pytest.raises(KeyboardInterrupt):
        slq(op, cache=tmp_path, **kw)
    assert slq(op, cache=tmp_path, stored_only=True, **kw) is None  # only a partial result is stored
    calls["n"] = -100
    resumed = slq(op, cache=tmp_path, **kw)
    assert calls["n"] + 100 == 1 + 5, "only the round-off probe and the unfinished chunk are recomputed"
    np.testing.assert_allclose(resumed.nodes, reference.nodes, rtol=1e-10)
    again = slq(op, cache=tmp_path, **kw)
    np.testing.assert_array_equal(again.nodes, resumed.nodes)
    calls["n"] = 0
    stored = slq(op, cache=tmp_path, stored_only=True, **kw)
    np.testing.assert_array_equal(stored.nodes, resumed.nodes)
    assert calls["n"] == 0
    np.testing.assert_array_equal(again.weights, resumed.weights)
