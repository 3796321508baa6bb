"""Hessian-vector products of one batch, for one block of parameters: reverse and forward mode.

Vectors of a block ``[k, dim_b]`` are laid out over the parameters the block touches
(:func:`embed`) and gathered back (:func:`extract`). :class:`ReverseProducts`
differentiates a retained first-order graph once more (double backward);
:func:`forward_product` differentiates ``torch.func.grad`` forward (``jvp``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from math import prod

import torch
from torch import Tensor, nn

from hesslab.blocks import Block
from hesslab.errors import UNSUPPORTED
from hesslab.graphs import Graph


def embed(block: Block, v: Tensor, shapes: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    """``v [k, dim_b]`` -> per touched parameter a ``[k, *shape]`` tensor, zero outside the block."""
    k = v.shape[0]
    chunks: dict[str, Tensor] = {}
    offset = 0
    for part in block.parts:
        shape = shapes[part.param]
        sel = part.shape(shape)
        size = prod(sel)
        piece = v[:, offset : offset + size].reshape(k, *sel)
        offset += size
        if part.index is None:
            chunks[part.param] = piece
        else:
            if part.param not in chunks:
                chunks[part.param] = v.new_zeros(k, *shape)
            chunks[part.param][(slice(None), *part.index)] = piece
    return chunks


def extract(block: Block, full: Mapping[str, Tensor], k: int) -> Tensor:
    """The block's entries ``[k, dim_b]`` of per-parameter tensors ``[k, *shape]``."""
    pieces = []
    for part in block.parts:
        t = full[part.param]
        if part.index is not None:
            t = t[(slice(None), *part.index)]
        pieces.append(t.reshape(k, -1))
    return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]


class ReverseProducts:
    """Products by double backward through a batch's retained :class:`~hesslab.graphs.Graph`.

    Args:
        names, params: the selected parameters (names and tensors, in the flat order).
        vectorize: several vectors: ``True`` one ``vmap``-ed backward
            (``is_grads_batched``), ``False`` a loop of backwards, ``None`` time both
            on real products and keep the faster (see :meth:`_double_backward`).
    """

    def __init__(self, names: Sequence[str], params: Sequence[Tensor], vectorize: bool | None = None):
        self.params = list(params)
        self.position = {n: i for i, n in enumerate(names)}
        self.shapes = {n: p.shape for n, p in zip(names, params)}
        self.names = list(names)
        self.vectorize = vectorize
        # while vectorize is None: the inputs timed, and seconds per row of each way (True: vmap)
        self._trial_inputs: tuple | None = None
        self._trials: dict[bool, list[float]] = {True: [], False: []}

    def product(self, graph: Graph, block: Block, v: Tensor) -> Tensor:
        """``H_bb v`` of one batch for ``v [k, dim_b]``."""
        k = v.shape[0]
        chunks = embed(block, v, self.shapes)
        names = [n for n in block.params if graph.grads[self.position[n]] is not None]
        full = {}
        if names:
            outputs = [graph.grads[self.position[n]] for n in names]
            inputs = [self.params[self.position[n]] for n in names]
            for n, h in zip(names, self._double_backward(outputs, inputs, [chunks[n] for n in names])):
                if h is not None:
                    full[n] = h
        for n in block.params:  # parameters the loss does not depend on: zero rows
            if n not in full:
                full[n] = v.new_zeros(k, *self.shapes[n])
        return extract(block, full, k)

    def padded(self, graph: Graph, requests: Sequence[tuple[Block, Tensor]]) -> list[Tensor]:
        """All blocks' products from one batched backward over zero-padded vectors.

        Row ``r`` of the batch holds one block's vector, zero outside that block, so
        the backward yields ``H_{:,b} v_b``, of which the block's own rows are kept.
        """
        touched = {n for block, _ in requests for n in block.params}
        names = [n for n in self.names if n in touched and graph.grads[self.position[n]] is not None]
        rows = sum(v.shape[0] for _, v in requests)
        padded = {n: requests[0][1].new_zeros(rows, *self.shapes[n]) for n in names}
        offsets, r = [], 0
        for block, v in requests:
            for n, chunk in embed(block, v, self.shapes).items():
                if n in padded:
                    padded[n][r : r + v.shape[0]] = chunk
            offsets.append(r)
            r += v.shape[0]
        res = self._double_backward([graph.grads[self.position[n]] for n in names],
                                    [self.params[self.position[n]] for n in names],
                                    [padded[n] for n in names]) if names else []
        full = {n: h for n, h in zip(names, res) if h is not None}
        out = []
        for (block, v), r in zip(requests, offsets):
            k = v.shape[0]
            rows_of = {n: full[n][r : r + k] if n in full else v.new_zeros(k, *self.shapes[n])
                       for n in block.params}
            out.append(extract(block, rows_of, k))
        return out

    def _double_backward(self, outputs, inputs, grad_outputs) -> list[Tensor | None]:
        """``d(outputs · grad_outputs[j]) / d inputs`` for each of the ``k`` rows ``j``.

        Several rows go through one ``vmap``-ed backward (``is_grads_batched``) or a
        loop of backwards (``vmap`` over convolution backwards was slower on CPU). With
        ``vectorize=None`` the choice is made on real products, none computed twice
        (timing both ways on one call cost four extra backwards): the calls on the
        inputs of the first batched call (all parameters, or the first block)
        alternate between the two ways, ``vmap`` first, and once they have been through
        each way twice the faster per row (the better of each way's two tries, so a
        busy moment decides nothing) is kept for good; meanwhile calls on other inputs
        (other blocks, whose costs are not comparable) loop.
        """
        k = grad_outputs[0].shape[0]
        if k == 1 or self.vectorize is False:
            return _looped_backward(outputs, inputs, grad_outputs)
        if self.vectorize:
            return self._batched_backward(outputs, inputs, grad_outputs)
        key = tuple(map(id, inputs))
        if self._trial_inputs is None:
            self._trial_inputs = key
        if key != self._trial_inputs:
            return _looped_backward(outputs, inputs, grad_outputs)
        batched = len(self._trials[True]) <= len(self._trials[False])
        start = time.perf_counter()
        res = (self._batched_backward if batched else _looped_backward)(outputs, inputs, grad_outputs)
        if self.vectorize is None:  # still undecided (a failed vmap decides for the loop)
            self._trials[batched].append((time.perf_counter() - start) / k)
            if len(self._trials[False]) >= 2:
                self.vectorize = min(self._trials[True]) <= min(self._trials[False])
        return res

    def _batched_backward(self, outputs, inputs, grad_outputs) -> list[Tensor | None]:
        """One ``vmap``-ed backward; a loop (and ``vectorize=False`` from then on) where ``vmap`` is unsupported."""
        try:
            return list(torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True,
                                            allow_unused=True, is_grads_batched=True))
        except RuntimeError as err:
            if not UNSUPPORTED.search(str(err)):
                raise
            warnings.warn(f"batched double backward unavailable ({str(err).splitlines()[0]}); "
                          "looping over vectors", RuntimeWarning, stacklevel=3)
            self.vectorize = False
            return _looped_backward(outputs, inputs, grad_outputs)


