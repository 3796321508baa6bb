"""Hessian-vector products of a model's mean loss, as a linear operator.

:class:`HessianOperator` is the only place in hesslab that touches autograd; the
eigensolvers in :mod:`hesslab.lanczos` see nothing but ``matvec``.

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

import contextlib
import hashlib
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from math import prod

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .blocks import Block, BlockPart, resolve_blocks

Batch = tuple[object, object]
METHODS = ("auto", "reverse", "forward")
BATCHNORM_MODES = ("eval", "train")
_ATTENTION_FIX = (
    "hesslab already routes torch's scaled_dot_product_attention through its math kernel; "
    "this operation is another fused kernel (e.g. a flash-attention package or a custom "
    'CUDA extension). Build the model with its plain PyTorch implementation (for Hugging '
    'Face models attn_implementation="eager" or "sdpa").'
)
_UNSUPPORTED = re.compile(
    r"(not implemented|does not support|doesn't support|not supported|"
    r"no forward AD|forward AD|double backward|differentiate twice|"
    r"once_differentiable|batching rule|vmap)",
    re.IGNORECASE,
)


class UnsupportedAutogradError(RuntimeError):
    """An operation in the model supports neither double backward nor forward-mode AD."""


class NonFiniteError(FloatingPointError):
    """The loss or a Hessian-vector product is NaN or infinite."""


class DataChangedError(ValueError):
    """The data yielded other batches (order, count or content) than on the operator's first pass."""


class ModelChangedError(RuntimeError):
    """A selected parameter was replaced, converted or moved after the operator was built."""


@dataclass
class _Graph:
    """A batch's retained first-order graph: ``grads[i] = dL_batch/dparam_i``."""

    weight: float
    grads: tuple[Tensor | None, ...]
    nbytes: int


def _default_batch_size(inputs, targets) -> int:
    """Number of examples in a batch: first dimension of the targets (or inputs)."""
    for candidate in (targets, inputs):
        if isinstance(candidate, Tensor) and candidate.ndim > 0:
            return int(candidate.shape[0])
        if isinstance(candidate, Mapping):
            for value in candidate.values():
                if isinstance(value, Tensor) and value.ndim > 0:
                    return int(value.shape[0])
    raise ValueError(
        "cannot tell the batch size: targets and inputs have no tensor with a batch "
        "dimension; pass batch_size_fn=lambda inputs, targets: ..."
    )


def _checksum(t: Tensor):
    """A content signature of one tensor: exact bytes digest on the CPU, two float64 moments elsewhere."""
    t = t.detach()
    if t.numel() == 0:
        return ()
    if t.device.type == "cpu":
        flat = t.contiguous().reshape(-1)
        raw = flat.view(torch.uint8) if flat.dtype != torch.bool else flat.to(torch.uint8)
        return hashlib.blake2b(raw.numpy().data, digest_size=16).hexdigest()
    # on an accelerator: the sum and a position-weighted sum (a reordering changes the latter)
    x = t.reshape(-1).to(torch.float64)
    weights = torch.arange(1, x.numel() + 1, device=x.device, dtype=torch.float64)
    return (float(x.sum()), float((x * weights).sum()))


