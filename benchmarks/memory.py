"""Benchmark: SLQ at the paper's settings (m = 100, n_v = 10) on a 3M-parameter block within a memory budget.

Run: ``python benchmarks/memory.py [--budget-gib 2] [--quick]`` (``make bench`` runs it).

A float32 MLP (1000 → 3000 → 10) whose first layer is one 3.0M-parameter block. Without a budget its
Lanczos bases would hold 100 × 10 × 3.2M float64 numbers (26 GB). Each case runs in a
fresh process, whose peak resident memory (``ru_maxrss``) is printed beside the budget
given to the bases:

* ``slq`` on the full Hessian and ``blockwise_slq`` over both layers at m = 100, n_v = 10,
  with ``memory_budget`` = the budget minus the process's baseline (torch, model, data);
* on a smaller MLP where everything fits, the same runs with a tight budget (probes one
  at a time, float64) and without one: Ritz values equal to the float32 model's round-off
  (a product of one vector and of a batch of four round differently);
* the accuracy cost of a float32 basis, measured on that smaller MLP against float64.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

GIB = 1 << 30


def _model(width: int, features: int = 1000, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(features, width), nn.Tanh(), nn.Linear(width, 10))
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(64, features, generator=g), torch.randint(0, 10, (64,), generator=g)) for _ in range(2)]
    return model, data


def _case(kind: str, width: int, steps: int, probes: int, budget: int | None, basis_dtype: str | None) -> dict:
    """Run one case in this process; return timings, the plan and the Ritz values."""
    import torch
    import torch.nn.functional as F

    from hesslab import HessianOperator, blockwise_slq, slq

    model, data = _model(width)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    dtype = getattr(torch, basis_dtype) if basis_dtype else None
    start = time.perf_counter()
    if kind == "slq":
        op = HessianOperator(model, F.cross_entropy, data)
        d = slq(op, num_steps=steps, num_probes=probes, memory_budget=budget, basis_dtype=dtype, progress=False)
        spectra = {"all": d}
    else:
        spectra = blockwise_slq(model, F.cross_entropy, data, num_steps=steps, num_probes=probes,
                                memory_budget=budget, basis_dtype=dtype, progress=False)
    seconds = time.perf_counter() - start
    return {"kind": kind, "parameters": sum(p.numel() for p in model.parameters()), "seconds": seconds,
            "baseline_rss": baseline, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "plans": {n: {k: s.info[k] for k in ("basis_dtype", "probe_chunk")} for n, s in spectra.items()},
            "nodes": {n: np.nan_to_num(s.nodes, nan=0.0).tolist() for n, s in spectra.items()}}


def run_case(*args) -> dict:
    """:func:`_case` in a fresh process (its own peak memory)."""
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(args)], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _max_difference(a: dict, b: dict) -> float:
    """Largest Ritz-value difference relative to the largest |Ritz value| of its block."""
    return max(float(np.max(np.abs(np.array(a["nodes"][n]) - np.array(b["nodes"][n])))
                     / max(np.max(np.abs(b["nodes"][n])), 1e-300)) for n in a["nodes"])


def _plans(r: dict) -> str:
    return ", ".join(sorted({f"{p['basis_dtype']} × {p['probe_chunk']} probe(s)" for p in r["plans"].values()}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-gib", type=float, default=2.0, help="peak memory goal of the large runs")
    parser.add_argument("--quick", action="store_true", help="10 steps × 2 probes instead of 100 × 10")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(_case(*json.loads(args.case))))
        return
    steps, probes = (10, 2) if args.quick else (100, 10)
    rows = []
    small = 64  # 65k parameters: every basis fits
    for kind in ("slq", "blockwise"):
        free = run_case(kind, small, 30, 4, None, None)
        tight = run_case(kind, small, 30, 4, 34 * 65_000 * 8, None)  # one float64 probe of the whole model (64,714)
        f32 = run_case(kind, small, 30, 4, None, "float32")
        rows.append({"case": f"{kind}, 65k params: tight budget vs none", "max |Δ Ritz| / |λ|max": _max_difference(tight, free),
                     "basis": _plans(tight)})
        rows.append({"case": f"{kind}, 65k params: float32 vs float64 basis", "max |Δ Ritz| / |λ|max": _max_difference(f32, free),
                     "basis": _plans(f32)})
    width = 3000  # 3.0M-parameter first layer
    baseline = run_case("slq", width, 1, 1, None, None)["peak_rss"]
    budget = int(args.budget_gib * GIB - baseline - 0.1 * GIB)  # the baseline holds the graphs and product temporaries
    for kind in ("slq", "blockwise"):
        r = run_case(kind, width, steps, probes, budget, None)
        rows.append({"case": f"{kind}, {r['parameters'] / 1e6:.1f}M params, m={steps}, n_v={probes}",
                     "seconds": r["seconds"], "basis budget GiB": budget / GIB, "peak RSS GiB": r["peak_rss"] / GIB,
                     "within goal": r["peak_rss"] <= args.budget_gib * GIB, "basis": _plans(r)})
    import pandas as pd

    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(pd.DataFrame(rows).to_string(index=False))
    print(f"\nprocess baseline (torch, model, data, one step): {baseline / GIB:.2f} GiB; goal {args.budget_gib} GiB")


if __name__ == "__main__":
    main()
