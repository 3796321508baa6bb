"""Hessian-vector products of a model's mean loss, as a linear operator.

:class:`HessianOperator` is the only entry to autograd in hesslab; the eigensolvers in
:mod:`hesslab.lanczos` see nothing but ``matvec``. Its parts live in their own modules:
parameter selection in :mod:`hesslab.blocks`, the batch convention and the checked
passes over the data in :mod:`hesslab.batching`, the measurement state in
:mod:`hesslab.measurement`, the retained graphs and their budget in
:mod:`hesslab.graphs`, the per-batch products in :mod:`hesslab.products`.

Two ways to compute ``H v``:

* ``"reverse"`` (reverse-over-reverse, double backward): build each batch's
  first-order graph ``g = dL/dw`` once (``create_graph=True``) and answer every
  product by one more backward through it, ``H v = d(g . v)/dw``. Graphs are kept
  between products while their saved tensors fit in ``graph_memory_budget`` bytes,
  so a Lanczos run pays one forward and one first-order backward per batch in
  total instead of per product (the PyHessian / paper approach). Several vectors
  go through one backward with ``is_grads_batched`` (``vmap``).
* ``"forward"`` (forward-over-reverse): ``torch.func.jvp`` of ``torch.func.grad`` on
  ``functional_call``, ``vmap`` over vectors. Needs no retained graph; pays a
  forward and backward per call.
* ``"auto"`` (default): reverse; if the model has an operation without double
  backward it falls back to forward mode, and raises
  :class:`UnsupportedAutogradError` naming the fix if both fail.

The loss is the batch-size-weighted **mean** over the batches of ``data`` (the
paper's code sums over micro-batches, which scales every eigenvalue by the number
of batches).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from hesslab.batching import Batch, DataPasses, call_model, default_batch_size, to_device
from hesslab.blocks import Block, BlockPart, resolve_blocks, select_parameters
from hesslab.distributed import ShardReducer, resolve_group
from hesslab.errors import (ATTENTION_FIX, UNSUPPORTED, DataChangedError, ModelChangedError, NonFiniteError,
                            UnsupportedAutogradError)
from hesslab.graphs import Graph, RetainedGraphs, build_graph, first_order_only
from hesslab.measurement import BATCHNORM_MODES, PRECISIONS, measurement_mode
from hesslab.operators import dense_matrix
from hesslab.products import ReverseProducts, forward_product

METHODS = ("auto", "reverse", "forward")


class HessianOperator:
    """Hessian of the dataset-mean loss with respect to selected parameters.

    ``H = d²L/dw²`` with ``L = Σ_b n_b L_b / Σ_b n_b`` over the batches ``b`` of
    ``data`` (``n_b`` examples each, ``L_b = loss_fn(model(inputs), targets)``, a
    mean over the batch). The flat vector ``w`` is the concatenation of the selected
    parameters, flattened, in ``model.named_parameters()`` order.

    Args:
        model: the network. Its train/eval state is never changed permanently.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (mean over the batch).
        data: a re-iterable (list, DataLoader without shuffling) of
            ``(inputs, targets)`` batches; ``inputs`` may be a mapping
            (``model(**inputs)``). Floating tensors are moved to the parameters'
            device and dtype. Every pass must yield the same batches: a shuffling
            DataLoader is refused, and a pass whose batches differ from the first
            pass (order, count, shapes or contents, e.g. random augmentation) raises
            :class:`DataChangedError` (see ``check_data``).
        params: parameters (tensors or names) to differentiate; default all that
            require grad.
        method: ``"auto"``, ``"reverse"`` or ``"forward"`` (module docstring).
        batchnorm: ``"eval"`` (running statistics) or ``"train"`` (batch statistics,
            running buffers untouched). Dropout is always off.
        graph_memory_budget: bytes that retained first-order graphs may keep alive
            between products (reverse mode): every storage a graph saves for
            backward except the parameters themselves (activations, inputs on the
            device), the retained gradients ``dL_b/dw`` (one parameter-sized set
            per batch), and one copy of the selected parameters and the model's
            buffers, against which each later product checks that the weights are
            unchanged. ``None``: half the free GPU memory / a quarter of RAM (at
            most 8 GiB). ``0``: rebuild the graph for every product.
        batch_size_fn: ``(inputs, targets) -> int`` weight of a batch; default its
            first dimension.
        progress: show a progress bar over batches.
        check_finite: raise :class:`NonFiniteError` on a NaN/inf loss or product.
        batch_blocks: in :meth:`block_products` (reverse mode), answer all blocks with
            one ``vmap``-ed backward over zero-padded vectors instead of one backward
            per block. Uses ``Σ_b k_b × dim`` memory; on CPUs it was slower, on GPUs
            (launch-bound small kernels) it may pay — measure with
            ``benchmarks/hvp.py``.
        vectorize: reverse mode, several vectors: ``True`` one ``vmap``-ed backward,
            ``False`` a loop of backwards, ``None`` time both once and keep the faster.
        precision: ``"float32"`` (default): full IEEE float32 arithmetic, TF32 off;
            ``"fast"``: TF32 on a GPU and bfloat16 autocast of the forward pass
            (:func:`hesslab.measurement.fast_precision`; measure its effect first, as the
            methods chapter does).
        check_data: compare every pass's batches with the first pass's
            (:func:`batch_signature`: a digest of the bytes of CPU tensors, two
            float64 moments of device tensors) and raise :class:`DataChangedError`
            on a difference. Costs one read of the data per pass.
        process_group: data-parallel products over ``torch.distributed``
            (:mod:`hesslab.distributed`): ``data`` is this rank's shard and every product
            is the batch-size-weighted mean over all ranks' batches, the same on every
            rank. ``"auto"`` (default): the default group when ``torch.distributed`` is
            initialised with several ranks; ``None``: this process's data only; or a
            process group. Every rank must call the same products in the same order.

    Parameter changes are always detected: a product after any change of the
    weights (optimizer step, ``load_state_dict``, ``p.data`` updates, copies under
    ``torch.no_grad()``) equals the new Hessian's, because retained graphs are
    checked against a copy of the weights and rebuilt when they differ; a replaced,
    converted or moved parameter raises :class:`ModelChangedError`.

    Example:
        >>> op = HessianOperator(model, F.cross_entropy, [(x, y)])
        >>> hv = op @ torch.randn(op.dim, dtype=op.dtype)
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        data: Iterable[Batch],
        params: Iterable[Tensor | str] | None = None,
        *,
        method: str = "auto",
        batchnorm: str = "eval",
        graph_memory_budget: int | None = None,
        batch_size_fn: Callable[[object, object], int] | None = None,
        progress: bool = False,
        check_finite: bool = True,
        batch_blocks: bool = False,
        vectorize: bool | None = None,
        check_data: bool = True,
        precision: str = "float32",
        process_group="auto",
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.passes = DataPasses(data, check=check_data, progress=progress)
        self.model, self.loss_fn, self.data = model, loss_fn, data
        self.method, self.batchnorm = method, batchnorm
        self.batch_size_fn = batch_size_fn or default_batch_size
        self.check_finite = check_finite
        self.batch_blocks = batch_blocks
        self.names, self.params = select_parameters(model, params)
        dtypes = {p.dtype for p in self.params}
        devices = {p.device for p in self.params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(
                f"selected parameters mix dtypes {dtypes} or devices {devices}; "
                "convert the model with model.to(device, dtype)"
            )
        self.dtype, self.device = dtypes.pop(), devices.pop()
        self.shapes = {n: p.shape for n, p in zip(self.names, self.params)}
        self.dim = sum(p.numel() for p in self.params)
        self._full = Block("all", tuple(BlockPart(n) for n in self.names))
        self.graphs = RetainedGraphs(graph_memory_budget, self.device)
        self._reverse = ReverseProducts(self.names, self.params, vectorize)
        self._resolved_method: str | None = None if method == "auto" else method
        self._graph_checked = False  # first_order_only looked at the first graph built
        group = resolve_group(process_group)
        self.reducer = None if group is None else ShardReducer(group)

    # ------------------------------------------------------------------ public
    @property
    def shape(self) -> tuple[int, int]:
        """``(dim, dim)``."""
        return (self.dim, self.dim)

    @property
    def check_data(self) -> bool:
        """Whether every pass over the data is compared with the first (:class:`~hesslab.batching.DataPasses`)."""
        return self.passes.check

    @property
    def resolved_method(self) -> str | None:
        """``"reverse"`` or ``"forward"`` once known (``"auto"`` decides on first use)."""
        return self._resolved_method

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` for ``v`` of shape ``[dim]`` or ``[k, dim]`` (then ``[k, dim]``)."""
        return self._matvec_block(self._full, v)

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v)

    def restrict(self, block) -> BlockHessianOperator:
        """The operator ``v_b -> H_bb v_b`` of one block (anything :func:`resolve_blocks` takes for one block)."""
        if not isinstance(block, Block):
            if isinstance(block, str) and block in self.shapes:
                block = Block(block, (BlockPart(block),))
            else:
                (block,) = resolve_blocks(self.model, {"block": block}, self.names)
        else:
            resolve_blocks(self.model, [block], self.names)
        return BlockHessianOperator(self, block)

    def block_products(self, requests: Sequence[tuple[Block, Tensor]]) -> list[Tensor]:
        """``H_bb V_b`` for many blocks at once, sharing each batch's graph.

        Args:
            requests: ``(block, vectors [k_b, dim_b])`` pairs, vectors in the
                operator's dtype and on its device.

        Returns:
            The products ``[k_b, dim_b]``, in request order.
        """
        for block, v in requests:
            _check_vector(v, block.dim(self.shapes), self.dtype, self.device)
        return self._products([(b, v.reshape(-1, v.shape[-1])) for b, v in requests])

    def block_dim(self, block: Block) -> int:
        """Number of entries of ``block``."""
        return block.dim(self.shapes)

    def dense(self, max_dim: int = 20_000) -> Tensor:
        """The explicit ``[dim, dim]`` Hessian (columns ``H e_i``); for small models only."""
        return dense_matrix(self, max_dim)

    @property
    def retained_bytes(self) -> int:
        """Bytes kept alive by retained graphs, as counted against ``graph_memory_budget``."""
        return self.graphs.nbytes

    def clear_cache(self) -> None:
        """Drop retained first-order graphs and the weight copy (they are rebuilt on demand)."""
        self.graphs.clear()

    # ------------------------------------------------------------- internals
    def _matvec_block(self, block: Block, v: Tensor) -> Tensor:
        n = block.dim(self.shapes)
        _check_vector(v, n, self.dtype, self.device)
        out = self._products([(block, v.reshape(-1, n))])[0]
        return out.reshape(v.shape)

    def _watched(self) -> list[Tensor]:
        """The tensors a retained graph depends on: the selected parameters and every buffer."""
        return [p.detach() for p in self.params] + [b.detach() for b in self.model.buffers()]

    def _check_model(self) -> None:
        named = dict(self.model.named_parameters())
        for name, p in zip(self.names, self.params):
            if named.get(name) is not p:
                raise ModelChangedError(
                    f"parameter {name!r} was replaced or removed after this HessianOperator was "
                    "built; build a new operator for the changed model")
            if p.dtype != self.dtype or p.device != self.device:
                raise ModelChangedError(
                    f"parameter {name!r} is now {p.dtype} on {p.device}, the operator was built for "
                    f"{self.dtype} on {self.device}; build a new operator after model.to(...)")

    def _products(self, requests: list[tuple[Block, Tensor]]) -> list[Tensor]:
        self._check_model()
        self.graphs.drop_if_stale(self._watched())  # parameters or buffers changed since they were built
        if self._resolved_method is None:
            return self._auto_products(requests)
        try:
            return self._run(requests, self._resolved_method)
        except RuntimeError as err:
            if isinstance(err, (UnsupportedAutogradError, NonFiniteError)):
                raise
            if UNSUPPORTED.search(str(err)):
                raise UnsupportedAutogradError(
                    f"{self._resolved_method}-mode Hessian-vector products failed: {err}\n"
                    f"{ATTENTION_FIX} Or try method='auto'."
                ) from err
            raise

    def _auto_products(self, requests):
        try:
            out = self._run(requests, "reverse")
            self._resolved_method = "reverse"
            return out
        except RuntimeError as reverse_err:
            if isinstance(reverse_err, NonFiniteError) or not UNSUPPORTED.search(str(reverse_err)):
                raise
            self.clear_cache()
            try:
                out = self._run(requests, "forward")
            except RuntimeError as forward_err:
                if isinstance(forward_err, NonFiniteError):
                    raise
                raise UnsupportedAutogradError(
                    "the model supports neither double backward nor forward-mode AD.\n"
                    f"reverse-over-reverse: {reverse_err}\nforward-over-reverse: "
                    f"{forward_err}\n{ATTENTION_FIX}"
                ) from forward_err
            warnings.warn(
                "double backward is not supported by this model "
                f"({str(reverse_err).splitlines()[0]}); using forward-over-reverse",
                RuntimeWarning,
                stacklevel=4,
            )
            self._resolved_method = "forward"
            return out

    def _run(self, requests, method: str) -> list[Tensor]:
        outs = [torch.zeros_like(v) for _, v in requests]
        if self.reducer is None:
            total = self._accumulate(requests, method, outs)
        else:  # this rank's shard, then the sum over ranks; an error here is shared, not left to hang them
            total, error = 0.0, None
            try:
                total = self._accumulate(requests, method, outs)
            except Exception as err:
                error = err
            total = self.reducer.reduce(outs, total, error)
        if total <= 0:
            raise ValueError("data is empty (or all batch sizes are 0): nothing to average")
        for out in outs:
            out.div_(total)
        if self.check_finite:
            for out, (block, _) in zip(outs, requests):
                if not bool(torch.isfinite(out).all()):
                    raise NonFiniteError(
                        f"the Hessian-vector product of block {block.name!r} is not "
                        "finite; check the model's numerics (float64, smaller inputs)"
                    )
        return outs

    def _accumulate(self, requests, method: str, outs: list[Tensor]) -> float:
        """Add ``Σ_b n_b H_b v`` over this process's batches to ``outs``; returns ``Σ_b n_b``."""
        total = 0.0
        with measurement_mode(self.model, self.batchnorm, self.precision):
            for i, inputs, targets in self.passes:
                weight = float(self.batch_size_fn(inputs, targets))
                if method == "reverse":
                    graph = self._graph(i, inputs, targets, weight)
                    if self.batch_blocks and len(requests) > 1:
                        products = self._reverse.padded(graph, requests)
                    else:
                        products = [self._reverse.product(graph, block, v) for block, v in requests]
                    for out, hv in zip(outs, products):
                        out.add_(hv, alpha=weight)
                    del graph  # kept only if the retained graphs hold it
                else:
                    inputs, targets = self._prepare(inputs, targets)
                    if not self._graph_checked:  # forward-over-reverse differentiates the same backward
                        with torch.enable_grad():
                            self._differentiable_twice(self._loss(inputs, targets))
                    named = dict(zip(self.names, self.params))
                    for out, (block, v) in zip(outs, requests):
                        out.add_(forward_product(self.model, self.loss_fn, named, inputs, targets, block, v),
                                 alpha=weight)
                total += weight
        return total

    def _prepare(self, inputs, targets):
        return to_device(inputs, self.device, self.dtype), to_device(targets, self.device, self.dtype)

    def _loss(self, inputs, targets) -> Tensor:
        loss = self.loss_fn(call_model(self.model, inputs), targets)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(
                f"loss_fn must return a scalar tensor (the batch mean), got "
                f"{getattr(loss, 'shape', type(loss))}"
            )
        return loss.reshape(())

    def _checked_loss(self, inputs, targets, i: int) -> Tensor:
        loss = self._loss(inputs, targets)
        self._check_loss(loss, i)
        return loss

    def _check_loss(self, loss: Tensor, i: int) -> None:
        if self.check_finite and not bool(torch.isfinite(loss)):
            raise NonFiniteError(
                f"the loss of batch {i} is {loss.item()}; the Hessian of a non-finite "
                "loss is meaningless: check the data, the model's initialisation and dtype"
            )

    def _differentiable_twice(self, loss: Tensor) -> Tensor:
        """``loss``, after refusing a graph through which double backward would be silently wrong."""
        if not self._graph_checked:
            if once := first_order_only(loss):
                raise UnsupportedAutogradError(
                    f"the custom autograd Function(s) {', '.join(once)} mark their backward @once_differentiable: "
                    "differentiating their gradient again (double backward, or forward-mode AD of the backward) "
                    "gives no error but silently drops their second derivatives, so Hessian-vector products "
                    "would be wrong. Give the Function a differentiable backward, or use its plain PyTorch "
                    "equivalent.")
            self._graph_checked = True
        return loss

    def _graph(self, i: int, inputs, targets, weight: float) -> Graph:
        graph = self.graphs.get(i)
        if graph is None:
            inputs, targets = self._prepare(inputs, targets)
            graph = build_graph(lambda: self._differentiable_twice(self._checked_loss(inputs, targets, i)),
                                self.params, weight)
            self.graphs.offer(i, graph, self._watched())
        return graph


class BlockHessianOperator:
    """The principal sub-matrix ``H_bb`` of a :class:`HessianOperator` as an operator.

    Attributes:
        parent: the full operator; its retained graphs are shared.
        block: the :class:`~hesslab.blocks.Block`.
        dim: number of entries of the block.
    """

    def __init__(self, parent: HessianOperator, block: Block):
        self.parent, self.block = parent, block
        self.dim = block.dim(parent.shapes)
        self.dtype, self.device = parent.dtype, parent.device

    @property
    def shape(self) -> tuple[int, int]:
        """``(dim, dim)``."""
        return (self.dim, self.dim)

    def matvec(self, v: Tensor) -> Tensor:
        """``H_bb v`` for ``v`` of shape ``[dim]`` or ``[k, dim]``."""
        return self.parent._matvec_block(self.block, v)

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v)

    def dense(self, max_dim: int = 20_000) -> Tensor:
        """The explicit ``[dim, dim]`` block ``H_bb``; for small blocks only."""
        return dense_matrix(self, max_dim)


def _check_vector(v: Tensor, n: int, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"expected a torch.Tensor of shape [{n}] or [k, {n}], got {type(v).__name__}")
    if v.ndim not in (1, 2) or v.shape[-1] != n or v.numel() == 0:
        raise ValueError(f"expected a vector of shape [{n}] or [k, {n}], got {tuple(v.shape)}")
    if v.dtype != dtype:
        raise TypeError(f"vector dtype {v.dtype} differs from the parameters' {dtype}; use v.to({dtype})")
    if v.device != device:
        raise ValueError(f"vector is on {v.device} but the parameters are on {device}; use v.to('{device}')")


__all__ = ["HessianOperator", "BlockHessianOperator", "METHODS", "Batch", "DataChangedError", "ModelChangedError",
           "NonFiniteError", "UnsupportedAutogradError", "call_model", "measurement_mode"]
