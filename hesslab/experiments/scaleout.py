"""How many data-parallel processes the book's spectra use: every visible GPU at the ``paper`` profile.

:func:`processes_for` decides; :func:`hesslab.distributed.run_on_ranks` runs a computation on
that many ranks (one GPU each, NCCL), each with its shard of the Hessian batches, and hands
back rank 0's result, the same as the single-process one up to the order of the sums. The
``cpu`` and ``smoke`` profiles stay in one process (a CPU's cores are already used by the
operator's threads and by the gap study's worker processes). ``HESSLAB_PROCESSES=N`` sets the
count for every profile (``1`` turns it off).
"""

from __future__ import annotations

import os

import torch

#: the profile whose spectra use every visible GPU
SCALE_OUT_PROFILE = "paper"


def processes_for(profile: str, device, processes: int | None = None) -> int:
    """Ranks for a spectrum at ``profile`` on ``device``: ``processes``, else ``$HESSLAB_PROCESSES``, else the rule above.

    Inside a rank (a process group is already initialised) it is always 1.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return 1
    if processes is not None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        return int(processes)
    if os.environ.get("HESSLAB_PROCESSES"):
        return max(1, int(os.environ["HESSLAB_PROCESSES"]))
    if profile == SCALE_OUT_PROFILE and torch.device(device).type == "cuda":
        return max(1, torch.cuda.device_count())
    return 1


__all__ = ["SCALE_OUT_PROFILE", "processes_for"]
