"""Hutchinson's estimate of the trace of an operator."""

from __future__ import annotations

import numpy as np
import torch

from hesslab.distributed import agreed_budget
from hesslab.memory import default_memory_budget
from hesslab.operators import as_operator, probe_seed

#: ``[chunk, n]`` tensors a chunk of products holds at once (probes, products, their product)
_TRACE_VECTORS = 3


def rademacher_probes(dim: int, num: int, seed: int, dtype=torch.float64, device="cpu", start: int = 0) -> torch.Tensor:
    """Rademacher (±1) probes ``start … start + num − 1`` of ``seed``, ``[num, dim]``, one generator per probe."""
    rows = torch.empty(num, dim, dtype=dtype, device=device)
    for i in range(num):
        g = torch.Generator().manual_seed(probe_seed(seed, start + i))
        rows[i] = (torch.randint(0, 2, (dim,), generator=g) * 2 - 1).to(device=device, dtype=dtype)
    return rows


def hutchinson_trace(op, num_probes: int = 100, seed: int = 0, *, memory_budget: int | None = None,
                     probe_chunk: int | None = None) -> tuple[float, float]:
    """Hutchinson estimate of ``tr(H)`` with Rademacher probes.

    Args:
        op: an operator (``dim``, ``dtype``, ``device``, batched ``matvec``) or a dense matrix.
        num_probes: probe vectors.
        seed: seed of the probes (probe ``i`` is the same whatever the chunking).
        memory_budget: bytes the probes and products of one chunk may use (default half
            the free memory of the operator's device).
        probe_chunk: probes per batched product; default as many as fit.

    Returns:
        ``(estimate, standard_error)``; the error is NaN for one probe.
    """
    op = as_operator(op)
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    if probe_chunk is None:
        budget = agreed_budget(op, memory_budget, default_memory_budget)  # the same on every rank
        per_probe = _TRACE_VECTORS * op.dim * torch.empty((), dtype=op.dtype).element_size()
        probe_chunk = max(1, min(num_probes, int(budget // per_probe)))
    samples = []
    for s in range(0, num_probes, probe_chunk):
        z = rademacher_probes(op.dim, min(probe_chunk, num_probes - s), seed, op.dtype, op.device, start=s)
        samples.append((z * op.matvec(z)).sum(dim=1).double().cpu().numpy())
    values = np.concatenate(samples)
    error = float(values.std(ddof=1) / np.sqrt(num_probes)) if num_probes > 1 else float("nan")
    return float(values.mean()), error


__all__ = ["hutchinson_trace", "rademacher_probes"]
