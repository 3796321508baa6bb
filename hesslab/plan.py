"""What a spectrum will cost, before it runs: Hessian-vector products, memory and time.

:func:`calibrate` times one gradient, one first-order graph and one Hessian-vector product
of the real model on (part of) one batch on this device, and the memory bandwidth of the
Lanczos reorthogonalisation. :func:`plan` turns that into the cost of
:func:`~hesslab.slq.slq` or :func:`~hesslab.slq.blockwise_slq` at given settings:

- **products**: Hessian-vector products, counted per vector and per pass over all the data;
- **basis memory**: the Lanczos bases held at once (:func:`hesslab.memory.plan_basis`);
- **peak memory**: parameters, one batch's graph (all batches' while they fit the graph
  budget), the bases and one set of product temporaries per vector in flight;
- **time**: graphs × graph time + products × product time, both scaled linearly from the
  calibration batch to each batch's size, plus the reorthogonalisation's memory traffic.

The estimates are first-order: they assume the cost of a batch grows linearly with its
examples (true once a model is large enough to keep the device busy) and ignore the
vectorised-product speed-up (so they err on the slow side for small models).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from hesslab.batching import default_batch_size
from hesslab.blocks import resolve_blocks
from hesslab.graphs import default_graph_budget
from hesslab.hvp import HessianOperator
from hesslab.measurement import measurement_mode
from hesslab.memory import BasisMemoryError, BasisPlan, default_memory_budget, lanczos_bytes, plan_basis

KINDS = ("blockwise_slq", "slq")
_GIB = float(1 << 30)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _head(batch, k: int):
    """The first ``k`` examples of every tensor in a (nested) batch."""
    if isinstance(batch, Tensor):
        return batch[:k] if batch.ndim else batch
    if isinstance(batch, Mapping):
        return type(batch)({key: _head(v, k) for key, v in batch.items()})
    if isinstance(batch, (tuple, list)):
        return type(batch)(_head(v, k) for v in batch)
    return batch


@dataclass(frozen=True)
class Calibration:
    """Costs measured on one model and device.

    Attributes:
        device: where they were measured.
        examples: examples in the calibration batch (the unit the times scale with).
        gradient_s: one gradient (forward + backward), seconds.
        graph_s: one first-order graph (forward + backward with ``create_graph``), seconds.
        product_s: one Hessian-vector product on a built graph, seconds.
        graph_bytes: bytes one calibration batch's graph keeps alive.
        bandwidth: bytes per second of the reorthogonalisation's inner products.
    """

    device: str
    examples: int
    gradient_s: float
    graph_s: float
    product_s: float
    graph_bytes: int
    bandwidth: float


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _bandwidth(device: torch.device, dtype: torch.dtype = torch.float64, nbytes: int = 64 << 20) -> float:
    """Bytes per second of a reorthogonalisation-shaped contraction (``[j, 1, n] · [1, n]``)."""
    n = nbytes // (16 * 8)
    basis = torch.randn(16, 1, n, dtype=dtype, device=device)
    w = torch.randn(1, n, dtype=dtype, device=device)
    seconds = _timed(lambda: torch.einsum("jk,jkn->kn", torch.einsum("jkn,kn->jk", basis, w), basis), device, 3)
    return 2 * basis.numel() * basis.element_size() / seconds


def calibrate(model: nn.Module, loss_fn: Callable, batch, *, params=None, examples: int | None = None,
              batchnorm: str = "eval", repeats: int = 2) -> Calibration:
    """Time one gradient, one first-order graph and one Hessian-vector product on ``batch``.

    Args:
        model: the network, as for :class:`~hesslab.HessianOperator`.
        loss_fn: ``loss_fn(outputs, targets)``, as for :class:`~hesslab.HessianOperator`.
        batch: one ``(inputs, targets)`` batch.
        params: the parameters differentiated (default all).
        examples: calibrate on the first ``examples`` examples only (large models on a
            slow device); default the whole batch.
        batchnorm: the operator's batch-norm mode.
        repeats: timings repeated after one untimed warm-up, the fastest kept.
    """
    sample = _head(batch, examples) if examples else batch
    op = HessianOperator(model, loss_fn, [sample], params=params, batchnorm=batchnorm, method="reverse",
                         check_data=False, graph_memory_budget=1 << 62, process_group=None)  # this device only
    device = op.device
    inputs, targets = sample
    count = default_batch_size(inputs, targets)

    def gradient():
        with measurement_mode(model, batchnorm):
            torch.autograd.grad(op._loss(*op._prepare(inputs, targets)), op.params, allow_unused=True)

    v = torch.randn(op.dim, dtype=op.dtype, device=device)
    gradient(), op.matvec(v)  # warm-up: first-call allocations and kernel selection are not timed
    gradient_s = _timed(gradient, device, repeats)
    graph_s = _timed(lambda: (op.clear_cache(), op.matvec(v)), device, repeats)
    product_s = _timed(lambda: op.matvec(v), device, repeats)
    graph_bytes = op.retained_bytes
    op.clear_cache()
    return Calibration(str(device), count, gradient_s, max(graph_s - product_s, 0.0), product_s, graph_bytes,
                       _bandwidth(device))


@dataclass
class CostPlan:
    """The predicted cost of one spectrum computation.

    Attributes:
        kind: ``"blockwise_slq"`` or ``"slq"``.
        dim: parameters measured (all blocks together).
        blocks: number of blocks (1 for ``slq``).
        num_steps: Lanczos steps per probe.
        num_probes: probe vectors (per block).
        batches: Hessian batches.
        examples: examples in all of them.
        products: Hessian-vector products (one vector over all the data counts once).
        passes: passes over the data (Lanczos steps of every group, and one per group for
            the breakdown floors).
        graphs: first-order graphs built (per batch).
        basis_bytes: Lanczos bases held at once (the largest group).
        peak_bytes: estimated peak memory.
        seconds: estimated wall time.
        basis: one line per distinct basis plan.
        calibration: the measurements it scales.
    """

    kind: str
    dim: int
    blocks: int
    num_steps: int
    num_probes: int
    batches: int
    examples: int
    products: int
    passes: int
    graphs: int
    basis_bytes: int
    peak_bytes: int
    seconds: float
    basis: list[str] = field(default_factory=list)
    calibration: Calibration | None = None

    def row(self) -> dict:
        """The plan as a flat dict (GiB, hours) for a table."""
        return {"kind": self.kind, "parameters": self.dim, "blocks": self.blocks, "steps": self.num_steps,
                "probes": self.num_probes, "batches": self.batches, "HVPs": self.products, "passes": self.passes,
                "basis GiB": self.basis_bytes / _GIB, "peak GiB": self.peak_bytes / _GIB,
                "hours": self.seconds / 3600, "basis": "; ".join(self.basis)}

    def as_dict(self) -> dict:
        """Everything, JSON-able."""
        out = asdict(self)
        out["calibration"] = asdict(self.calibration) if self.calibration else None
        return out

    def __str__(self) -> str:
        return (f"{self.kind}: {self.dim:,} parameters in {self.blocks} block(s), m={self.num_steps}, "
                f"n_v={self.num_probes}, {self.batches} batch(es): {self.products:,} HVPs, {self.graphs:,} graphs, "
                f"basis {self.basis_bytes / _GIB:.3g} GiB, peak {self.peak_bytes / _GIB:.3g} GiB, "
                f"about {_duration(self.seconds)}")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _basis(dim: int, num_steps: int, num_probes: int, device, dtype, budget: int) -> BasisPlan:
    """:func:`plan_basis`, or where nothing fits one float32 probe at a time (flagged by ``nbytes > budget``)."""
    try:
        return plan_basis(dim, num_steps, num_probes, device, dtype=dtype, memory_budget=budget)
    except BasisMemoryError:
        dt = dtype or torch.float32
        return BasisPlan(1, dt, torch.device(device), False, lanczos_bytes(dim, num_steps, 1, dt), budget)


def plan(model: nn.Module, loss_fn: Callable, data: Sequence, blocks=None, *, kind: str = "blockwise_slq",
         num_steps: int = 100, num_probes: int = 10, memory_budget: int | None = None,
         basis_dtype: torch.dtype | None = None, graph_memory_budget: int | None = None,
         calibration: Calibration | None = None, calibration_examples: int | None = None,
         batchnorm: str = "eval") -> CostPlan:
    """Predict the cost of :func:`~hesslab.slq.blockwise_slq` or :func:`~hesslab.slq.slq` before running it.

    Args:
        model: the network, as for the computation.
        loss_fn: ``loss_fn(outputs, targets)``, as for the computation.
        data: a sequence of ``(inputs, targets)`` batches, as for the computation.
        blocks: the blocks of ``blockwise_slq`` (ignored for ``slq``, which measures all parameters).
        kind: ``"blockwise_slq"`` or ``"slq"``.
        num_steps: Lanczos steps per probe, as for the computation.
        num_probes: random probes per block, as for the computation.
        memory_budget: bytes allowed for the Lanczos bases (default half the free memory).
        basis_dtype: the basis dtype, or ``None`` for the automatic choice, as for the computation.
        graph_memory_budget: the operator's retained-graph budget (default as the operator's).
        calibration: reuse a :func:`calibrate` result; else one is measured on ``data[0]``.
        calibration_examples: calibrate on this many examples of ``data[0]``.
        batchnorm: the operator's batch-norm mode.

    A block whose basis does not fit ``memory_budget`` even for one float32 probe is priced
    that way and flagged in :attr:`CostPlan.basis` ("DOES NOT FIT"): the run itself would
    raise :class:`~hesslab.memory.BasisMemoryError`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    data = list(data)
    if not data:
        raise ValueError("data has no batches")
    params = [p for p in model.parameters() if p.requires_grad]
    device, dtype = params[0].device, params[0].dtype
    if kind == "slq":
        dims = {"all": sum(p.numel() for p in params)}
        chosen = None
    else:
        resolved = resolve_blocks(model, blocks)
        shapes = {n: p.shape for n, p in model.named_parameters()}
        dims = {b.name: b.dim(shapes) for b in resolved}
        chosen = sorted({n for b in resolved for n in b.params})
    cal = calibration or calibrate(model, loss_fn, data[0], params=chosen, examples=calibration_examples,
                                   batchnorm=batchnorm)
    sizes = [default_batch_size(*batch) for batch in data]
    scale = sum(sizes) / cal.examples
    budget = default_memory_budget(device) if memory_budget is None else memory_budget
    plans = {name: _basis(n, num_steps, num_probes, device, basis_dtype, budget) for name, n in dims.items()}
    too_large = [name for name, bp in plans.items() if bp.nbytes > bp.budget]
    # groups as blockwise_slq forms them: units of probes, packed while they fit the budget
    groups, used, current = [], 0, []
    for name, bp in plans.items():
        for s in range(0, num_probes, bp.probe_chunk):
            k = min(bp.probe_chunk, num_probes - s)
            need = lanczos_bytes(dims[name], num_steps, k, bp.dtype)
            if current and used + need > budget:
                groups.append((current, used))
                current, used = [], 0
            current.append((name, k))
            used += need
    groups.append((current, used))
    steps_of = {name: min(num_steps, n) for name, n in dims.items()}
    floor_passes = 1 if kind == "slq" else len(groups)  # the breakdown floors' products
    passes = sum(max(steps_of[name] for name, _ in g) for g, _ in groups) + floor_passes
    products = sum(steps_of[name] * num_probes for name in dims) + 3 * len(dims)
    graph_total = cal.graph_bytes * scale
    graph_room = default_graph_budget(device) if graph_memory_budget is None else graph_memory_budget
    retained = graph_total <= graph_room
    graphs = len(data) if retained else passes * len(data)
    reorth_bytes = sum(2 * steps_of[name] ** 2 * dims[name] * plans[name].dtype.itemsize * num_probes
                       for name in dims)
    seconds = (graphs * cal.graph_s * scale / len(data) + products * cal.product_s * scale
               + reorth_bytes / cal.bandwidth)
    param_bytes = sum(p.numel() for p in params) * dtype.itemsize
    in_flight = max(sum(k for _, k in g) for g, _ in groups)
    one_graph = cal.graph_bytes * max(sizes) / cal.examples
    peak = (param_bytes + (graph_total if retained else one_graph) + max(u for _, u in groups)
            + 2 * in_flight * param_bytes)
    lines = sorted({f"{bp.probe_chunk} probe(s) at a time, {str(bp.dtype).replace('torch.', '')} basis"
                    + (" in pinned host memory" if bp.pinned else "") for bp in plans.values()})
    if too_large:
        need = max(plans[n].nbytes for n in too_large)
        lines.append(f"DOES NOT FIT: {len(too_large)} block(s) need up to {need / _GIB:.3g} GiB for one float32 probe, "
                     f"budget {budget / _GIB:.3g} GiB")
    return CostPlan(kind, sum(dims.values()), len(dims), num_steps, num_probes, len(data), sum(sizes), products,
                    passes, graphs, max(u for _, u in groups), int(peak), seconds, lines, cal)


__all__ = ["Calibration", "CostPlan", "calibrate", "plan", "KINDS"]
