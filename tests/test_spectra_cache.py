"""Blockwise spectra are cached with provenance and resume after an interruption."""

import numpy as np
import pytest

from conftest import make_gpt2
from hesslab import HessianOperator, blockwise_slq
from hesslab.cache import ResultCache

KW = dict(blocks="gpt2-qkv", num_steps=6, num_probes=2, seed=3, progress=False)


def same(a, b):
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name].nodes, b[name].nodes)
        np.testing.assert_array_equal(a[name].weights, b[name].weights)


def test_cached_blockwise_spectra_load_back_bit_identical(tmp_path):
    case = make_gpt2()
    first = blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, **KW)
    files = list((tmp_path / "blockwise_slq").glob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "blockwise_slq").glob("*.partial.*"))
    again = blockwise_slq(case.model, case.loss_fn, case.data, cache=ResultCache(tmp_path), **KW)
    same(first, again)
    assert again[next(iter(again))].info["data_passes"] == first[next(iter(first))].info["data_passes"]


def test_changed_model_or_settings_are_not_served_from_cache(tmp_path):
    case = make_gpt2()
    blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, **KW)
    blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, **{**KW, "seed": 4})
    next(case.model.parameters()).data.mul_(1.01)
    blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, **KW)
    assert len(list((tmp_path / "blockwise_slq").glob("*.npz"))) == 3


def test_interrupted_run_resumes_and_equals_uninterrupted(tmp_path, monkeypatch):
    case = make_gpt2()
    reference = blockwise_slq(case.model, case.loss_fn, case.data, **KW)
    calls = {"n": 0}
    real = HessianOperator.block_products

    def flaky(self, requests):
        calls["n"] += 1
        if calls["n"] == 15:  # mid-way through the third group of blocks
            raise KeyboardInterrupt
        return real(self, requests)

    monkeypatch.setattr(HessianOperator, "block_products", flaky)
    with pytest.raises(KeyboardInterrupt):
        blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, resume_chunk=3, **KW)
    assert list((tmp_path / "blockwise_slq").glob("*.partial.npz")), "finished groups must be checkpointed"
    calls["n"] = -10_000
    resumed = blockwise_slq(case.model, case.loss_fn, case.data, cache=tmp_path, resume_chunk=3, **KW)
    same(resumed, reference)
    # 6 steps per group of 3 blocks: the two groups finished before the interruption
    # (12 passes) are loaded, only the rest is computed
    full = 6 * -(-len(reference) // 3)
    assert calls["n"] + 10_000 == full - 12, f"resumed run made {calls['n'] + 10_000} of {full} passes"
    assert not list((tmp_path / "blockwise_slq").glob("*.partial.*"))
