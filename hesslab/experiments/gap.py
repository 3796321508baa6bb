"""The Adam–SGD gap per model: learning-rate grid searches for AdamW and SGD with momentum.

:func:`gap_study` trains one model of :mod:`hesslab.experiments.models` with both optimisers under
the same budget (steps, batch size, schedule), searches each optimiser's learning rate on
a grid, keeps the best run per optimiser and reports the gap
(:func:`hesslab.experiments.training.adam_sgd_gap`: final training loss of SGD minus that of AdamW).
Every run keeps its model state at the fractions :data:`STAGES` of training, so the
spectra-over-training chapter reuses the best AdamW run's checkpoints instead of training
again. Settings per model and profile come from :mod:`hesslab.experiments.profiles`
(:func:`gap_settings`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import hesslab.experiments.training as _train
from hesslab.experiments.data import default_device
from hesslab.experiments.models import build, spec
from hesslab.experiments.profiles import profile as get_profile
from hesslab.experiments.batches import model_batches

#: Fractions of training at which every run keeps the model state (0 = initialisation).
STAGES = (0.0, 0.1, 0.5, 1.0)


def gap_settings(name: str, profile: str) -> dict:
    """Training settings of ``name`` under ``profile`` (what :func:`gap_study` runs).

    Returns:
        ``{"size", "batch_size", "num_batches", "steps", "schedule", "warmup", "clip", "betas",
        "weight_decay", "lrs": {optimizer: grid}}``.
    """
    settings = get_profile(profile)
    modality = spec(name).modality
    return {"size": settings.model_size,
            **settings.optimizer[modality],
            **settings.training[modality], **settings.training_by_model.get(name, {}),
            **settings.schedule[modality],
            "lrs": {k: list(v) for k, v in settings.lr_grids_by_model.get(name, settings.lr_grids[modality]).items()}}


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


def fresh_model(name: str, size: str, seed: int):
    """A newly built ``name`` at ``size`` (picklable, for training in worker processes)."""
    return build(name, size, seed=seed).model


def gap_study(name: str, profile: str = "cpu", *, seed: int = 0, cache=True, progress: bool = True,
              device=None) -> GapStudy:
    """Grid-search AdamW and SGD with momentum on ``name`` and measure the gap.

    Args:
        name: a model of :data:`hesslab.experiments.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"`` (see :func:`gap_settings`).
        seed: model initialisation and data seed.
        cache: where runs are cached (``True``: the default cache; ``None``: no cache).
        progress: progress bars.
        device: where to train (default: CUDA when available); runs are cached independently of it.

    Returns:
        The :class:`GapStudy`.
    """
    settings = gap_settings(name, profile)
    built = build(name, settings["size"], seed=seed)
    batches = model_batches(built, settings["num_batches"], settings["batch_size"], seed=seed)
    key = {"model": name, "size": settings["size"], "seed": seed, "data": "batches.model_batches/train",
           "batch_size": settings["batch_size"], "num_batches": settings["num_batches"]}
    best, runs = {}, {}
    for optimizer, lrs in settings["lrs"].items():
        base = _train.TrainConfig(optimizer, 0.0, settings["steps"], schedule=settings["schedule"],
                                  warmup=settings["warmup"], clip=settings["clip"], betas=tuple(settings["betas"]),
                                  weight_decay=settings["weight_decay"], checkpoints=STAGES, seed=seed)
        best[optimizer], runs[optimizer] = _train.grid_search(
            functools.partial(fresh_model, name, settings["size"], seed), built.loss_fn, batches, base, lrs,
            cache=cache, cache_key=key, progress=progress, device=default_device(device),
            workers=_train.default_workers(default_device(device), work=settings["steps"]))
    return GapStudy(name, built.family, profile, settings, best["adamw"], best["sgd"], runs)
