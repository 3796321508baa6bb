"""Per-block gradient norms and how unequal they are across blocks.

Tomihari & Sato's companion paper relates the Adam–SGD gap to a *gradient heterogeneity*
(their Definition 4.4, "disparity of gradient norms across blocks"). Its exact formula is
not verified here, so :func:`gradient_heterogeneity` reports this book's choice, two
scale-free summaries of the block gradient norms ``g_b = ||∇_b L||₂``:

- ``cv``: the coefficient of variation ``sd(g) / mean(g)`` (population sd, ``ddof=0``);
  0 when every block has the same norm, ``√(B − 1)`` when one block of ``B`` holds it all;
- ``log10_spread``: ``log10(max g / min g)``, the orders of magnitude between the steepest
  and the flattest block (infinite when a block's gradient is exactly zero).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from hesslab.batching import call_model, default_batch_size, to_device
from hesslab.blocks import resolve_blocks
from hesslab.errors import NonFiniteError
from hesslab.measurement import measurement_mode


def block_gradient_norms(
    model: nn.Module,
    loss_fn: Callable,
    data: Iterable,
    blocks=None,
    *,
    batchnorm: str = "eval",
) -> dict[str, float]:
    """Euclidean norm of each block's part of the gradient of the dataset-mean loss.

    The loss is the one :class:`~hesslab.HessianOperator` differentiates twice: the
    batch-size-weighted mean of ``loss_fn(model(inputs), targets)`` over the batches,
    with the model in its measurement state (:func:`~hesslab.measurement_mode`: dropout
    off, ``batchnorm`` as given). Parameters and their ``.grad`` are untouched.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (mean over the batch).
        data: an iterable of ``(inputs, targets)`` batches (read once); ``inputs`` may be a
            mapping (``model(**inputs)``).
        blocks: a block specification of :func:`~hesslab.resolve_blocks`.
        batchnorm: ``"eval"`` (running statistics) or ``"train"`` (batch statistics).

    Returns:
        ``{block_name: ||∇_b L||₂}`` in block order (same units as the loss per parameter).

    Raises:
        ValueError: ``data`` holds no batch.
        NonFiniteError: a batch's loss or gradient is NaN or infinite.
    """
    resolved = resolve_blocks(model, blocks)
    named = dict(model.named_parameters())
    names = list(dict.fromkeys(p for block in resolved for p in block.params))
    params = [named[n] for n in names]
    first = params[0]
    total = {n: torch.zeros_like(named[n]) for n in names}
    examples = 0
    with measurement_mode(model, batchnorm):
        for i, (inputs, targets) in enumerate(data):
            inputs, targets = (to_device(x, first.device, first.dtype) for x in (inputs, targets))
            loss = loss_fn(call_model(model, inputs), targets)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError(f"loss_fn must return a scalar tensor, got {getattr(loss, 'shape', type(loss))}")
            if not bool(torch.isfinite(loss)):
                raise NonFiniteError(f"the loss of batch {i} is {loss.item()}; check the data, the model's "
                                     "initialisation and dtype")
            n = default_batch_size(inputs, targets)
            grads = torch.autograd.grad(loss.reshape(()), params, allow_unused=True)
            for name, g in zip(names, grads):
                if g is not None:
                    total[name] += n * g.detach()
            examples += n
    if examples == 0:
        raise ValueError("data is empty: no batch to take a gradient on")
    norms = {}
    for block in resolved:
        squares = 0.0
        for part in block.parts:
            g = total[part.param] / examples
            g = g[part.index] if part.index is not None else g
            squares += float(g.double().pow(2).sum())
        if not math.isfinite(squares):
            raise NonFiniteError(f"the gradient of block {block.name!r} is not finite")
        norms[block.name] = math.sqrt(squares)
    return norms


def gradient_heterogeneity(norms: Mapping[str, float]) -> dict[str, float | str]:
    """Disparity of block gradient norms (this book's reading of Tomihari & Sato's Definition 4.4).

    Args:
        norms: ``{block_name: gradient norm}``, e.g. from :func:`block_gradient_norms`
            (at least two blocks, norms nonnegative).

    Returns:
        ``cv`` (coefficient of variation, ``ddof=0``), ``log10_spread``
        (``log10(max/min)``, ``inf`` when the smallest norm is 0), ``steepest`` and
        ``flattest`` (the blocks with the largest and the smallest norm).
    """
    if len(norms) < 2:
        raise ValueError("gradient heterogeneity needs at least two blocks")
    names = list(norms)
    values = np.array([norms[n] for n in names], dtype=np.float64)
    if (values < 0).any() or not np.isfinite(values).all():
        raise ValueError("gradient norms must be finite and nonnegative")
    mean = values.mean()
    cv = float(values.std() / mean) if mean > 0 else 0.0
    spread = float(np.log10(values.max() / values.min())) if values.min() > 0 else (
        0.0 if values.max() == 0 else math.inf)
    return {"cv": cv, "log10_spread": spread, "steepest": names[int(values.argmax())],
            "flattest": names[int(values.argmin())]}


__all__ = ["block_gradient_norms", "gradient_heterogeneity"]
