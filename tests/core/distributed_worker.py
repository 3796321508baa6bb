"""One rank of the distributed tests (``tests/core/test_distributed.py``), started as torchrun would.

    RANK=r WORLD_SIZE=P MASTER_ADDR=127.0.0.1 MASTER_PORT=port python distributed_worker.py SCENARIO OUT TIMEOUT

Joins a gloo process group (collective timeout ``TIMEOUT`` seconds), computes on its shard
of a tiny float64 problem's batches (:func:`problem`, sharded unevenly by :func:`shards`)
and writes ``OUT/rank<r>.npz`` (results) or ``OUT/rank<r>.json`` (the error it ended with).

Scenarios: ``results`` (HVPs, SLQ, blockwise SLQ, JS⁰, top eigenvalues, trace, on the MLP
and on the GPT-2); ``raise`` (rank 1's data has a NaN); ``die`` (rank 1 exits before its
first product); ``hang`` (rank 1 sleeps before its first product).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import hesslab
from hesslab.experiments.tiny_problems import lm_loss, tiny_gpt2, tiny_mlp

#: batch sizes of the problems' batches: uneven, so that a wrong weighting shows
SIZES = (2, 7, 3, 5, 1)


def problem(name: str):
    """``(model, loss_fn, batches)``: the tiny MLP or GPT-2 with five batches of :data:`SIZES` examples."""
    g = torch.Generator().manual_seed(1)
    if name == "mlp":
        p = tiny_mlp(0)
        data = [(torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
                for n in SIZES]
        return p.model, F.cross_entropy, data
    p = tiny_gpt2(0)
    data = []
    for n in SIZES:
        tokens = torch.randint(0, 11, (n, 6), generator=g)
        data.append((tokens[:, :-1], tokens[:, 1:]))
    return p.model, lm_loss, data


def shards(world_size: int) -> list[list[int]]:
    """Batch indices per rank: uneven counts (and so uneven example counts) for 2 ranks; for 3, one rank has none."""
    return {1: [[0, 1, 2, 3, 4]], 2: [[1], [0, 2, 3, 4]], 3: [[0, 1, 3], [], [2, 4]]}[world_size]


def compute(name: str, data, vectors: torch.Tensor) -> dict[str, np.ndarray]:
    """Every distributed quantity the tests compare, computed on ``data`` (this rank's shard)."""
    model, loss_fn, _ = problem(name)
    op = hesslab.HessianOperator(model, loss_fn, data)
    out = {"hvp": op @ vectors, "hvp_one": op @ vectors[0]}
    full = hesslab.slq(op, num_steps=12, num_probes=3, seed=4, progress=False)
    out |= {"slq_nodes": full.nodes, "slq_weights": full.weights}
    blocks = hesslab.blockwise_slq(model, loss_fn, data, num_steps=8, num_probes=2, progress=False)
    for block, density in blocks.items():
        out[f"block_nodes/{block}"], out[f"block_weights/{block}"] = density.nodes, density.weights
    out["js0"] = np.array(hesslab.js0(blocks))
    out["top"] = hesslab.top_eigenvalues(op, k=2).values
    out["trace"] = np.array(hesslab.hutchinson_trace(op, num_probes=4)[0])
    return {k: (v.detach().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in out.items()}


def main(scenario: str, out: Path, timeout: float) -> None:
    """Run ``scenario`` as this rank; see the module docstring."""
    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        if scenario == "results":
            results = {}
            for name in ("mlp", "gpt2"):
                model, _, batches = problem(name)
                n = sum(p.numel() for p in model.parameters())
                vectors = torch.randn(3, n, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
                mine = [batches[i] for i in shards(world)[rank]]
                results |= {f"{name}/{k}": v for k, v in compute(name, mine, vectors).items()}
            np.savez(out / f"rank{rank}.npz", **results)
        elif scenario in ("cache", "cache-crash"):
            from hesslab.distributed import DistributedCheckpoint
            from hesslab.storage import cached

            model, loss_fn, batches = problem("mlp")
            op = hesslab.HessianOperator(model, loss_fn, [batches[i] for i in shards(world)[rank]])
            if scenario == "cache-crash" and rank == 0:  # rank 0 dies right after writing its first checkpoint
                save = DistributedCheckpoint.save

                def save_then_die(self, arrays, meta, *, finished):
                    save(self, arrays, meta, finished=finished)
                    os._exit(3)

                DistributedCheckpoint.save = save_then_die
            blocks = cached.blockwise_slq(model, loss_fn, op.data, num_steps=8, num_probes=2, operator=op,
                                          cache=out / "cache", resume_chunk=1, progress=False)
            np.savez(out / f"rank{rank}.npz", products=op.reducer.products,
                     **{f"block_nodes/{b}": d.nodes for b, d in blocks.items()},
                     **{f"block_weights/{b}": d.weights for b, d in blocks.items()})
        else:
            model, loss_fn, batches = problem("mlp")
            mine = [batches[i] for i in shards(world)[rank]]
            if rank == 1 and scenario == "raise":
                mine = [(torch.full_like(batches[0][0], float("nan")), batches[0][1])]
            if rank == 1 and scenario == "die":
                os._exit(3)
            if rank == 1 and scenario == "hang":
                time.sleep(3600)
            op = hesslab.HessianOperator(model, loss_fn, mine)
            if scenario == "mismatch":  # rank 1 asks for two vectors where the others ask for one
                op @ torch.ones(2 if rank == 1 else 1, op.dim, dtype=torch.float64)
            hesslab.slq(op, num_steps=5, num_probes=1, progress=False)
            (out / f"rank{rank}.json").write_text(json.dumps({"ok": True}))
    except Exception as err:
        (out / f"rank{rank}.json").write_text(json.dumps({"ok": False, "type": type(err).__name__,
                                                          "message": str(err)}))
        sys.stdout.flush()
        os._exit(1)  # at once: an orderly shutdown could wait for the rank that died or hangs
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]))


def rank_sum(offset: float) -> dict:
    """A target of :func:`hesslab.distributed.run_on_ranks`: the ranks' sum of ``rank + offset``, seen by each."""
    value = torch.tensor([dist.get_rank() + offset], dtype=torch.float64)
    dist.all_reduce(value)
    return {"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": float(value.item())}


def fail_on(rank: int) -> None:
    """A target that raises on ``rank`` and waits in a collective elsewhere."""
    if dist.get_rank() == rank:
        raise ValueError(f"rank {rank} refuses")
    dist.barrier()


def die_on(rank: int) -> None:
    """A target whose ``rank`` exits without a Python error while the others wait in a collective."""
    if dist.get_rank() == rank:
        os._exit(3)
    dist.barrier()


def hang_on(rank: int) -> None:
    """A target whose ``rank`` sleeps while the others wait in a collective."""
    if dist.get_rank() == rank:
        time.sleep(3600)
    dist.barrier()
