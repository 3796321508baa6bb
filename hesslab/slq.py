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

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hesslab.blocks import Block, resolve_blocks
from hesslab.checkpoint import Checkpoint
from hesslab.hvp import HessianOperator
from hesslab.lanczos import LanczosProcess, LanczosResult
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
    basis_dtype: torch.dtype = torch.float64,
    reorthogonalize: bool = True,
    probe_chunk: int | None = None,
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature estimate of an operator's spectral density.

    Args:
        op: an operator with ``dim``, ``dtype``, ``device`` and batched ``matvec``
            (e.g. :class:`~hesslab.HessianOperator`), or a dense symmetric matrix.
        num_steps: Lanczos steps ``m`` per probe (clipped to ``dim``); the paper uses 100.
        num_probes: probe vectors ``n_v``; the paper uses 10.
        seed: seed of the Gaussian probes.
        basis_dtype: dtype of the Lanczos vectors (float64 even for a float32 model).
        reorthogonalize: full reorthogonalisation (removes ghost eigenvalues).
        probe_chunk: probes per batched Lanczos run (memory ``m·chunk·dim`` numbers);
            default all at once.
        checkpoint: where finished probe chunks are saved and, on the next call, resumed
            from (:mod:`hesslab.checkpoint`); it must belong to this operator and these
            arguments (:func:`hesslab.storage.cached.slq` keys one on disk).
        progress: progress bar over Lanczos steps.

    Returns:
        A :class:`SpectralDensity` with ``num_probes`` rows of Ritz nodes and weights.
    """
    op = as_operator(op)
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    chunk = probe_chunk or num_probes
    results: list[LanczosResult] = []
    wall = 0.0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        results = [LanczosResult(*(saved.arrays[f] for f in _RESULT_FIELDS))]
        wall = float(saved.meta.get("wall_time", 0.0))
    done = sum(len(r.steps) for r in results)
    v0 = probe_vectors(op.dim, num_probes, seed, basis_dtype, op.device)
    steps = min(num_steps, op.dim)
    bar = tqdm(total=steps * -(-(num_probes - done) // chunk), desc="SLQ", disable=not progress, leave=False)
    matvec = matvec_in(op, basis_dtype)
    floor = NOISE_FACTOR * operator_noise(op, seed, basis_dtype) if done < num_probes else 0.0
    for s in range(done, num_probes, chunk):
        start = time.perf_counter()
        proc = LanczosProcess(v0[s : s + chunk], num_steps, reorthogonalize=reorthogonalize,
                              operator_dtype=op.dtype, noise_floor=floor)
        while not proc.done:
            proc.advance(matvec(proc.query()))
            bar.update()
        results.append(proc.result())
        wall += time.perf_counter() - start
        if checkpoint is not None:
            checkpoint.save(vars(_merge(results)), {"wall_time": wall}, finished=s + chunk >= num_probes)
    bar.close()
    merged = _merge(results)
    return _density(merged, op.dim, seed=seed, num_steps=num_steps, reorthogonalize=reorthogonalize,
                    wall_time=wall)


def block_seed(seed: int, index: int) -> int:
    """An independent probe seed for the block at ``index``."""
    return int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])


def _group_blocks(blocks: list[Block], dims: dict, steps: int, probes: int, itemsize: int,
                  budget: int, max_blocks: int | None) -> list[list[Block]]:
    """Split blocks into groups whose Lanczos bases (``m·k·n_b`` numbers) fit in ``budget`` bytes."""
    groups, current, used = [], [], 0
    for b in blocks:
        need = min(steps, dims[b.name]) * probes * dims[b.name] * itemsize
        if current and (used + need > budget or (max_blocks and len(current) >= max_blocks)):
            groups.append(current)
            current, used = [], 0
        current.append(b)
        used += need
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
    basis_dtype: torch.dtype = torch.float64,
    basis_memory_budget: int = 4 << 30,
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
    probe's product from it.

    Args:
        model, loss_fn, data: as for :class:`~hesslab.HessianOperator`.
        blocks: ``None`` (one block per parameter tensor), a preset name, a list of
            parameter names or a mapping (see :mod:`hesslab.blocks`).
        num_steps: Lanczos steps per probe (clipped to each block's dimension).
        num_probes: probe vectors per block (independent per block).
        seed: base seed; block ``i`` uses a seed derived from ``(seed, i)``.
        operator: an existing operator to reuse (its graphs too); else one is built
            over the blocks' parameters with ``operator_kwargs`` (``method``,
            ``batchnorm``, ``graph_memory_budget``, ``batch_size_fn``).
        basis_dtype: dtype of the Lanczos vectors.
        basis_memory_budget: bytes of Lanczos bases held at once; blocks are
            processed in groups that fit.
        reorthogonalize: full reorthogonalisation.
        checkpoint: where finished groups of blocks are saved and, on the next call,
            resumed from (:mod:`hesslab.checkpoint`); it must belong to this model, loss,
            data, blocks and these arguments (:func:`hesslab.storage.cached.blockwise_slq`
            keys one on disk).
        resume_chunk: with a checkpoint, at most this many blocks per group (the
            checkpoint granularity; retained graphs make extra groups cheap).
        progress: progress bar over Lanczos steps.

    Returns:
        ``{block_name: SpectralDensity}`` in block order.
    """
    operator, resolved = blockwise_operator(model, loss_fn, data, blocks, operator, **operator_kwargs)
    order = [b.name for b in resolved]
    dims = {b.name: operator.block_dim(b) for b in resolved}
    seeds = {name: block_seed(seed, i) for i, name in enumerate(order)}
    results: dict[str, LanczosResult] = {}
    info = {"data_passes": 0, "wall_time": 0.0}
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        results = _unpack(saved.arrays, order)
        info.update({k: saved.meta.get(k, v) for k, v in info.items()})
    todo = [b for b in resolved if b.name not in results]
    itemsize = torch.empty((), dtype=basis_dtype).element_size()
    groups = _group_blocks(todo, dims, num_steps, num_probes, itemsize, basis_memory_budget,
                           resume_chunk if checkpoint is not None else None)
    total_steps = sum(max(min(num_steps, dims[b.name]) for b in g) for g in groups)
    bar = tqdm(total=total_steps, desc=f"blockwise SLQ ({len(todo)}/{len(resolved)} blocks to do)",
               disable=not progress)
    for group in groups:
        start = time.perf_counter()
        floors = _block_noise_floors(operator, group, dims, seeds, basis_dtype)
        info["data_passes"] += 1
        procs = [
            (b, LanczosProcess(probe_vectors(dims[b.name], num_probes, seeds[b.name], basis_dtype, operator.device),
                               num_steps, reorthogonalize=reorthogonalize, operator_dtype=operator.dtype,
                               noise_floor=floors[b.name]))
            for b in group
        ]
        while live := [(b, p) for b, p in procs if not p.done]:
            products = operator.block_products([(b, p.query().to(operator.dtype)) for b, p in live])
            info["data_passes"] += 1
            for (_, p), hv in zip(live, products):
                p.advance(hv)
            bar.update()
        results.update({b.name: p.result() for b, p in procs})
        info["wall_time"] += time.perf_counter() - start
        if checkpoint is not None:
            checkpoint.save(_pack(results, order), dict(info), finished=len(results) == len(order))
    bar.close()
    return {name: _density(results[name], dims[name], seed=seeds[name], num_steps=num_steps,
                           method=operator.resolved_method, **info)
            for name in order}


def _block_noise_floors(operator: HessianOperator, group: list[Block], dims: dict, seeds: dict,
                        basis_dtype: torch.dtype) -> dict[str, float]:
    """Breakdown floor (:data:`NOISE_FACTOR` × :func:`operator_noise`) of every block, from one pass over the data."""
    rows = {b.name: _noise_vectors(dims[b.name], seeds[b.name], basis_dtype, operator.device) for b in group}
    products = operator.block_products([(b, rows[b.name].to(operator.dtype)) for b in group])
    return {b.name: NOISE_FACTOR * _noise_from_products(rows[b.name], hv.to(basis_dtype))
            for b, hv in zip(group, products)}


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
