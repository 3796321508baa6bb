"""Content hashes of models and data, so cached spectra are keyed by what they depend on."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import torch
from torch import nn


def _update(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().contiguous().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d tensors too
    elif isinstance(obj, Mapping):
        for k in sorted(obj):
            h.update(str(k).encode())
            _update(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"seq{len(obj)}".encode())
        for item in obj:
            _update(h, item)
    else:
        h.update(repr(obj).encode())


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of every parameter's and buffer's name, dtype, shape and values."""
    h = hashlib.sha256()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(name.encode())
        _update(h, t)
    return h.hexdigest()


def data_fingerprint(data: Iterable) -> str:
    """sha256 of every batch's tensors (one pass over ``data``)."""
    h = hashlib.sha256()
    for batch in data:
        _update(h, batch)
    return h.hexdigest()