def batch_signature(obj):
    """What :class:`HessianOperator` compares between passes over the data: structure, shapes, dtypes, contents."""
    if isinstance(obj, Tensor):
        return ("tensor", str(obj.dtype), tuple(obj.shape), obj.device.type, _checksum(obj))
    if isinstance(obj, Mapping):
        return ("mapping", tuple((str(k), batch_signature(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(batch_signature(v) for v in obj))
    return ("object", type(obj).__qualname__, repr(obj))


def _check_data(data) -> None:
    """Refuse data that cannot give the same batches on every pass."""
    if isinstance(data, Iterator):  # a generator would be exhausted after one product
        raise TypeError(
            "data must be re-iterable (a list or a DataLoader), not a one-shot "
            "iterator or generator: every product passes over it again; wrap it "
            "in list(...)"
        )
    from torch.utils.data import DataLoader, IterableDataset, SequentialSampler

    if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
        sampler = getattr(data.batch_sampler, "sampler", data.sampler)
        if not isinstance(sampler, SequentialSampler):
            raise TypeError(
                f"data is a DataLoader with a {type(sampler).__name__}, which yields the "
                "examples in another order on every pass; the Hessian operator must see the "
                "same batches each time. Pass DataLoader(..., shuffle=False), or fix one order "
                "with data = list(loader) (holds the batches in memory)"
            )


def _to_device(obj, device: torch.device, dtype: torch.dtype):
    """Move tensors (also inside mappings/sequences) to ``device``; floats to ``dtype``."""
    if isinstance(obj, Tensor):
        if obj.is_floating_point():
            return obj.to(device=device, dtype=dtype, non_blocking=True)
        return obj.to(device=device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device, dtype) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device, dtype) for v in obj)
    return obj


def call_model(model: nn.Module, inputs):
    """Apply ``model`` to a batch's inputs: ``model(**inputs)`` for a mapping."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


#: the "new" TF32 API of torch >= 2.9: one ``fp32_precision`` per backend and operation
_FP32_PRECISION_KNOBS = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn",
                         "mkldnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")


def _precision_knobs() -> list[tuple[object, str]]:
    """``(object, attribute)`` of every float32-precision switch this torch has.

    torch >= 2.9 has ``fp32_precision`` per backend (``"ieee"``, ``"tf32"``, ``"bf16"``,
    ``"none"``) and refuses to *read* the legacy ``allow_tf32`` flags once anyone used
    the new API ("mix of the legacy and new APIs"). So with the new API present only
    the new switches are saved, set and restored; older torch gets the legacy ones.
    """
    backends = torch.backends
    knobs = []
    for path in _FP32_PRECISION_KNOBS:
        obj = backends
        for part in filter(None, path.split(".")):
            obj = getattr(obj, part, None)
        if obj is not None and hasattr(obj, "fp32_precision"):
            knobs.append((obj, "fp32_precision"))
    if knobs:
        return knobs
    return [(backends.cuda.matmul, "allow_tf32"), (backends.cudnn, "allow_tf32")]


@contextlib.contextmanager
def full_float32_precision():
    """Run float32 matmuls and convolutions in full IEEE precision (no TF32, no bf16), then restore.

    Works whichever TF32 API (legacy ``allow_tf32`` / ``set_float32_matmul_precision`` or
    the ``fp32_precision`` switches of torch >= 2.9) the user or a library touched, and
    restores every switch to exactly its previous value.
    """
    knobs = _precision_knobs()
    saved = [getattr(obj, attr) for obj, attr in knobs]
    legacy = knobs[0][1] == "allow_tf32"
    matmul_precision = torch.get_float32_matmul_precision() if legacy else None
    try:
        for obj, attr in knobs:
            setattr(obj, attr, False if legacy else "ieee")
        if legacy:
            torch.set_float32_matmul_precision("highest")
        yield
    finally:
        for (obj, attr), value in zip(knobs, saved):
            setattr(obj, attr, value)
        if legacy:
            torch.set_float32_matmul_precision(matmul_precision)


@contextlib.contextmanager
def differentiable_attention():
    """Scaled-dot-product attention through PyTorch's math kernel, then the user's choice again.

    The fused SDPA kernels (flash, memory-efficient, cuDNN, the CPU flash kernel) have
    no double backward and no forward-mode AD; the math kernel is composed of ordinary
    differentiable operations. This makes ``nn.MultiheadAttention``,
    ``nn.TransformerEncoderLayer`` and Hugging Face models built with
    ``attn_implementation="sdpa"`` measurable as they are.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: no fused kernel selection to override
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


@contextlib.contextmanager
def measurement_mode(model: nn.Module, batchnorm: str = "eval"):
    """Put ``model`` in the state in which its Hessian is measured, then restore it.

    Dropout is off (``eval``). Batch-norm layers use their running statistics
    (``batchnorm="eval"``) or the statistics of each batch (``"train"``); in the
    latter case running statistics are *not* updated. Float32 arithmetic is full
    IEEE precision (:func:`full_float32_precision`: no TF32, no bf16) and attention
    runs through the differentiable math kernel (:func:`differentiable_attention`).
    Every module's ``training`` flag, batch-norm ``track_running_stats``, the
    precision switches and the attention-kernel choice are restored on exit.
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    modes = [(m, m.training) for m in model.modules()]
    tracked = [(m, m.track_running_stats) for m in model.modules() if _is_batchnorm(m)]
    try:
        model.eval()
        if batchnorm == "train":
            for m, _ in tracked:
                # training=True with track_running_stats=False: batch statistics,
                # and F.batch_norm receives no running buffers to update.
                m.train()
                m.track_running_stats = False
        with full_float32_precision(), differentiable_attention():
            yield model
    finally:
        for m, flag in modes:
            m.training = flag
        for m, flag in tracked:
            m.track_running_stats = flag


def _default_graph_budget(device: torch.device) -> int:
    """Bytes of retained graphs allowed: half the free GPU memory, or 1/4 of RAM (≤ 8 GiB)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return min(ram // 4, 8 << 30)


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
        check_data: compare every pass's batches with the first pass's
            (:func:`batch_signature`: a digest of the bytes of CPU tensors, two
            float64 moments of device tensors) and raise :class:`DataChangedError`
            on a difference. Costs one read of the data per pass.

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
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
        _check_data(data)
        self.model, self.loss_fn, self.data = model, loss_fn, data
        self.method, self.batchnorm = method, batchnorm
        self.batch_size_fn = batch_size_fn or _default_batch_size
        self.progress, self.check_finite = progress, check_finite
        self.batch_blocks = batch_blocks
        self.names, self.params = _select_params(model, params)
        dtypes = {p.dtype for p in self.params}
        devices = {p.device for p in self.params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(
                f"selected parameters mix dtypes {dtypes} or devices {devices}; "
                "convert the model with model.to(device, dtype)"
            )
        self.dtype, self.device = dtypes.pop(), devices.pop()
        self.shapes = {n: p.shape for n, p in zip(self.names, self.params)}
        self._position = {n: i for i, n in enumerate(self.names)}
        self.dim = sum(p.numel() for p in self.params)
        self._full = Block("all", tuple(BlockPart(n) for n in self.names))
        self._budget = graph_memory_budget
        self._graphs: dict[int, _Graph] = {}
        self._graph_bytes = 0
        self._weights: list[Tensor] | None = None  # copy of the weights the retained graphs were built from
        self.check_data = check_data
        self._signatures: list | None = None  # per-batch signatures of the first full pass
        self._resolved_method: str | None = None if method == "auto" else method
        self._vectorize = vectorize

    # ------------------------------------------------------------------ public
    @property
    def shape(self) -> tuple[int, int]:
        """``(dim, dim)``."""
        return (self.dim, self.dim)

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
        return self._graph_bytes

    def clear_cache(self) -> None:
        """Drop retained first-order graphs and the weight copy (they are rebuilt on demand)."""
        self._graphs.clear()
        self._graph_bytes = 0
        self._weights = None

    # ------------------------------------------------------------- internals
    def _matvec_block(self, block: Block, v: Tensor) -> Tensor:
        n = block.dim(self.shapes)
        _check_vector(v, n, self.dtype, self.device)
        out = self._products([(block, v.reshape(-1, n))])[0]
        return out.reshape(v.shape)

    def _watched(self) -> list[Tensor]:
        """The tensors a retained graph depends on: the selected parameters and every buffer."""
        return [p.detach() for p in self.params] + [b.detach() for b in self.model.buffers()]

    def _weights_unchanged(self) -> bool:
        # Values, not version counters: ``p.data.add_()`` changes a parameter without
        # bumping its ``_version``.
        now = self._watched()
        return len(now) == len(self._weights) and all(
            a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(self._weights, now))

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
        if self._graphs and not self._weights_unchanged():
            self.clear_cache()  # parameters or buffers changed since the graphs were built
        if self._resolved_method is None:
            return self._auto_products(requests)
        try:
            return self._run(requests, self._resolved_method)
        except RuntimeError as err:
            if isinstance(err, (UnsupportedAutogradError, NonFiniteError)):
                raise
            if _UNSUPPORTED.search(str(err)):
                raise UnsupportedAutogradError(
                    f"{self._resolved_method}-mode Hessian-vector products failed: {err}\n"
                    f"{_ATTENTION_FIX} Or try method='auto'."
                ) from err
            raise

    def _auto_products(self, requests):
        try:
            out = self._run(requests, "reverse")
            self._resolved_method = "reverse"
            return out
        except RuntimeError as reverse_err:
            if isinstance(reverse_err, NonFiniteError) or not _UNSUPPORTED.search(str(reverse_err)):
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
                    f"{forward_err}\n{_ATTENTION_FIX}"
                ) from forward_err
            warnings.warn(
                "double backward is not supported by this model "
                f"({str(reverse_err).splitlines()[0]}); using forward-over-reverse",
                RuntimeWarning,
                stacklevel=4,
            )
            self._resolved_method = "forward"
            return out

    def _batches(self):
        """Yield ``(index, inputs, targets)``, checking each batch against the first pass."""
        it = enumerate(self.data)
        if self.progress:
            total = len(self.data) if hasattr(self.data, "__len__") else None
            it = tqdm(it, total=total, desc="HVP batches", leave=False)
        reference, seen = self._signatures, []
        for i, batch in it:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise TypeError(
                    f"batch {i} is {type(batch).__name__}; each batch must be an "
                    "(inputs, targets) pair"
                )
            if self.check_data:
                seen.append(batch_signature(batch))
                if reference is not None and (i >= len(reference) or seen[i] != reference[i]):
                    raise DataChangedError(
                        f"batch {i} differs from the first pass over the data (order, shape or "
                        "contents changed: a shuffling sampler, random augmentation, a generator "
                        "behind the iterable...). The Hessian operator needs the same batches on "
                        "every pass: pass a fixed list of batches (data = list(loader)) or a "
                        "deterministic DataLoader with shuffle=False")
            yield i, batch[0], batch[1]
        if not self.check_data:
            return
        if reference is None:
            self._signatures = seen
        elif len(seen) != len(reference):
            raise DataChangedError(
                f"the data yielded {len(seen)} batches, the first pass {len(reference)}; pass a fixed "
                "list of batches (data = list(loader))")

    def _run(self, requests, method: str) -> list[Tensor]:
        outs = [torch.zeros_like(v) for _, v in requests]
        total = 0.0
        with measurement_mode(self.model, self.batchnorm):
            for i, inputs, targets in self._batches():
                weight = float(self.batch_size_fn(inputs, targets))
                if method == "reverse":
                    graph = self._graph(i, inputs, targets, weight)
                    if self.batch_blocks and len(requests) > 1:
                        products = self._reverse_products_padded(graph, requests)
                    else:
                        products = [self._reverse_product(graph, block, v) for block, v in requests]
                    for out, hv in zip(outs, products):
                        out.add_(hv, alpha=weight)
                    if i not in self._graphs:
                        del graph
                else:
                    inputs, targets = self._prepare(inputs, targets)
                    for out, (block, v) in zip(outs, requests):
                        out.add_(self._forward_product(inputs, targets, block, v), alpha=weight)
                total += weight
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

    def _prepare(self, inputs, targets):
        return _to_device(inputs, self.device, self.dtype), _to_device(targets, self.device, self.dtype)

    def _loss(self, inputs, targets) -> Tensor:
        loss = self.loss_fn(call_model(self.model, inputs), targets)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(
                f"loss_fn must return a scalar tensor (the batch mean), got "
                f"{getattr(loss, 'shape', type(loss))}"
            )
        return loss.reshape(())

    def _check_loss(self, loss: Tensor, i: int) -> None:
        if self.check_finite and not bool(torch.isfinite(loss)):
            raise NonFiniteError(
                f"the loss of batch {i} is {loss.item()}; the Hessian of a non-finite "
                "loss is meaningless: check the data, the model's initialisation and dtype"
            )

    def _graph(self, i: int, inputs, targets, weight: float) -> _Graph:
        if i in self._graphs:
            return self._graphs[i]
        inputs, targets = self._prepare(inputs, targets)
        storages: dict[int, int] = {}  # storage address -> bytes, of everything the graph keeps alive
        param_ptrs = {p.untyped_storage().data_ptr() for p in self.params}

        def pack(t: Tensor) -> Tensor:
            s = t.untyped_storage()
            if s.data_ptr() not in param_ptrs:
                storages[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            loss = self._loss(inputs, targets)
            self._check_loss(loss, i)
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        kept = tuple(g if g is not None and g.requires_grad else None for g in grads)
        for g in kept:  # the retained gradients themselves
            if g is not None:
                storages[g.untyped_storage().data_ptr()] = g.untyped_storage().nbytes()
        graph = _Graph(weight, kept, sum(storages.values()))
        budget = self._budget if self._budget is not None else _default_graph_budget(self.device)
        need = graph.nbytes
        if self._weights is None:
            need += sum(t.numel() * t.element_size() for t in self._watched())
        if self._graph_bytes + need <= budget:
            if self._weights is None:
                self._weights = [t.clone() for t in self._watched()]
            self._graphs[i] = graph
            self._graph_bytes += need
        return graph

    def _embed(self, block: Block, v: Tensor) -> dict[str, Tensor]:
        """``v [k, dim_b]`` -> per touched parameter a ``[k, *shape]`` tensor, zero outside the block."""
        k = v.shape[0]
        chunks: dict[str, Tensor] = {}
        offset = 0
        for part in block.parts:
            shape = self.shapes[part.param]
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

    def _extract(self, block: Block, full: Mapping[str, Tensor], k: int) -> Tensor:
        pieces = []
        for part in block.parts:
            t = full[part.param]
            if part.index is not None:
                t = t[(slice(None), *part.index)]
            pieces.append(t.reshape(k, -1))
        return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]

    def _reverse_product(self, graph: _Graph, block: Block, v: Tensor) -> Tensor:
        k = v.shape[0]
        chunks = self._embed(block, v)
        names = [n for n in block.params if graph.grads[self._position[n]] is not None]
        full = {n: v.new_zeros(k, *self.shapes[n]) for n in block.params}
        if names:
            outputs = [graph.grads[self._position[n]] for n in names]
            inputs = [self.params[self._position[n]] for n in names]
            for n, h in zip(names, self._double_backward(outputs, inputs, [chunks[n] for n in names])):
                if h is not None:
                    full[n] = h
        return self._extract(block, full, k)

    def _reverse_products_padded(self, graph: _Graph, requests) -> list[Tensor]:
        """All blocks' products from one batched backward over zero-padded vectors.

        Row ``r`` of the batch holds one block's vector, zero outside that block, so
        the backward yields ``H_{:,b} v_b``, of which the block's own rows are kept.
        """
        touched = {n for block, _ in requests for n in block.params}
        names = [n for n in self.names if n in touched and graph.grads[self._position[n]] is not None]
        rows = sum(v.shape[0] for _, v in requests)
        padded = {n: requests[0][1].new_zeros(rows, *self.shapes[n]) for n in names}
        offsets, r = [], 0
        for block, v in requests:
            for n, chunk in self._embed(block, v).items():
                if n in padded:
                    padded[n][r : r + v.shape[0]] = chunk
            offsets.append(r)
            r += v.shape[0]
        res = self._double_backward([graph.grads[self._position[n]] for n in names],
                                    [self.params[self._position[n]] for n in names],
                                    [padded[n] for n in names]) if names else []
        full = {n: h for n, h in zip(names, res) if h is not None}
        out = []
        for (block, v), r in zip(requests, offsets):
            k = v.shape[0]
            rows_of = {n: full[n][r : r + k] if n in full else v.new_zeros(k, *self.shapes[n])
                       for n in block.params}
            out.append(self._extract(block, rows_of, k))
        return out

    def _double_backward(self, outputs, inputs, grad_outputs) -> list[Tensor | None]:
        """``d(outputs · grad_outputs[j]) / d inputs`` for each of the ``k`` rows ``j``.

        Several rows go through one ``vmap``-ed backward (``is_grads_batched``) or a
        loop of backwards; with ``vectorize=None`` the first batched call times both
        and keeps the faster (``vmap`` over convolution backwards was slower on CPU).
        """
        k = grad_outputs[0].shape[0]
        if k == 1:
            return self._looped_backward(outputs, inputs, grad_outputs)
        if self._vectorize is False:
            return self._looped_backward(outputs, inputs, grad_outputs)
        try:
            start = time.perf_counter()
            res = list(torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True,
                                           allow_unused=True, is_grads_batched=True))
            t_vmap = time.perf_counter() - start
        except RuntimeError as err:
            if not _UNSUPPORTED.search(str(err)):
                raise
            warnings.warn(f"batched double backward unavailable ({str(err).splitlines()[0]}); "
                          "looping over vectors", RuntimeWarning, stacklevel=2)
            self._vectorize = False
            return self._looped_backward(outputs, inputs, grad_outputs)
        if self._vectorize is None:
            t_loop = float("inf")
            for _ in range(2):  # the faster of two tries each, so a busy moment decides nothing
                start = time.perf_counter()
                self._looped_backward(outputs, inputs, grad_outputs)
                t_loop = min(t_loop, time.perf_counter() - start)
                start = time.perf_counter()
                torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True, allow_unused=True,
                                    is_grads_batched=True)
                t_vmap = min(t_vmap, time.perf_counter() - start)
            self._vectorize = t_vmap <= t_loop
        return res

    @staticmethod
    def _looped_backward(outputs, inputs, grad_outputs) -> list[Tensor | None]:
        k = grad_outputs[0].shape[0]
        cols = [torch.autograd.grad(outputs, inputs, [g[j] for g in grad_outputs],
                                    retain_graph=True, allow_unused=True) for j in range(k)]
        return [None if cols[0][i] is None else torch.stack([c[i] for c in cols])
                for i in range(len(inputs))]

    def _forward_product(self, inputs, targets, block: Block, v: Tensor) -> Tensor:
        from torch.func import functional_call, grad, jvp, vmap

        k = v.shape[0]
        names = list(block.params)
        primals = {n: self.params[self._position[n]].detach() for n in names}
        tangents = self._embed(block, v)

        def loss_of(p):
            out = functional_call(self.model, p, (), {**inputs}) if isinstance(inputs, Mapping) \
                else functional_call(self.model, p, (inputs,))
            return self.loss_fn(out, targets).reshape(())

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
        return self._extract(block, res, k)


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


