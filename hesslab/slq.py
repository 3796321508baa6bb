"""Stochastic Lanczos quadrature on Hessian operators: full and blockwise spectra.

:func:`slq` runs batched Lanczos on any symmetric operator (a
:class:`~hesslab.HessianOperator`, a block of one, or a dense matrix).
:func:`blockwise_slq` estimates the spectrum of every block ``H_bb`` at once: per
Lanczos step it builds each data batch's first-order graph once and serves every
block and every probe from it, where the paper's code redoes a forward and a
first-order backward per block, per probe, per batch and per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hesslab.blocks import Block, resolve_blocks
from hesslab.checkpoint import Checkpoint
from hesslab.hvp import HessianOperator
from hesslab.lanczos import LanczosProcess, LanczosResult
from hesslab.distributed import agreed_budget, agreed_host_budget
from hesslab.memory import BasisPlan, default_memory_budget, lanczos_bytes, plan_basis
from hesslab.operators import (NOISE_FACTOR, _noise_from_products, _noise_vectors, as_operator, matvec_in,
                               operator_noise, probe_vectors)
from hesslab.spectra import SpectralDensity


def _density(result: LanczosResult, dim: int, **info) -> SpectralDensity:
    nodes, weights = result.ritz()
    info.update(steps=result.steps.tolist(), breakdowns=int(result.breakdown.sum()),
                alpha=result.alpha, beta=result.beta)
    return SpectralDensity(nodes, weights, dim, info=info)


def _merge(results: list[LanczosResult]) -> LanczosResult:
    return LanczosResult(*(np.concatenate([getattr(r, f) for r in results]) for f in _RESULT_FIELDS))


def slq(
    op,
    num_steps: int = 100,
    num_probes: int = 10,
    seed: int = 0,
    *,
    basis_dtype: torch.dtype | None = None,
    memory_budget: int | None = None,
    probe_chunk: int | None = None,
    offload: bool = True,
    reorthogonalize: bool = True,
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature estimate of an operator's spectral density.

    Args:
        op: an operator with ``dim``, ``dtype``, ``device`` and batched ``matvec``
            (e.g. :class:`~hesslab.HessianOperator`), or a dense symmetric matrix.
        num_steps: Lanczos steps ``m`` per probe (clipped to ``dim``); the paper uses 100.
        num_probes: probe vectors ``n_v``; the paper uses 10.
        seed: seed of the Gaussian probes (probe ``i`` is the same whatever the chunking).
        basis_dtype: dtype of the Lanczos vectors; None for float64 where it fits the
            budget, else float32 (:func:`hesslab.memory.plan_basis`).
        memory_budget: bytes the Lanczos bases may use on the operator's device (default
            half the free memory); probes run in chunks that fit.
        probe_chunk: probes per batched Lanczos run; default as many as fit.
        offload: on a GPU, keep a basis that does not fit in pinned host memory.
        reorthogonalize: full reorthogonalisation (removes ghost eigenvalues).
        checkpoint: where finished probe chunks are saved and, on the next call, resumed
            from (:mod:`hesslab.checkpoint`); it must belong to this operator and these
            arguments (:func:`hesslab.storage.cached.slq` keys one on disk).
        progress: progress bar over Lanczos steps.

    Returns:
        A :class:`SpectralDensity` with ``num_probes`` rows of Ritz nodes and weights; its
        ``info`` records the basis plan (``basis_dtype``, ``probe_chunk``, ``offloaded``).

    Raises:
        BasisMemoryError: not even one probe fits ``memory_budget``.
    """
    op = as_operator(op)
    plan = plan_basis(op.dim, num_steps, num_probes, op.device, dtype=basis_dtype,
                      memory_budget=agreed_budget(op, memory_budget, default_memory_budget),
                      host_budget=agreed_host_budget(op, default_memory_budget),
                      probe_chunk=probe_chunk, offload=offload, reorthogonalize=reorthogonalize)
    chunk = plan.probe_chunk
    results: list[LanczosResult] = []
    wall = 0.0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        results = [LanczosResult(*(saved.arrays[f] for f in _RESULT_FIELDS))]
        wall = float(saved.meta.get("wall_time", 0.0))
    done = sum(len(r.steps) for r in results)
    steps = min(num_steps, op.dim)
    bar = tqdm(total=steps * -(-(num_probes - done) // chunk), desc="SLQ", disable=not progress, leave=False)
    matvec = matvec_in(op, plan.dtype)
    floor = NOISE_FACTOR * operator_noise(op, seed, plan.dtype) if done < num_probes else 0.0
    for s in range(done, num_probes, chunk):
        start = time.perf_counter()
        v0 = probe_vectors(op.dim, min(chunk, num_probes - s), seed, plan.dtype, plan.device, start=s)
        proc = LanczosProcess(v0, num_steps, reorthogonalize=reorthogonalize, operator_dtype=op.dtype,
                              noise_floor=floor, pin_memory=plan.pinned)
        del v0
        while not proc.done:
            proc.advance(matvec(proc.query()))
            bar.update()
        results.append(proc.result())
        del proc
        wall += time.perf_counter() - start
        if checkpoint is not None:
            checkpoint.save(vars(_merge(results)), {"wall_time": wall}, finished=s + chunk >= num_probes)
    bar.close()
    merged = _merge(results)
    return _density(merged, op.dim, seed=seed, num_steps=num_steps, reorthogonalize=reorthogonalize,
                    wall_time=wall, **_plan_info(plan))


def _plan_info(plan: BasisPlan) -> dict:
    return {"basis_dtype": str(plan.dtype).replace("torch.", ""), "probe_chunk": plan.probe_chunk,
            "offloaded": plan.offloaded}


def block_seed(seed: int, name: str) -> int:
    """An independent probe seed for the block called ``name``, whichever blocks run beside it."""
    return int(np.random.SeedSequence([int(seed), *str(name).encode()]).generate_state(1)[0])


@dataclass(frozen=True)
class _Unit:
    """Probes ``start … stop − 1`` of one block: the unit blocks are grouped and checkpointed by."""

    block: Block
    start: int
    stop: int
    plan: BasisPlan


def _group_units(units: list[_Unit], dims: dict, num_steps: int, reorthogonalize: bool,
                 max_blocks: int | None) -> list[list[_Unit]]:
    """Split units into groups whose bases fit their budgets (device and host counted apart)."""
    groups, current, used = [], [], {}
    for u in units:
        place = u.plan.device.type
        need = lanczos_bytes(dims[u.block.name], num_steps, u.stop - u.start, u.plan.dtype, reorthogonalize)
        names = {c.block.name for c in current} | {u.block.name}
        if current and (used.get(place, 0) + need > u.plan.budget or (max_blocks and len(names) > max_blocks)):
            groups.append(current)
            current, used = [], {}
        current.append(u)
        used[place] = used.get(place, 0) + need
    return groups + ([current] if current else [])


_RESULT_FIELDS = ("alpha", "beta", "steps", "breakdown")


def _pack(results: dict[str, LanczosResult], order: list[str]) -> dict[str, np.ndarray]:
    """Flatten Lanczos results into arrays named ``"<block index>.<field>"`` for a checkpoint."""
    return {f"{order.index(name)}.{f}": getattr(r, f) for name, r in results.items() for f in _RESULT_FIELDS}


def _unpack(arrays, order: list[str]) -> dict[str, LanczosResult]:
    done = {int(k.split(".")[0]) for k in arrays.keys()}
    return {order[i]: LanczosResult(*(arrays[f"{i}.{f}"] for f in _RESULT_FIELDS)) for i in sorted(done)}


def blockwise_operator(model: nn.Module, loss_fn: Callable, data: Iterable, blocks=None,
                       operator: HessianOperator | None = None, **operator_kwargs) -> tuple[HessianOperator, list[Block]]:
    """The operator :func:`blockwise_slq` runs on, and its resolved blocks.

    ``operator`` is returned as it is (no options allowed then); otherwise a
    :class:`~hesslab.HessianOperator` is built over the blocks' parameters with
    ``operator_kwargs`` (``method``, ``batchnorm``, ``graph_memory_budget``, ``batch_size_fn``).
    """
    resolved = resolve_blocks(model, blocks, operator.names if operator else None)
    if operator is None:
        names = [n for n, _ in model.named_parameters() if any(n in b.params for b in resolved)]
        operator = HessianOperator(model, loss_fn, data, params=names, **operator_kwargs)
    elif operator_kwargs:
        raise TypeError(f"pass either operator or operator options, not both: {sorted(operator_kwargs)}")
    return operator, resolved


def blockwise_slq(
    model: nn.Module,
    loss_fn: Callable,
    data: Iterable,
    blocks=None,
    num_steps: int = 100,
    num_probes: int = 10,
    seed: int = 0,
    *,
    operator: HessianOperator | None = None,
    basis_dtype: torch.dtype | None = None,
    memory_budget: int | None = None,
    offload: bool = True,
    reorthogonalize: bool = True,
    checkpoint: Checkpoint | None = None,
    resume_chunk: int = 8,
    progress: bool = True,
    **operator_kwargs,
) -> dict[str, SpectralDensity]:
    """Spectral densities of every diagonal block ``H_bb`` of the Hessian.

    All blocks advance together: each Lanczos step makes one pass over ``data``,
    building each batch's first-order graph once (or reusing it while it fits the
    operator's ``graph_memory_budget``) and answering every block's and every
    probe's product from it. When the bases of all blocks do not fit
    ``memory_budget``, blocks (and, for a block too large on its own, its probes) run in
    groups that do (:mod:`hesslab.memory`); the result does not depend on the grouping.

    Args:
        model, loss_fn, data: as for :class:`~hesslab.HessianOperator`.
        blocks: ``None`` (one block per parameter tensor), a preset name, a list of
            parameter names or a mapping (see :mod:`hesslab.blocks`).
        num_steps: Lanczos steps per probe (clipped to each block's dimension).
        num_probes: probe vectors per block (independent per block).
        seed: base seed; each block's probes are seeded by ``(seed, block name)``.
        operator: an existing operator to reuse (its graphs too); else one is built
            over the blocks' parameters with ``operator_kwargs`` (``method``,
            ``batchnorm``, ``graph_memory_budget``, ``batch_size_fn``).
        basis_dtype: dtype of the Lanczos vectors; None for float64 where one probe of
            the block fits the budget, else float32.
        memory_budget: bytes of Lanczos bases held at once on the operator's device
            (default half the free memory).
        offload: on a GPU, keep a block's basis that does not fit in pinned host memory.
        reorthogonalize: full reorthogonalisation.
        checkpoint: where finished blocks are saved and, on the next call, resumed from
            (:mod:`hesslab.checkpoint`); it must belong to this model, loss, data, blocks
            and these arguments (:func:`hesslab.storage.cached.blockwise_slq` keys one on disk).
        resume_chunk: with a checkpoint, at most this many blocks per group (the
            checkpoint granularity; retained graphs make extra groups cheap).
        progress: progress bar over Lanczos steps.

    Returns:
        ``{block_name: SpectralDensity}`` in block order.

    Raises:
        BasisMemoryError: not even one probe of some block fits ``memory_budget``.
    """
    operator, resolved = blockwise_operator(model, loss_fn, data, blocks, operator, **operator_kwargs)
    order = [b.name for b in resolved]
    dims = {b.name: operator.block_dim(b) for b in resolved}
    seeds = {name: block_seed(seed, name) for name in order}
    results: dict[str, LanczosResult] = {}
    info = {"data_passes": 0, "wall_time": 0.0}
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        results = _unpack(saved.arrays, order)
        info.update({k: saved.meta.get(k, v) for k, v in info.items()})
    budget = agreed_budget(operator, memory_budget, default_memory_budget)  # the same on every rank
    host = agreed_host_budget(operator, default_memory_budget)
    plans = {b.name: plan_basis(dims[b.name], num_steps, num_probes, operator.device, dtype=basis_dtype,
                                memory_budget=budget, host_budget=host, offload=offload,
                                reorthogonalize=reorthogonalize)
             for b in resolved}
    todo = [b for b in resolved if b.name not in results]
    units = [_Unit(b, s, min(s + plans[b.name].probe_chunk, num_probes), plans[b.name])
             for b in todo for s in range(0, num_probes, plans[b.name].probe_chunk)]
    groups = _group_units(units, dims, num_steps, reorthogonalize, resume_chunk if checkpoint is not None else None)
    total_steps = sum(max(min(num_steps, dims[u.block.name]) for u in g) for g in groups)
    bar = tqdm(total=total_steps, desc=f"blockwise SLQ ({len(todo)}/{len(resolved)} blocks to do)",
               disable=not progress)
    floors: dict[str, float] = {}
    parts: dict[str, list[LanczosResult]] = {}
    for group in groups:
        start = time.perf_counter()
        new = list({u.block.name: u.block for u in group if u.block.name not in floors}.values())
        if new:
            floors.update(_block_noise_floors(operator, new, dims, seeds, {b.name: plans[b.name].dtype for b in new}))
            info["data_passes"] += 1
        procs = [(u, LanczosProcess(probe_vectors(dims[u.block.name], u.stop - u.start, seeds[u.block.name],
                                                  u.plan.dtype, u.plan.device, start=u.start),
                                    num_steps, reorthogonalize=reorthogonalize, operator_dtype=operator.dtype,
                                    noise_floor=floors[u.block.name], pin_memory=u.plan.pinned))
                 for u in group]
        info["data_passes"] += _run_group(operator, [(u.block, p) for u, p in procs], bar)
        for u, result in [(u, p.result()) for u, p in procs]:
            parts.setdefault(u.block.name, []).append(result)
        del procs  # no reference to a basis may outlive its group: the next group's bases take its place
        finished = {name for name, rs in parts.items() if sum(len(r.steps) for r in rs) == num_probes}
        results.update({name: _merge(parts.pop(name)) for name in finished})
        info["wall_time"] += time.perf_counter() - start
        if checkpoint is not None and finished:
            checkpoint.save(_pack(results, order), dict(info), finished=len(results) == len(order))
    bar.close()
    return {name: _density(results[name], dims[name], seed=seeds[name], num_steps=num_steps,
                           method=operator.resolved_method, **_plan_info(plans[name]), **info)
            for name in order}


def _run_group(operator: HessianOperator, procs: list[tuple[Block, LanczosProcess]], bar) -> int:
    """Advance a group's ``(block, process)`` pairs until all are done, one pass over the data per step; returns the passes."""
    passes = 0
    while live := [(b, p) for b, p in procs if not p.done]:
        products = operator.block_products([(b, p.query().to(operator.device, operator.dtype)) for b, p in live])
        passes += 1
        for (_, p), hv in zip(live, products):
            p.advance(hv)
        bar.update()
    return passes


def _block_noise_floors(operator: HessianOperator, blocks: list[Block], dims: dict, seeds: dict,
                        dtypes: dict) -> dict[str, float]:
    """Breakdown floor (:data:`NOISE_FACTOR` × :func:`operator_noise`) of every block, from one pass over the data."""
    rows = {b.name: _noise_vectors(dims[b.name], seeds[b.name], dtypes[b.name], operator.device) for b in blocks}
    products = operator.block_products([(b, rows[b.name].to(operator.dtype)) for b in blocks])
    return {b.name: NOISE_FACTOR * _noise_from_products(rows[b.name], hv.to(dtypes[b.name]))
            for b, hv in zip(blocks, products)}


def exact_block_eigenvalues(operator: HessianOperator, blocks=None, max_dim: int = 5000) -> dict[str, np.ndarray]:
    """Exact eigenvalues of each block ``H_bb`` by densifying it (validation, small blocks).

    Returns:
        ``{block_name: ascending eigenvalues [dim_b]}``; blocks larger than ``max_dim`` are skipped.
    """
    out = {}
    for block in resolve_blocks(operator.model, blocks, operator.names):
        sub = operator.restrict(block)
        if sub.dim <= max_dim:
            out[block.name] = torch.linalg.eigvalsh(sub.dense(max_dim).double()).cpu().numpy()
    return out
