"""Data-parallel HVPs and spectra over torch.distributed (gloo, 2 and 3 processes, float64).

Each rank is a separate process started as ``torchrun`` starts one (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``; ``distributed_worker.py``) and holds an uneven shard of five
batches of 2, 7, 3, 5 and 1 examples (with 3 processes, one rank holds no batch). Asserted:

- HVPs, SLQ nodes and weights, every block's nodes and weights, JS⁰, the top eigenvalues and
  Hutchinson's trace equal the single-process results on all five batches to 1e-10
  (relative to the largest entry), on every rank, and agree between ranks to 1e-13 (the
  same Lanczos on the same reduced products; only each rank's own round-off differs);
- a rank that raises makes it raise its own error and every other rank raise
  :class:`~hesslab.distributed.DistributedError` naming it and its error;
- ranks that ask for products of different sizes all raise ``DistributedError``, rather than
  sum mismatched vectors;
- the result cache is read and written by rank 0 only, shared with the other ranks: after
  rank 0 dies mid-run the rerun resumes from its last checkpoint, a finished result is then
  served to every rank without a product, both equal to the single-process spectra;
- a rank that dies, or hangs, makes the others raise ``DistributedError`` within a bounded
  time (the process group's collective timeout), never a hang.

Every process is waited for with a limit and killed after it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import distributed_worker as worker
import hesslab
from hesslab.distributed import GRACE, DistributedError, ShardReducer, resolve_group, run_on_ranks, shard

WORKER = Path(worker.__file__)
#: seconds a collective may wait for a rank (the process group's timeout in the fault cases)
COLLECTIVE_TIMEOUT = 10
#: seconds a whole multi-process run may take before its processes are killed
RUN_LIMIT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(scenario: str, world: int, out: Path, timeout: float = 120) -> tuple[list[int | None], float]:
    """Start ``world`` ranks of ``scenario``; their exit codes (``None``: killed at :data:`RUN_LIMIT`) and the time."""
    port, procs = _free_port(), []
    start = time.monotonic()
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(WORKER), scenario, str(out), str(timeout)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    codes: list[int | None] = [None] * world
    deadline = start + RUN_LIMIT
    while time.monotonic() < deadline and any(c is None for c in codes):
        codes = [p.poll() for p in procs]
        if scenario == "hang" and codes[0] is not None:
            break  # rank 0 has given up on the sleeping rank 1
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)
    return codes, elapsed


def _single_process(name: str) -> dict[str, np.ndarray]:
    model, _, batches = worker.problem(name)
    n = sum(p.numel() for p in model.parameters())
    vectors = torch.randn(3, n, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return worker.compute(name, batches, vectors)


@pytest.fixture(scope="module")
def single():
    """The reference: every quantity on all five batches in this (single) process."""
    return {f"{name}/{k}": v for name in ("mlp", "gpt2") for k, v in _single_process(name).items()}


@pytest.mark.timeout(RUN_LIMIT + 60)
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_reproduce_the_single_process_results(world, single, tmp_path):
    codes, _ = _launch("results", world, tmp_path)
    errors = [json.loads(p.read_text()) for p in tmp_path.glob("rank*.json")]
    assert codes == [0] * world, f"ranks exited with {codes}: {errors}"
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(world)]
    assert set(ranks[0]) == set(single)
    for key, expected in single.items():
        scale = max(float(np.abs(expected).max()), 1e-300)
        for r, got in enumerate(ranks):
            assert got[key].shape == expected.shape, key
            np.testing.assert_allclose(got[key], expected, rtol=0, atol=1e-10 * scale,
                                       err_msg=f"{key} on rank {r} of {world}")
            # the same reduced products on every rank; only the ranks' own round-off in the
            # Lanczos recurrences (BLAS orders sums by memory alignment) may differ
            np.testing.assert_allclose(got[key], ranks[0][key], rtol=0, atol=1e-13 * scale,
                                       err_msg=f"{key}: rank {r} differs from rank 0")


@pytest.mark.timeout(RUN_LIMIT + 60)
def test_a_rank_that_raises_stops_every_rank_naming_it(tmp_path):
    codes, _ = _launch("raise", 3, tmp_path)
    assert codes == [1, 1, 1]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert reports[1]["type"] == "NonFiniteError" and "nan" in reports[1]["message"]
    for r in (0, 2):
        assert reports[r]["type"] == "DistributedError"
        assert "rank 1: NonFiniteError" in reports[r]["message"] and f"rank {r} of 3" in reports[r]["message"]


@pytest.mark.timeout(3 * RUN_LIMIT + 60)
def test_cache_is_written_by_rank_0_resumed_after_a_crash_and_served_after(single, tmp_path):
    blocks = [k for k in single if k.startswith("mlp/block_")]
    codes, _ = _launch("cache-crash", 2, tmp_path)
    assert codes[0] == 3 and codes[1] == 1, codes
    assert json.loads((tmp_path / "rank1.json").read_text())["type"] == "DistributedError"
    for r in range(2):
        (tmp_path / f"rank{r}.json").unlink(missing_ok=True)

    codes, _ = _launch("cache", 2, tmp_path)  # resumes from the checkpoint rank 0 wrote
    assert codes == [0, 0]
    resumed = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    codes, _ = _launch("cache", 2, tmp_path)  # the finished result is served: no product at all
    assert codes == [0, 0]
    served = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    (tmp_path / "fresh").mkdir()
    codes, _ = _launch("cache", 2, tmp_path / "fresh")  # the same from an empty cache
    assert codes == [0, 0]
    fresh = int(np.load(tmp_path / "fresh" / "rank0.npz")["products"])
    for r in range(2):
        assert 0 < int(resumed[r]["products"]) < fresh, (int(resumed[r]["products"]), fresh)
        assert int(served[r]["products"]) == 0
        for key in blocks:
            name = key.removeprefix("mlp/")
            for got in (resumed[r][name], served[r][name]):
                np.testing.assert_allclose(got, single[key], rtol=0, atol=1e-10 * np.abs(single[key]).max())


@pytest.mark.timeout(RUN_LIMIT + 60)
def test_ranks_asking_for_different_products_stop_instead_of_summing_them(tmp_path):
    codes, _ = _launch("mismatch", 2, tmp_path)
    assert codes == [1, 1]
    for r in range(2):
        report = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert report["type"] == "DistributedError" and "different sizes" in report["message"], report


@pytest.mark.timeout(RUN_LIMIT + 60)
@pytest.mark.parametrize("fault", ["die", "hang"])
def test_a_rank_that_dies_or_hangs_fails_the_others_in_bounded_time(fault, tmp_path):
    codes, elapsed = _launch(fault, 2, tmp_path, timeout=COLLECTIVE_TIMEOUT)
    assert codes[0] == 1, f"rank 0 ended with {codes[0]} after {elapsed:.0f} s"
    report = json.loads((tmp_path / "rank0.json").read_text())
    assert report["type"] == "DistributedError" and "rank 0 of 2" in report["message"], report
    assert "died or hung" in report["message"]
    # the collective timeout, plus start-up; far below the run limit
    assert elapsed < COLLECTIVE_TIMEOUT + 90, elapsed


def test_without_an_initialised_group_nothing_is_reduced():
    assert resolve_group() is None and resolve_group(None) is None
    with pytest.raises(ValueError, match="process_group"):
        resolve_group("world")
    problem = worker.problem("mlp")
    op = hesslab.HessianOperator(*problem)
    assert op.reducer is None


def test_shard_is_round_robin_and_covers_every_batch():
    batches = list(range(7))
    parts = [shard(batches, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == batches
    assert shard(batches) == batches  # no process group: everything


def test_reducer_refuses_nothing_on_one_rank(tmp_path):
    """A one-rank group (a FileStore, no network) reduces to the local sums and passes errors through."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        reducer = ShardReducer(dist.group.WORLD)
        outs = [torch.arange(3.0, dtype=torch.float64)]
        assert reducer.reduce(outs, 5.0, None) == 5.0
        assert outs[0].tolist() == [0.0, 1.0, 2.0]
        with pytest.raises(KeyError, match="mine"):
            reducer.reduce(outs, 5.0, KeyError("mine"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(RUN_LIMIT)
def test_run_on_ranks_returns_rank_0s_result_and_names_a_failing_dead_or_hung_rank(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = run_on_ranks("distributed_worker:rank_sum", {"offset": 0.5}, 3, timeout=60, limit=RUN_LIMIT)
    assert result == {"rank": 0, "world": 3, "sum": 0.5 + 1.5 + 2.5}
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"rank 1 failed first \(exit code 1\): (.|\n)*ValueError: rank 1 refuses"):
        run_on_ranks("distributed_worker:fail_on", {"rank": 1}, 2, timeout=COLLECTIVE_TIMEOUT, limit=RUN_LIMIT)
    assert time.monotonic() - start < COLLECTIVE_TIMEOUT + 60
    with pytest.raises(DistributedError, match=r"rank 1 failed first \(exit code 3\): it left no Python error"):
        run_on_ranks("distributed_worker:die_on", {"rank": 1}, 2, timeout=COLLECTIVE_TIMEOUT, limit=RUN_LIMIT)
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"rank\(s\) \[1\] were still running long after that failure"):
        run_on_ranks("distributed_worker:hang_on", {"rank": 1}, 2, timeout=5, limit=RUN_LIMIT)
    assert time.monotonic() - start < 5 + GRACE + 30
    with pytest.raises(ValueError, match="processes"):
        run_on_ranks("distributed_worker:rank_sum", {"offset": 0}, 0)
