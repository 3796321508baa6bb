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
from torch import Tensor, nn
from tqdm.auto import tqdm

from .blocks import Block, resolve_blocks
from .cache import open_cache
from .hvp import HessianOperator
from .lanczos import LanczosProcess, LanczosResult
from .spectra import SpectralDensity


class MatrixOperator:
    """A dense symmetric matrix ``[n, n]`` as an operator (for tests and quadratic models)."""

    def __init__(self, matrix: Tensor):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.dim = matrix.shape[0]
        self.dtype, self.device = matrix.dtype, matrix.device

    def matvec(self, v: Tensor) -> Tensor:
        """``A v`` for ``[n]`` or ``[k, n]``."""
        return v @ self.matrix.T

    __matmul__ = matvec


def _as_operator(op):
    return MatrixOperator(op) if isinstance(op, Tensor) else op


def probe_vectors(dim: int, num: int, seed: int, dtype=torch.float64, device="cpu") -> Tensor:
    """Gaussian probe vectors ``[num, dim]``, identical on every device for a given seed."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(num, dim, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def _density(result: LanczosResult, dim: int, **info) -> SpectralDensity:
    nodes, weights = result.ritz()
    info.update(steps=result.steps.tolist(), breakdowns=int(result.breakdown.sum()),
                alpha=result.alpha, beta=result.beta)
    return SpectralDensity(nodes, weights, dim, info=info)


def _matvec_in(op, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    """Apply ``op`` in its own dtype to vectors kept in ``dtype`` (e.g. float64 Lanczos on a float32 model)."""
    return lambda q: op.matvec(q.to(op.dtype)).to(dtype)


def _batch_size_rule(operator: HessianOperator):
    """An operator's ``batch_size_fn`` for cache keys: None for hesslab's default rule."""
    from . import hvp

    fn = getattr(operator, "batch_size_fn", None)
    return None if fn is getattr(hvp, "_default_batch_size", None) else fn


def operator_key(op, kind: str = "slq", *, cache_key: dict | None = None, **arguments) -> dict:
    """The cache key of computation ``kind`` on ``op`` with ``arguments`` (:func:`~hesslab.fingerprint.computation_key`).

    A :class:`~hesslab.HessianOperator` (or a block of one) is keyed by its model's
    values and structure, its loss function, ``batch_size_fn``, data, selected
    parameters (and block), ``method``, ``batchnorm`` and dtype; a
    :class:`MatrixOperator` by its matrix; any other operator only with
    ``cache_key``. ``cache_key`` is added to the key and stands in for a loss
    function that cannot be identified (a lambda, partial, closure, bound method).

    Raises:
        UncacheableError: an unidentifiable loss function or operator type without ``cache_key``.
    """
    from .fingerprint import UncacheableError, computation_key
    from .hvp import BlockHessianOperator

    block = None
    if isinstance(op, BlockHessianOperator):
        block = [op.block.name, [[p.param, repr(p.index)] for p in op.block.parts]]
        op = op.parent
    if isinstance(op, HessianOperator):
        return computation_key(kind, model=op.model, loss_fn=op.loss_fn, data=op.data,
                               batch_size_fn=_batch_size_rule(op), cache_key=cache_key, params=op.names,
                               block=block, method=op.method, batchnorm=op.batchnorm, dtype=str(op.dtype),
                               **arguments)
    if isinstance(op, MatrixOperator):
        return computation_key(kind, cache_key=cache_key, matrix=op.matrix, **arguments)
    if cache_key is None:
        raise UncacheableError(f"cannot derive a cache key for {type(op).__name__}; pass cache_key={{...}} "
                               "describing it")
    return computation_key(kind, cache_key=cache_key, operator=f"{type(op).__module__}:{type(op).__qualname__}",
                           **arguments)


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
    cache=None,
    cache_key: dict | None = None,
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
        cache: ``None``/``False``, ``True`` (default :class:`~hesslab.cache.ResultCache`),
            a folder or a ``ResultCache``: store the result keyed by
            :func:`operator_key` (:func:`hesslab.fingerprint.computation_key`): the
            model's parameter and buffer values and its structure (module classes,
            their source, configuration attributes, a Hugging Face config), the loss
            function's and ``batch_size_fn``'s identity (module-level functions by name
            and source, ``nn.Module`` losses by structure), the data, the selected
            parameters and block, ``method``, ``batchnorm``, dtype, the arguments here
            that change the result and hesslab's version of SLQ; a dense matrix by its
            values. Each finished probe chunk is checkpointed, so an interrupted run
            resumes.
        cache_key: a str-keyed dict added to the key; required (describing them) for a
            loss or ``batch_size_fn`` that cannot be identified (lambda, partial,
            closure, bound method, callable object) and for operators other than
            Hessian operators and matrices, else :class:`~hesslab.fingerprint.UncacheableError`.
        progress: progress bar over Lanczos steps.

    Returns:
        A :class:`SpectralDensity` with ``num_probes`` rows of Ritz nodes and weights.
    """
    op = _as_operator(op)
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    chunk = probe_chunk or num_probes
    store = open_cache(cache)
    results: list[LanczosResult] = []
    wall = 0.0
    if store is not None:
        key = operator_key(op, cache_key=cache_key, num_steps=num_steps, num_probes=num_probes, seed=seed,
                           basis_dtype=str(basis_dtype), reorthogonalize=reorthogonalize, probe_chunk=chunk)
        hit = store.load("slq", key) or store.load_partial("slq", key)
        if hit is not None:
            results = [LanczosResult(*(hit.arrays[f] for f in _RESULT_FIELDS))]
            wall = float(hit.meta.get("wall_time", 0.0))
    done = sum(len(r.steps) for r in results)
    v0 = probe_vectors(op.dim, num_probes, seed, basis_dtype, op.device)
    steps = min(num_steps, op.dim)
    bar = tqdm(total=steps * -(-(num_probes - done) // chunk), desc="SLQ", disable=not progress, leave=False)
    matvec = _matvec_in(op, basis_dtype)
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
        if store is not None and s + chunk < num_probes:
            store.save_partial("slq", key, vars(_merge(results)), meta={"wall_time": wall})
    bar.close()
    merged = _merge(results)
    if store is not None and done < num_probes:
        store.save("slq", key, vars(merged), meta={"wall_time": wall}, wall_time=wall)
    return _density(merged, op.dim, seed=seed, num_steps=num_steps, reorthogonalize=reorthogonalize,
                    wall_time=wall)


#: safety factor between an operator's measured round-off and the ``β`` that counts as breakdown
NOISE_FACTOR = 10.0


def _noise_seed(seed: int) -> int:
    """A seed for the round-off probes, independent of every probe and block seed."""
    return int(np.random.SeedSequence([int(seed), 0x6E6F6973]).generate_state(1)[0])


def _noise_vectors(dim: int, seed: int, dtype, device) -> Tensor:
    """``[3, dim]`` rows ``a, b, a + b`` with ``a``, ``b`` unit Gaussian directions."""
    ab = probe_vectors(dim, 2, _noise_seed(seed), dtype, device)
    ab = ab / ab.norm(dim=1, keepdim=True)
    return torch.cat([ab, ab.sum(0, keepdim=True)])


def _noise_from_products(rows: Tensor, products: Tensor) -> float:
    """Round-off per unit vector from the linearity defect ``A(a+b) − Aa − Ab`` (errors add in quadrature)."""
    defect = (products[2] - products[0] - products[1]).norm()
    return float(defect / rows.norm(dim=1).square().sum().sqrt())


def operator_noise(op, seed: int = 0, basis_dtype: torch.dtype = torch.float64) -> float:
    """The operator's round-off on a unit vector, measured from its defect of linearity.

    A float32 Hessian-vector product is not exact: its error can be orders of magnitude
    above float32's epsilon times ``‖H‖`` (cancellation in the double backward). The
    exact product is linear, so ``‖H(a+b) − Ha − Hb‖`` is pure round-off; divided by
    the three vectors' norms in quadrature it estimates the error of one product with a
    unit vector. Three products (one batched call).

    Returns:
        The absolute error estimate (0 for an operator exact to the last bit).
    """
    op = _as_operator(op)
    rows = _noise_vectors(op.dim, seed, basis_dtype, op.device)
    return _noise_from_products(rows, _matvec_in(op, basis_dtype)(rows))


def hutchinson_trace(op, num_probes: int = 100, seed: int = 0) -> tuple[float, float]:
    """Hutchinson estimate of ``tr(H)`` with Rademacher probes.

    Returns:
        ``(estimate, standard_error)``.
    """
    op = _as_operator(op)
    g = torch.Generator().manual_seed(int(seed))
    z = (torch.randint(0, 2, (num_probes, op.dim), generator=g) * 2 - 1).to(op.device, op.dtype)
    samples = (z * op.matvec(z)).sum(dim=1).double().cpu().numpy()
    return float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(num_probes)) if num_probes > 1 else float("nan")


def _block_seed(seed: int, index: int) -> int:
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
    """Flatten Lanczos results into arrays named ``"<block index>.<field>"`` for the cache."""
    return {f"{order.index(name)}.{f}": getattr(r, f) for name, r in results.items() for f in _RESULT_FIELDS}


def _unpack(arrays, order: list[str]) -> dict[str, LanczosResult]:
    done = {int(k.split(".")[0]) for k in arrays.keys()}
    return {order[i]: LanczosResult(*(arrays[f"{i}.{f}"] for f in _RESULT_FIELDS)) for i in sorted(done)}


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
    cache=None,
    cache_key: dict | None = None,
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
        cache: ``None``/``False`` (no caching), ``True`` (the default
            :class:`~hesslab.cache.ResultCache`), a folder, or a ``ResultCache``. The
            result is keyed by :func:`hesslab.fingerprint.computation_key`: the
            model's parameter and buffer values and its structure (module classes,
            their source, configuration attributes such as ``norm_first``, a Hugging
            Face config), the loss function's and ``batch_size_fn``'s identity
            (module-level functions by name and source, ``nn.Module`` losses by
            structure), the data, the selected parameters, the blocks, every argument
            here that changes the result, the operator's ``method``, ``batchnorm`` and
            dtype, and hesslab's version of the computation. Finished groups of
            blocks are checkpointed, so an interrupted run resumes where it stopped.
        cache_key: a str-keyed dict added to the cache key; required (describing
            them) for a loss or ``batch_size_fn`` that cannot be identified (lambda,
            partial, closure, bound method, callable object), else
            :class:`~hesslab.fingerprint.UncacheableError`.
        resume_chunk: with a cache, at most this many blocks per group (the
            checkpoint granularity; retained graphs make extra groups cheap).
        progress: progress bar over Lanczos steps.

    Returns:
        ``{block_name: SpectralDensity}`` in block order.
    """
    resolved = resolve_blocks(model, blocks, operator.names if operator else None)
    if operator is None:
        names = [n for n, _ in model.named_parameters() if any(n in b.params for b in resolved)]
        operator = HessianOperator(model, loss_fn, data, params=names, **operator_kwargs)
    elif operator_kwargs:
        raise TypeError(f"pass either operator or operator options, not both: {sorted(operator_kwargs)}")
    order = [b.name for b in resolved]
    dims = {b.name: operator.block_dim(b) for b in resolved}
    seeds = {name: _block_seed(seed, i) for i, name in enumerate(order)}
    store = open_cache(cache)
    results: dict[str, LanczosResult] = {}
    info = {"data_passes": 0, "wall_time": 0.0}
    if store is not None:
        from .fingerprint import computation_key

        key = computation_key(
            "blockwise_slq", model=operator.model, loss_fn=operator.loss_fn, data=operator.data,
            batch_size_fn=_batch_size_rule(operator), cache_key=cache_key, params=operator.names,
            blocks=[[b.name, [[p.param, repr(p.index)] for p in b.parts]] for b in resolved],
            num_steps=num_steps, num_probes=num_probes, seed=seed, basis_dtype=str(basis_dtype),
            reorthogonalize=reorthogonalize, method=operator.method, batchnorm=operator.batchnorm,
            dtype=str(operator.dtype))
        hit = store.load("blockwise_slq", key)
        if hit is None:
            hit = store.load_partial("blockwise_slq", key)
        if hit is not None:
            results = _unpack(hit.arrays, order)
            info.update({k: hit.meta.get(k, v) for k, v in info.items()})
    todo = [b for b in resolved if b.name not in results]
    itemsize = torch.empty((), dtype=basis_dtype).element_size()
    groups = _group_blocks(todo, dims, num_steps, num_probes, itemsize, basis_memory_budget,
                           resume_chunk if store is not None else None)
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
        if store is not None and len(results) < len(order):
            store.save_partial("blockwise_slq", key, _pack(results, order), meta=info)
    bar.close()
    if store is not None and groups:
        store.save("blockwise_slq", key, _pack(results, order), meta=info, wall_time=info["wall_time"])
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
