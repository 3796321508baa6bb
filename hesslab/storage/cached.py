"""The core's long computations, stored on disk and resumed: :func:`slq`, :func:`blockwise_slq`, :func:`top_eigenvalues`.

Each takes the arguments of its core function (:func:`hesslab.slq.slq`,
:func:`hesslab.slq.blockwise_slq`, :func:`hesslab.topk.top_eigenvalues`) plus

- ``cache``: ``True`` (the default :class:`~hesslab.storage.cache.ResultCache`), a folder, a
  ``ResultCache``, or ``None``/``False`` (compute without storing);
- ``cache_key``: a str-keyed dict added to the key; required (describing them) for a loss or
  ``batch_size_fn`` that cannot be identified (lambda, partial, closure, bound method,
  callable object) and for operators other than Hessian operators and matrices, else
  :class:`~hesslab.storage.fingerprint.UncacheableError`.

The result is keyed by :func:`operator_key`: the model's parameter and buffer values and
its structure (module classes, their source, configuration attributes, a Hugging Face
config), the loss function's and ``batch_size_fn``'s identity, the data, the selected
parameters and block(s), the operator's ``method``, ``batchnorm`` and dtype, every
argument that changes the result and hesslab's version of the computation. A stored
result is never served for another model, loss, data or argument; an interrupted run
resumes from its last checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

import hesslab.topk as core_topk
from hesslab.batching import default_batch_size
from hesslab.distributed import DistributedCheckpoint, agreed_budget, agreed_host_budget, gather_objects, group_of
from hesslab.hvp import BlockHessianOperator, HessianOperator
from hesslab.measurement import has_batchnorm
from hesslab.memory import default_memory_budget, plan_basis
from hesslab.operators import MatrixOperator, as_operator
from hesslab.slq import blockwise_operator
from hesslab.slq import blockwise_slq as _blockwise_slq
from hesslab.slq import slq as _slq
from hesslab.spectra import SpectralDensity
from hesslab.storage.cache import StoredCheckpoint, open_cache
from hesslab.storage.fingerprint import UncacheableError, computation_key


def _batch_size_rule(operator: HessianOperator):
    """An operator's ``batch_size_fn`` for keys: None for hesslab's default rule."""
    fn = getattr(operator, "batch_size_fn", None)
    return None if fn is default_batch_size else fn


def _block_key(block) -> list:
    return [block.name, [[p.param, repr(p.index)] for p in block.parts]]


def operator_key(op, kind: str = "slq", *, cache_key: dict | None = None, **arguments) -> dict:
    """The key of computation ``kind`` on ``op`` with ``arguments`` (:func:`~hesslab.storage.fingerprint.computation_key`).

    A :class:`~hesslab.HessianOperator` (or a block of one) is keyed by its model's
    values and structure, its loss function, ``batch_size_fn``, data, selected
    parameters (and block), ``method``, ``batchnorm`` (only for a model with batch-norm
    layers: the mode changes nothing else, :func:`~hesslab.measurement.measurement_mode`),
    dtype and ``precision``; a
    :class:`~hesslab.operators.MatrixOperator` by its matrix; any other operator only with
    ``cache_key``, which is added to the key and also stands in for a loss function that
    cannot be identified (a lambda, partial, closure, bound method).

    Raises:
        UncacheableError: an unidentifiable loss function or operator type without ``cache_key``.
    """
    block = None
    if isinstance(op, BlockHessianOperator):
        block = _block_key(op.block)
        op = op.parent
    if isinstance(op, HessianOperator):
        return computation_key(kind, model=op.model, loss_fn=op.loss_fn, data=op.data,
                               batch_size_fn=_batch_size_rule(op), cache_key=cache_key, params=op.names,
                               block=block, method=op.method, dtype=str(op.dtype),
                               batchnorm=op.batchnorm if has_batchnorm(op.model) else None,
                               precision=op.precision,
                               **arguments)
    if isinstance(op, MatrixOperator):
        return computation_key(kind, cache_key=cache_key, matrix=op.matrix, **arguments)
    if cache_key is None:
        raise UncacheableError(f"cannot derive a cache key for {type(op).__name__}; pass cache_key={{...}} "
                               "describing it")
    return computation_key(kind, cache_key=cache_key, operator=f"{type(op).__module__}:{type(op).__qualname__}",
                           **arguments)


def _finished(checkpoint: StoredCheckpoint | None) -> bool:
    """A finished result is stored."""
    saved = checkpoint.load() if checkpoint is not None else None
    return saved is not None and saved.finished


def _checkpoint(cache, kind: str, key: Callable[[], dict], op=None):
    """The stored checkpoint of ``kind`` keyed by ``key()``; for a distributed ``op``, rank 0's, shared.

    A data-parallel operator (:mod:`hesslab.distributed`) is keyed by every rank's key (its
    shard of the data), in rank order: a result is served only to the same sharding of the
    same data. Rank 0 alone reads and writes the store (:class:`~hesslab.distributed.DistributedCheckpoint`).
    """
    store = open_cache(cache)
    group = group_of(op) if op is not None else None
    if group is None:
        return None if store is None else store.checkpoint(kind, key())
    if store is None:
        return None
    keys = gather_objects(key(), group)
    return DistributedCheckpoint(store.checkpoint(kind, {"shards": keys}), group)


def slq(op, num_steps: int = 100, num_probes: int = 10, seed: int = 0, *,
        basis_dtype: torch.dtype | None = None, memory_budget: int | None = None, probe_chunk: int | None = None,
        offload: bool = True, reorthogonalize: bool = True, cache=True, cache_key: dict | None = None,
        progress: bool = True, stored_only: bool = False) -> SpectralDensity | None:
    """:func:`hesslab.slq.slq`, stored and resumed (see the module docstring for ``cache``, ``cache_key``).

    The result is keyed by the basis dtype the memory plan resolves to (the chunking does
    not change it); each finished probe chunk is checkpointed. ``stored_only``: return the
    stored result, or None when there is none (nothing is computed).
    """
    op = as_operator(op)
    plan = plan_basis(op.dim, num_steps, num_probes, op.device, dtype=basis_dtype,
                      memory_budget=agreed_budget(op, memory_budget, default_memory_budget),
                      host_budget=agreed_host_budget(op, default_memory_budget),
                      probe_chunk=probe_chunk, offload=offload, reorthogonalize=reorthogonalize)
    checkpoint = _checkpoint(cache, "slq", lambda: operator_key(
        op, cache_key=cache_key, num_steps=num_steps, num_probes=num_probes, seed=seed, basis_dtype=str(plan.dtype),
        reorthogonalize=reorthogonalize), op)
    if stored_only and not _finished(checkpoint):
        return None
    return _slq(op, num_steps, num_probes, seed, basis_dtype=plan.dtype, memory_budget=plan.budget,
                probe_chunk=plan.probe_chunk, offload=offload, reorthogonalize=reorthogonalize,
                checkpoint=checkpoint, progress=progress)


def blockwise_slq(model: nn.Module, loss_fn: Callable, data: Iterable, blocks=None, num_steps: int = 100,
                  num_probes: int = 10, seed: int = 0, *, operator: HessianOperator | None = None,
                  basis_dtype: torch.dtype | None = None, memory_budget: int | None = None, offload: bool = True,
                  reorthogonalize: bool = True, cache=True, cache_key: dict | None = None, resume_chunk: int = 8,
                  progress: bool = True, **operator_kwargs) -> dict[str, SpectralDensity]:
    """:func:`hesslab.slq.blockwise_slq`, stored and resumed (see the module docstring for ``cache``, ``cache_key``).

    The result is keyed by each block's resolved basis dtype; finished blocks are
    checkpointed in groups of at most ``resume_chunk``.
    """
    operator, resolved = blockwise_operator(model, loss_fn, data, blocks, operator, **operator_kwargs)
    budget = agreed_budget(operator, memory_budget, default_memory_budget)  # the same on every rank
    host = agreed_host_budget(operator, default_memory_budget)
    dtypes = [str(plan_basis(operator.block_dim(b), num_steps, num_probes, operator.device, dtype=basis_dtype,
                             memory_budget=budget, host_budget=host, offload=offload,
                             reorthogonalize=reorthogonalize).dtype)
              for b in resolved]
    checkpoint = _checkpoint(cache, "blockwise_slq", lambda: operator_key(
        operator, "blockwise_slq", cache_key=cache_key, blocks=[_block_key(b) for b in resolved],
        num_steps=num_steps, num_probes=num_probes, seed=seed, basis_dtype=dtypes,
        reorthogonalize=reorthogonalize), operator)
    return _blockwise_slq(model, loss_fn, data, resolved, num_steps, num_probes, seed, operator=operator,
                          basis_dtype=basis_dtype, memory_budget=budget, offload=offload,
                          reorthogonalize=reorthogonalize, checkpoint=checkpoint, resume_chunk=resume_chunk,
                          progress=progress)


def top_eigenvalues(op, k: int = 1, *, tol: float | None = None, block_size: int | None = None,
                    max_basis: int | None = None, max_matvecs: int | None = None, seed: int = 0,
                    basis_dtype: torch.dtype = torch.float64, memory_budget: int | None = None, cache=True,
                    cache_key: dict | None = None, progress: bool = False,
                    stored_only: bool = False) -> core_topk.TopEigenvalues | None:
    """:func:`hesslab.topk.top_eigenvalues`, stored (values, residuals, convergence; not the vectors).

    See the module docstring for ``cache`` and ``cache_key``; ``stored_only`` as for :func:`slq`.
    """
    op = as_operator(op)
    settings = core_topk.resolved_settings(op, k, tol=tol, block_size=block_size, max_basis=max_basis,
                                           max_matvecs=max_matvecs)
    checkpoint = _checkpoint(cache, "top_eigenvalues", lambda: operator_key(
        op, "top_eigenvalues", cache_key=cache_key, k=k, tol=settings["tol"], block_size=settings["block_size"],
        max_basis=settings["max_basis"], max_matvecs=settings["max_matvecs"], seed=seed, basis_dtype=str(basis_dtype)), op)
    if stored_only and not _finished(checkpoint):
        return None
    return core_topk.top_eigenvalues(op, k, tol=tol, block_size=block_size, max_basis=max_basis,
                                     max_matvecs=max_matvecs, seed=seed, basis_dtype=basis_dtype,
                                     memory_budget=memory_budget, checkpoint=checkpoint, progress=progress)


__all__ = ["operator_key", "slq", "blockwise_slq", "top_eigenvalues"]
