"""Hutchinson's estimate of the trace of an operator."""

from __future__ import annotations

import numpy as np
import torch

from hesslab.operators import as_operator


def hutchinson_trace(op, num_probes: int = 100, seed: int = 0) -> tuple[float, float]:
    """Hutchinson estimate of ``tr(H)`` with Rademacher probes.

    Returns:
        ``(estimate, standard_error)``.
    """
    op = as_operator(op)
    g = torch.Generator().manual_seed(int(seed))
    z = (torch.randint(0, 2, (num_probes, op.dim), generator=g) * 2 - 1).to(op.device, op.dtype)
    samples = (z * op.matvec(z)).sum(dim=1).double().cpu().numpy()
    return float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(num_probes)) if num_probes > 1 else float("nan")


__all__ = ["hutchinson_trace"]