def _looped_backward(outputs, inputs, grad_outputs) -> list[Tensor | None]:
    k = grad_outputs[0].shape[0]
    cols = [torch.autograd.grad(outputs, inputs, [g[j] for g in grad_outputs],
                                retain_graph=True, allow_unused=True) for j in range(k)]
    return [None if cols[0][i] is None else torch.stack([c[i] for c in cols])
            for i in range(len(inputs))]


def forward_product(model: nn.Module, loss_fn: Callable, params: Mapping[str, Tensor], inputs, targets,
                    block: Block, v: Tensor) -> Tensor:
    """``H_bb v`` of one batch by forward-over-reverse (``jvp`` of ``grad``, ``vmap`` over the ``k`` rows of ``v``).

    Args:
        model: the network.
        loss_fn: its loss, ``loss_fn(outputs, targets) -> scalar``.
        params: name -> parameter, at least the block's (their shapes lay out ``v``).
        inputs: the batch's inputs, on the parameters' device.
        targets: the batch's targets.
        block: the block.
        v: ``[k, dim_b]`` vectors.
    """
    from torch.func import functional_call, grad, jvp, vmap

    k = v.shape[0]
    names = list(block.params)
    primals = {n: params[n].detach() for n in names}
    tangents = embed(block, v, {n: p.shape for n, p in params.items()})

    def loss_of(p):
        out = functional_call(model, p, (), {**inputs}) if isinstance(inputs, Mapping) \
            else functional_call(model, p, (inputs,))
        return loss_fn(out, targets).reshape(())

    grad_fn = grad(loss_of)

    def hvp_one(t):
        return jvp(grad_fn, (primals,), (t,))[1]

    # no_grad keeps autograd from recording the constant parameters outside the
    # block; torch.func transforms still differentiate the function inside.
    with torch.no_grad():
        if k == 1:
            res = {n: h.unsqueeze(0) for n, h in hvp_one({n: t[0] for n, t in tangents.items()}).items()}
        else:
            res = vmap(hvp_one)(tangents)
    return extract(block, res, k)


__all__ = ["ReverseProducts", "embed", "extract", "forward_product"]
