"""hesslab's batch convention: ``(inputs, targets)`` pairs, their weights, and passes that must repeat.

A batch is a pair ``(inputs, targets)``; ``inputs`` may be a mapping (``model(**inputs)``).
A batch weighs its number of examples (:func:`default_batch_size`). The Hessian of a
dataset's mean loss needs the *same* batches on every pass over the data:
:func:`check_reiterable` refuses one-shot iterators and shuffling loaders, and
:class:`DataPasses` compares every pass with the first (:func:`batch_signature`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hesslab.errors import DataChangedError

Batch = tuple[object, object]


def default_batch_size(inputs, targets) -> int:
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


def check_reiterable(data) -> None:
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


def to_device(obj, device: torch.device, dtype: torch.dtype):
    """Move tensors (also inside mappings/sequences) to ``device``; floats to ``dtype``."""
    if isinstance(obj, Tensor):
        if obj.is_floating_point():
            return obj.to(device=device, dtype=dtype, non_blocking=True)
        return obj.to(device=device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device, dtype) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, dtype) for v in obj)
    return obj


def call_model(model: nn.Module, inputs):
    """Apply ``model`` to a batch's inputs: ``model(**inputs)`` for a mapping."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


class DataPasses:
    """Passes over re-iterable data, each checked against the first.

    Args:
        data: a re-iterable of ``(inputs, targets)`` batches.
        check: compare every pass's batches with the first pass's (:func:`batch_signature`)
            and raise :class:`~hesslab.errors.DataChangedError` on a difference.
        progress: progress bar over batches.
    """

    def __init__(self, data, check: bool = True, progress: bool = False):
        check_reiterable(data)
        self.data, self.check, self.progress = data, check, progress
        self._signatures: list | None = None  # per-batch signatures of the first full pass

    def __iter__(self):
        """Yield ``(index, inputs, targets)`` of one pass."""
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
            if self.check:
                seen.append(batch_signature(batch))
                if reference is not None and (i >= len(reference) or seen[i] != reference[i]):
                    raise DataChangedError(
                        f"batch {i} differs from the first pass over the data (order, shape or "
                        "contents changed: a shuffling sampler, random augmentation, a generator "
                        "behind the iterable...). The Hessian operator needs the same batches on "
                        "every pass: pass a fixed list of batches (data = list(loader)) or a "
                        "deterministic DataLoader with shuffle=False")
            yield i, batch[0], batch[1]
        if not self.check:
            return
        if reference is None:
            self._signatures = seen
        elif len(seen) != len(reference):
            raise DataChangedError(
                f"the data yielded {len(seen)} batches, the first pass {len(reference)}; pass a fixed "
                "list of batches (data = list(loader))")


__all__ = ["Batch", "DataPasses", "batch_signature", "call_model", "check_reiterable", "default_batch_size",
           "to_device"]