def dense_matrix(op, max_dim: int = 20_000, chunk: int = 256) -> Tensor:
    """Materialise a symmetric operator column by column (``op.matvec`` on identity rows).

    Args:
        op: anything with ``dim``, ``dtype``, ``device`` and batched ``matvec``.
        max_dim: refuse larger operators (memory is ``dim²`` numbers).
        chunk: identity rows per batched product.

    Returns:
        ``[dim, dim]`` tensor.
    """
    if op.dim > max_dim:
        raise ValueError(f"dim={op.dim} > max_dim={max_dim}: too large to densify")
    eye = torch.eye(op.dim, dtype=op.dtype, device=op.device)
    rows = [op.matvec(eye[i : i + chunk]) for i in range(0, op.dim, chunk)]
    return torch.cat(rows).T.contiguous()


def _select_params(model: nn.Module, params) -> tuple[list[str], list[Tensor]]:
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    else:
        params = list(params)
        by_id = {id(p): n for n, p in named}
        by_name = dict(named)
        wanted: set[str] = set()
        for p in params:
            if isinstance(p, str):
                if p not in by_name:
                    raise KeyError(
                        f"{p!r} is not a parameter of the model; names come from "
                        "model.named_parameters()"
                    )
                wanted.add(p)
            elif isinstance(p, Tensor):
                if id(p) not in by_id:
                    raise ValueError(
                        f"a tensor of shape {tuple(p.shape)} in params is not a parameter "
                        "of the model (pass model parameters themselves, or their names)"
                    )
                wanted.add(by_id[id(p)])
            else:
                raise TypeError(f"params must hold tensors or names, got {type(p).__name__}")
        chosen = [(n, p) for n, p in named if n in wanted]  # model order defines the flat vector
        frozen = [n for n, p in chosen if not p.requires_grad]
        if frozen:
            raise ValueError(f"parameters {frozen} do not require grad; call p.requires_grad_()")
    if not chosen:
        raise ValueError("no parameters to differentiate: none require grad")
    return [n for n, _ in chosen], [p for _, p in chosen]


def _check_vector(v: Tensor, n: int, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"expected a torch.Tensor of shape [{n}] or [k, {n}], got {type(v).__name__}")
    if v.ndim not in (1, 2) or v.shape[-1] != n or v.numel() == 0:
        raise ValueError(f"expected a vector of shape [{n}] or [k, {n}], got {tuple(v.shape)}")
    if v.dtype != dtype:
        raise TypeError(f"vector dtype {v.dtype} differs from the parameters' {dtype}; use v.to({dtype})")
    if v.device != device:
        raise ValueError(f"vector is on {v.device} but the parameters are on {device}; use v.to('{device}')")

