"""The Adam–SGD gap per model: learning-rate grid searches for AdamW and SGD with momentum.

:func:`gap_study` trains one model of :mod:`hesslab.models` with both optimisers under
the same budget (steps, batch size, schedule), searches each optimiser's learning rate on
a grid, keeps the best run per optimiser and reports the gap
(:func:`hesslab.train.adam_sgd_gap`: final training loss of SGD minus that of AdamW).
Every run keeps its model state at the fractions :data:`STAGES` of training, so the
spectra-over-training chapter reuses the best AdamW run's checkpoints instead of training
again. Settings per model and profile are in :func:`gap_settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import train as _train
from .models import build
from .zoo import model_batches

#: Fractions of training at which every run keeps the model state (0 = initialisation).
STAGES = (0.0, 0.1, 0.5, 1.0)

#: profile -> model size
SIZE_OF_PROFILE = {"smoke": "smoke", "cpu": "cpu", "paper": "paper"}

# Per profile: the budget shared by both optimisers, per input kind ("text" or "vision").
_BUDGET = {
    "smoke": {"text": dict(steps=30, batch_size=4, num_batches=10), "vision": dict(steps=30, batch_size=32, num_batches=10)},
    "cpu": {"text": dict(steps=300, batch_size=16, num_batches=50), "vision": dict(steps=300, batch_size=64, num_batches=20)},
    "paper": {"text": dict(steps=5000, batch_size=64, num_batches=5000),
              "vision": dict(steps=5000, batch_size=256, num_batches=5000)},
}

#: optimiser -> learning-rate grid (the best of each is kept)
LR_GRID = {"adamw": (3e-4, 1e-3, 3e-3), "sgd": (0.01, 0.03, 0.1, 0.3)}


def gap_settings(name: str, profile: str) -> dict:
    """Training settings of ``name`` under ``profile`` (what :func:`gap_study` runs).

    Returns:
        ``{"size", "batch_size", "num_batches", "steps", "schedule", "warmup", "clip", "lrs": {optimizer: grid}}``.
    """
    if profile not in _BUDGET:
        raise ValueError(f"unknown profile {profile!r}; choose one of {tuple(_BUDGET)}")
    kind = "text" if build(name, "smoke").inputs["kind"] in ("tokens", "masked-tokens") else "vision"
    return {"size": SIZE_OF_PROFILE[profile], **_BUDGET[profile][kind], "schedule": "cosine", "warmup": 0,
            "clip": None, "lrs": {k: list(v) for k, v in LR_GRID.items()}}


@dataclass
class GapStudy:
    """Best AdamW and SGD runs of one model, and all runs of the grid.

    Attributes:
        name: model name.
        family: ``"cnn"``, ``"transformer"``, ``"mixer"`` or ``"mlp"``.
        profile: the profile of the settings.
        settings: :func:`gap_settings` of the study.
        adam: the best AdamW run.
        sgd: the best SGD run.
        runs: optimiser -> learning rate -> run.
    """

    name: str
    family: str
    profile: str
    settings: dict
    adam: _train.TrainResult
    sgd: _train.TrainResult
    runs: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Final training loss of the best SGD run minus that of the best AdamW run."""
        return _train.adam_sgd_gap(self.adam, self.sgd)


def gap_study(name: str, profile: str = "cpu", *, seed: int = 0, cache=True, progress: bool = True) -> GapStudy:
    """Grid-search AdamW and SGD with momentum on ``name`` and measure the gap.

    Args:
        name: a model of :data:`hesslab.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"`` (see :func:`gap_settings`).
        seed: model initialisation and data seed.
        cache: where runs are cached (``True``: the default cache; ``None``: no cache).
        progress: progress bars.

    Returns:
        The :class:`GapStudy`.
    """
    settings = gap_settings(name, profile)
    built = build(name, settings["size"], seed=seed)
    batches = model_batches(built, settings["num_batches"], settings["batch_size"], seed=seed)
    key = {"model": name, "size": settings["size"], "seed": seed, "data": "zoo.model_batches/train",
           "batch_size": settings["batch_size"], "num_batches": settings["num_batches"]}
    best, runs = {}, {}
    for optimizer, lrs in settings["lrs"].items():
        base = _train.TrainConfig(optimizer, 0.0, settings["steps"], schedule=settings["schedule"],
                                  warmup=settings["warmup"], clip=settings["clip"], checkpoints=STAGES, seed=seed)
        best[optimizer], runs[optimizer] = _train.grid_search(
            lambda: build(name, settings["size"], seed=seed).model, built.loss_fn, batches, base, lrs,
            cache=cache, cache_key=key, progress=progress)
    return GapStudy(name, built.family, profile, settings, best["adamw"], best["sgd"], runs)
