"""Benchmark: strong scaling of one all-blocks Lanczos step over data-parallel processes.

Run: ``python benchmarks/distributed.py [--procs 1 2] [--steps 5] [--batches 4] [--device cpu|cuda]``.

One all-blocks Lanczos step of :func:`hesslab.blockwise_slq` is one Hessian-vector product
over every block at once (one vector per block, on the retained first-order graphs). Here a
GPT-2 (4 layers, 128 wide, eager attention, float32) and ``--batches`` Hessian batches of
8 × 64 tokens are measured with 1, 2, ... processes, each holding an equal round-robin share
of the batches (:func:`hesslab.shard`), joined in a gloo process group (NCCL with
``--device cuda``, one GPU per process), started as ``torchrun`` starts them. All in one run:

- the time of one step (after one untimed step that builds the graphs), median over ``--steps``;
- the time of the all-reduce alone on a payload of the same size (the step's communication);
- speed-up and parallel efficiency against one process with one thread, and one process with
  as many threads as there are processes (the fair comparison on a CPU: the processes share
  the same cores).

Prints a table and writes ``--json`` if given.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch


def _problem(batches: int, device: str):
    from hesslab.experiments.hvp_costs import benchmark_problems

    gpt = benchmark_problems(device=device)[2]
    g = torch.Generator().manual_seed(1)
    data = []
    for _ in range(batches):
        tokens = torch.randint(0, 96, (8, 65), generator=g).to(device)
        data.append((tokens[:, :-1], tokens[:, 1:]))
    return gpt.model, gpt.loss_fn, data


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def worker(steps: int, batches: int, device: str, out: Path) -> None:
    """One rank: time ``steps`` all-blocks products on its shard and the all-reduce alone; rank 0 writes ``out``."""
    import torch.distributed as dist

    import hesslab

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(seconds=600))
    model, loss_fn, data = _problem(batches, device)
    op = hesslab.HessianOperator(model, loss_fn, hesslab.shard(data), graph_memory_budget=1 << 40)
    blocks = hesslab.resolve_blocks(model, None, op.names)
    g = torch.Generator().manual_seed(2)
    requests = [(b, torch.randn(1, op.block_dim(b), generator=g).to(device)) for b in blocks]
    op.block_products(requests)  # builds and retains every batch's first-order graph
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        op.block_products(requests)
        _sync(device)
        times.append(time.perf_counter() - start)
    comm = []
    if world > 1:
        payload = torch.zeros(op.dim + 1, device=device)
        header = torch.zeros(3, dtype=torch.int64, device=device if device.startswith("cuda") else "cpu")
        for _ in range(steps):
            _sync(device)
            start = time.perf_counter()
            dist.all_reduce(header)
            dist.all_reduce(payload)
            _sync(device)
            comm.append(time.perf_counter() - start)
        dist.destroy_process_group()
    if rank == 0:
        out.write_text(json.dumps({"step_s": statistics.median(times), "comm_s": statistics.median(comm) if comm else 0.0,
                                   "parameters": op.dim, "blocks": len(blocks), "payload_bytes": 4 * (op.dim + 1)}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(procs: int, threads: int, steps: int, batches: int, device: str, limit: float = 1800) -> dict:
    """Launch ``procs`` ranks with ``threads`` threads each; rank 0's measurement."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"hesslab-bench-{os.getpid()}-{procs}-{threads}.json"
    port = _free_port()
    ranks = []
    for rank in range(procs):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(procs), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads))
        ranks.append(subprocess.Popen([sys.executable, __file__, "--worker", "--steps", str(steps), "--batches",
                                       str(batches), "--device", device, "--json", str(out)], env=env))
    try:
        codes = [p.wait(timeout=limit) for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    if any(codes):
        raise RuntimeError(f"ranks exited with {codes}")
    result = json.loads(out.read_text())
    out.unlink()
    return result


def main() -> None:
    """Measure every configuration in one run and print the scaling table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.batches, args.device, args.json)
        return
    rows = []
    largest = max(args.procs)
    configs = [(1, 1)] + ([(1, largest)] if args.device == "cpu" and largest > 1 else [])
    configs += [(p, 1) for p in args.procs if p > 1]
    for procs, threads in configs:
        r = measure(procs, threads, args.steps, args.batches, args.device)
        rows.append({"processes": procs, "threads_each": threads, **r})
    base = rows[0]["step_s"]
    print(f"one all-blocks Lanczos step, GPT-2 4x128 ({rows[0]['parameters']:,} parameters, {rows[0]['blocks']} "
          f"blocks), {args.batches} Hessian batches of 8 x 64 tokens, {args.device}, "
          f"{os.cpu_count()} CPU cores, median of {args.steps}")
    print(f"{'processes':>9} {'threads':>7} {'step (s)':>9} {'comm (s)':>9} {'speed-up':>8} {'efficiency':>10}")
    for row in rows:
        workers = row["processes"] * row["threads_each"]
        row["speedup"] = base / row["step_s"]
        row["efficiency"] = row["speedup"] / workers
        print(f"{row['processes']:>9} {row['threads_each']:>7} {row['step_s']:>9.3f} {row['comm_s']:>9.4f} "
              f"{row['speedup']:>8.2f} {row['efficiency']:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "cpu_cores": os.cpu_count(), "batches": args.batches,
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
