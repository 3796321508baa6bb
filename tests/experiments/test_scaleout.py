"""The book's spectra on several data-parallel ranks: which profiles scale out, and the same answer when they do.

Asserted: the ``paper`` profile on CUDA takes every visible GPU, other profiles and CPUs one
process, ``HESSLAB_PROCESSES`` overrides both, a rank never starts ranks of its own; and
:func:`~hesslab.experiments.heterogeneity.blockwise_at_init` on two CPU ranks (gloo, the same
code path as NCCL on GPUs) returns the one-process spectra of ResNet-18 at the smoke profile
up to float32 summation order (λ_max to 1e-5, JS⁰ to 1e-3; measured 3e-8 and 3e-4), and
keeps its result in the cache (a rerun is served, identical).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hesslab.experiments import scaleout
from hesslab.experiments.heterogeneity import blockwise_at_init
from hesslab.js import js0


def test_paper_profile_on_cuda_takes_every_visible_gpu(monkeypatch):
    monkeypatch.delenv("HESSLAB_PROCESSES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert scaleout.processes_for("paper", "cuda") == 4
    assert scaleout.processes_for("paper", "cpu") == 1
    assert scaleout.processes_for("cpu", "cuda") == 1
    assert scaleout.processes_for("paper", "cuda", processes=2) == 2
    monkeypatch.setenv("HESSLAB_PROCESSES", "3")
    assert scaleout.processes_for("smoke", "cpu") == 3
    with pytest.raises(ValueError, match="processes"):
        scaleout.processes_for("paper", "cuda", processes=0)


def test_a_rank_does_not_start_ranks(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert scaleout.processes_for("paper", "cuda", processes=4) == 1
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(600)
def test_blockwise_spectra_on_two_ranks_equal_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one = blockwise_at_init("resnet18", "smoke", device="cpu", cache=None, progress=False, processes=1)
    two = blockwise_at_init("resnet18", "smoke", device="cpu", cache=tmp_path, progress=False, processes=2)
    assert list(two) == list(one)
    for name in one:
        np.testing.assert_allclose(two[name].lambda_max, one[name].lambda_max, rtol=1e-5)
    assert abs(js0(two) - js0(one)) < 1e-3
    again = blockwise_at_init("resnet18", "smoke", device="cpu", cache=tmp_path, progress=False, processes=2)
    for name in two:
        np.testing.assert_array_equal(again[name].nodes, two[name].nodes)
