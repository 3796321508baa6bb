"""Where a long computation keeps its progress, so that an interrupted run resumes.

:func:`~hesslab.slq.slq`, :func:`~hesslab.slq.blockwise_slq` and
:func:`~hesslab.topk.top_eigenvalues` take an optional ``checkpoint``: any object with
``load()`` and ``save(arrays, meta, finished=...)``. They save what they have finished
(named arrays plus a JSON-able ``meta`` dict) and, on the next call, start from what
``load()`` returns. The core never decides *where* progress goes or *which* computation it
belongs to: :class:`MemoryCheckpoint` keeps it in memory, and
:mod:`hesslab.storage` keys it on disk by the model, loss, data and arguments
(:func:`hesslab.storage.cached.slq` and friends).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Progress:
    """What a computation saved.

    Attributes:
        arrays: named numpy arrays.
        meta: JSON-able facts (wall time, passes over the data, ...).
        finished: the computation was complete when it saved this.
    """

    arrays: Mapping[str, np.ndarray]
    meta: dict = field(default_factory=dict)
    finished: bool = False


class Checkpoint(Protocol):
    """Saves and returns the progress of one computation (one set of arguments)."""

    def load(self) -> Progress | None:
        """The last saved progress, or None when nothing was saved."""

    def save(self, arrays: Mapping[str, np.ndarray], meta: dict, *, finished: bool) -> None:
        """Replace the saved progress."""


class MemoryCheckpoint:
    """A :class:`Checkpoint` in memory: resumes within one Python session.

    Attributes:
        progress: the last saved :class:`Progress` (None before the first save).
        saves: how many times progress was saved.
    """

    def __init__(self):
        self.progress: Progress | None = None
        self.saves = 0

    def load(self) -> Progress | None:
        """The last saved progress (copies of its arrays), or None."""
        if self.progress is None:
            return None
        arrays = {k: np.array(v, copy=True) for k, v in self.progress.arrays.items()}
        return Progress(arrays, dict(self.progress.meta), self.progress.finished)

    def save(self, arrays: Mapping[str, np.ndarray], meta: dict, *, finished: bool) -> None:
        """Keep copies of ``arrays`` and ``meta``."""
        self.progress = Progress({k: np.array(v, copy=True) for k, v in arrays.items()}, dict(meta), finished)
        self.saves += 1


__all__ = ["Checkpoint", "MemoryCheckpoint", "Progress"]
