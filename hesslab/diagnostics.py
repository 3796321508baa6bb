"""Diagnostics of a model on its data, before measuring a Hessian.

:func:`zero_gradient_fractions` finds the parts of each block that the data never
reaches. An entry whose gradient is exactly zero on every batch does not influence the
loss there (a convolution tap that only ever sees zero padding, the embedding row of a
token that never occurs, a position beyond every sequence): its row and column of the
Hessian are zero too (for these structural causes), and the block's spectrum carries a
spike of exact zero eigenvalues that belongs to the miniature, not to the architecture.
A miniature model that is faithful to its full-size original has few such entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from hesslab.batching import call_model, to_device
from hesslab.blocks import resolve_blocks
from hesslab.measurement import measurement_mode


def zero_gradient_fractions(
    model: nn.Module,
    loss_fn: Callable,
    data: Iterable,
    blocks=None,
    *,
    batchnorm: str = "eval",
) -> dict[str, float]:
    """Fraction of each block's entries whose gradient is exactly zero on every batch of ``data``.

    The model is put in the state in which :class:`~hesslab.HessianOperator` measures the
    Hessian (:func:`~hesslab.measurement_mode`: dropout off, ``batchnorm`` as given, full
    float32), so pass the data and ``batchnorm`` of the Hessian in question. An entry counts
    as zero when ``dL_b/dw == 0`` exactly for every batch ``b``; apart from exact
    cancellations between batches this is the set of entries where the gradient of the
    dataset-mean loss is zero. The model's parameters and their ``.grad`` are untouched.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (mean over the batch).
        data: an iterable of ``(inputs, targets)`` batches (read once); ``inputs`` may be a
            mapping (``model(**inputs)``), e.g. token ids ``[B, T]``, images ``[B, C, H, W]``.
            Floating tensors are moved to the parameters' device and dtype.
        blocks: a block specification of :func:`~hesslab.resolve_blocks` (``None``: one
            block per parameter tensor; a preset name, a list of parameter names, a mapping).
        batchnorm: ``"eval"`` (running statistics) or ``"train"`` (batch statistics).

    Returns:
        ``{block_name: fraction}`` in block order, each fraction in ``[0, 1]``, the number
        of the block's entries (``Block.dim``) with zero gradient on every batch divided
        by that number.

    Raises:
        ValueError: ``data`` holds no batch.
        TypeError: a batch is not an ``(inputs, targets)`` pair, or the loss is not a scalar.

    Example:
        >>> fractions = zero_gradient_fractions(model, F.cross_entropy, [(x, y)])
        >>> [name for name, f in fractions.items() if f > 0.05]
    """
    resolved = resolve_blocks(model, blocks)
    named = dict(model.named_parameters())
    names = list(dict.fromkeys(p for block in resolved for p in block.params))
    params = [named[n] for n in names]
    first = params[0]
    # reached[n]: entries of parameter n with a non-zero gradient on some batch
    reached = {n: torch.zeros_like(named[n], dtype=torch.bool) for n in names}
    count = 0
    with measurement_mode(model, batchnorm):
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise TypeError(f"batch {count} is {type(batch).__name__}; each batch must be an "
                                "(inputs, targets) pair")
            inputs, targets = (to_device(x, first.device, first.dtype) for x in batch)
            loss = loss_fn(call_model(model, inputs), targets)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise TypeError(f"loss_fn must return a scalar tensor, got {getattr(loss, 'shape', type(loss))}")
            grads = torch.autograd.grad(loss.reshape(()), params, allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    reached[n] |= g != 0
            count += 1
    if count == 0:
        raise ValueError("data is empty: no batch to take a gradient on")
    fractions = {}
    for block in resolved:
        total = zero = 0
        for part in block.parts:
            hit = reached[part.param]
            hit = hit[part.index] if part.index is not None else hit
            total += hit.numel()
            zero += hit.numel() - int(hit.sum())
        fractions[block.name] = zero / total
    return fractions


__all__ = ["zero_gradient_fractions"]
