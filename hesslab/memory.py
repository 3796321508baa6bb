"""Memory budgets for Lanczos bases: how many probes at once, in which dtype, on which device.

Full reorthogonalisation keeps every Lanczos vector: ``m`` steps of ``k`` probes in
dimension ``n`` hold ``m·k·n`` numbers. At the paper's settings (``m = 100``,
``n_v = 10``) and float64 that is 309 GB for GPT-2's token embedding (38.6M
parameters) alone. :func:`plan_basis` picks, for a given budget in bytes, the first of

1. float64 basis on the operator's device, as many probes at once as fit;
2. float32 basis on the device (about 7 significant digits in the stored vectors:
   enough for a float32 Hessian-vector product, whose own round-off is larger);
3. float64, then float32, basis in pinned host memory when the device is a GPU
   (``offload=True``); the products still run on the GPU;

and raises :class:`BasisMemoryError`, naming the knobs, when not even one probe fits.
Probes are seeded one by one (:func:`hesslab.operators.probe_vectors`), so the chunking
never changes which probes are drawn, only how many run side by side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

#: vectors of ``[chunk, n]`` a Lanczos step holds beside the basis (start vectors, the
#: product, its copy in the basis dtype, the orthogonalisation's temporaries)
WORK_VECTORS = 4

#: fraction of the free memory used when no budget is given
DEFAULT_FRACTION = 0.5

_GIB = float(1 << 30)


class BasisMemoryError(MemoryError):
    """Not even one probe's Lanczos basis fits the memory budget."""


def available_memory(device: torch.device | str) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the host's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_memory_budget(device: torch.device | str) -> int:
    """:data:`DEFAULT_FRACTION` of :func:`available_memory` on ``device``."""
    return int(DEFAULT_FRACTION * available_memory(device))


def lanczos_bytes(dim: int, num_steps: int, probes: int, dtype: torch.dtype, reorthogonalize: bool = True) -> int:
    """Bytes of ``probes`` Lanczos runs of ``num_steps`` steps in dimension ``dim``: basis plus work vectors."""
    keep = min(num_steps, dim) if reorthogonalize else 2
    itemsize = torch.empty((), dtype=dtype).element_size()
    return (keep + WORK_VECTORS) * probes * dim * itemsize


@dataclass(frozen=True)
class BasisPlan:
    """Where and how a batch of Lanczos runs keeps its basis.

    Attributes:
        probe_chunk: probes run side by side (each chunk is its own pass of ``m`` steps).
        dtype: the basis dtype.
        device: where the basis lives (the operator's device, or the host when offloaded).
        pinned: the host basis is in pinned (page-locked) memory.
        nbytes: bytes one chunk needs (:func:`lanczos_bytes`).
        budget: the budget it was planned for.
    """

    probe_chunk: int
    dtype: torch.dtype
    device: torch.device
    pinned: bool
    nbytes: int
    budget: int

    @property
    def offloaded(self) -> bool:
        """The basis lives on the host while the operator runs on a GPU."""
        return self.pinned

    def describe(self) -> str:
        """One line: chunk, dtype, place, memory."""
        where = "pinned host memory" if self.pinned else str(self.device)
        return (f"{self.probe_chunk} probe(s) at a time, {str(self.dtype).replace('torch.', '')} basis in {where}, "
                f"{self.nbytes / _GIB:.3g} GiB of {self.budget / _GIB:.3g} GiB")


def plan_basis(dim: int, num_steps: int, num_probes: int, device: torch.device | str = "cpu", *,
               dtype: torch.dtype | None = None, memory_budget: int | None = None, probe_chunk: int | None = None,
               offload: bool = True, host_budget: int | None = None, reorthogonalize: bool = True) -> BasisPlan:
    """Choose probe chunk, basis dtype and place for ``num_probes`` Lanczos runs.

    Args:
        dim: the operator's dimension ``n``.
        num_steps: Lanczos steps ``m`` (clipped to ``n``).
        num_probes: probes ``n_v``.
        device: the operator's device.
        dtype: the basis dtype; None tries float64, then float32.
        memory_budget: bytes on ``device`` (default :func:`default_memory_budget`).
        probe_chunk: probes at a time; None for as many as fit.
        offload: on a GPU, allow the basis in pinned host memory when the device cannot hold it.
        host_budget: bytes of host memory for an offloaded basis (default
            :func:`default_memory_budget` of the host).
        reorthogonalize: full reorthogonalisation keeps all ``m`` vectors; without it two.

    Raises:
        BasisMemoryError: not even one probe fits; the message names the knobs.
        ValueError: ``probe_chunk`` or ``memory_budget`` out of range.
    """
    device = torch.device(device)
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    if probe_chunk is not None and probe_chunk < 1:
        raise ValueError(f"probe_chunk must be >= 1, got {probe_chunk}")
    if memory_budget is not None and memory_budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
    budget = default_memory_budget(device) if memory_budget is None else int(memory_budget)
    dtypes = [dtype] if dtype is not None else [torch.float64, torch.float32]
    places = [(device, budget, False)]
    if offload and device.type == "cuda":
        places.append((torch.device("cpu"), default_memory_budget("cpu") if host_budget is None else int(host_budget),
                       True))
    for where, room, pinned in places:
        for dt in dtypes:
            one = lanczos_bytes(dim, num_steps, 1, dt, reorthogonalize)
            fits = room // one
            chunk = min(num_probes, probe_chunk or num_probes, fits)
            if chunk >= 1 and (probe_chunk is None or chunk == min(probe_chunk, num_probes)):
                return BasisPlan(chunk, dt, where, pinned, lanczos_bytes(dim, num_steps, chunk, dt, reorthogonalize),
                                 room)
    smallest = lanczos_bytes(dim, num_steps, probe_chunk or 1, dtypes[-1], reorthogonalize)
    raise BasisMemoryError(
        f"a Lanczos basis of {probe_chunk or 1} probe(s) × {min(num_steps, dim)} steps × {dim:,} dimensions needs "
        f"{smallest / _GIB:.3g} GiB in {str(dtypes[-1]).replace('torch.', '')}, more than the budget "
        f"({budget / _GIB:.3g} GiB on {device}). Raise memory_budget=, lower num_steps=, "
        + ("lower probe_chunk=, " if probe_chunk and probe_chunk > 1 else "")
        + ("allow basis_dtype=None (float32 fallback), " if dtype == torch.float64 else "")
        + ("allow offload=True, " if device.type == "cuda" and not offload else "")
        + "or split the parameters into smaller blocks.")


__all__ = ["BasisPlan", "BasisMemoryError", "plan_basis", "lanczos_bytes", "available_memory",
           "default_memory_budget", "WORK_VECTORS", "DEFAULT_FRACTION"]
