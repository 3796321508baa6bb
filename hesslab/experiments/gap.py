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

import pandas as pd
from tqdm.auto import tqdm

import hesslab.experiments.training as _train
from hesslab.experiments import verdicts
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
        "weight_decay", "lrs": {optimizer: grid}}``, and ``"augment": True`` where the
        profile augments the model's training images.
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

    @property
    def initial_loss(self) -> float:
        """The training loss at initialisation (the first batch, the same for both optimisers)."""
        return float(self.adam.losses[0])

    @property
    def relative_gap(self) -> float:
        """The gap as a share of AdamW's own progress: ``(L_SGD − L_AdamW) / (L_0 − L_AdamW)``.

        0: SGD as good as AdamW; 1: SGD no better than the initial loss. Dividing by what
        AdamW achieved from the same start removes each task's loss scale (ln of the
        number of classes or characters) and how far the budget lets it go, so models
        trained on different tasks can share one axis (Figure 7).
        """
        return relative_gap(self.initial_loss, self.adam.final_loss, self.sgd.final_loss)


def relative_gap(initial: float, adam: float, sgd: float) -> float:
    """``(sgd − adam) / (initial − adam)``: SGD's shortfall as a share of AdamW's progress from ``initial``.

    Raises:
        ValueError: AdamW made no progress (``adam >= initial``), so there is nothing to compare with.
    """
    if not initial > adam:
        raise ValueError(f"AdamW did not lower the loss ({initial:.4g} -> {adam:.4g}); the relative gap is undefined")
    return (sgd - adam) / (initial - adam)


def fresh_model(name: str, size: str, seed: int, options: dict | None = None):
    """A newly built ``name`` at ``size`` with model ``options`` (picklable, for training in worker processes)."""
    return build(name, size, seed=seed, **(options or {})).model


def training_inputs(name: str, profile: str, seed: int, options: dict | None = None):
    """What every training run of ``name`` under ``profile`` shares: ``(settings, built, batches, cache_key)``.

    ``settings`` is :func:`gap_settings` (with ``options`` added), ``built`` the model built at
    ``seed`` with the model ``options`` of :func:`~hesslab.experiments.models.build` (e.g. the
    heterogeneous MLP's ``c``), ``batches`` its training batches (seeded by ``seed``) and
    ``cache_key`` the description that keys its runs (naming ``options`` when there are any).
    """
    options = dict(options or {})
    settings = gap_settings(name, profile) | options
    built = build(name, settings["size"], seed=seed, **options)
    augment = settings.get("augment", False)
    batches = model_batches(built, settings["num_batches"], settings["batch_size"], seed=seed, augment=augment)
    key = {"model": name, "size": settings["size"], "seed": seed, "data": "batches.model_batches/train",
           "batch_size": settings["batch_size"], "num_batches": settings["num_batches"]}
    if augment:
        key["augment"] = True
    if options:
        key["options"] = options
    return settings, built, batches, key


def base_config(settings: dict, optimizer: str, seed: int, **extra) -> _train.TrainConfig:
    """The :class:`~hesslab.experiments.training.TrainConfig` of ``settings`` for ``optimizer`` (``lr`` left at 0).

    Args:
        settings: :func:`gap_settings` of the model and profile.
        optimizer: a name of :data:`hesslab.experiments.training.OPTIMIZERS`.
        seed: model initialisation seed.
        **extra: further :class:`~hesslab.experiments.training.TrainConfig` fields.
    """
    return _train.TrainConfig(optimizer, 0.0, settings["steps"], schedule=settings["schedule"],
                              warmup=settings["warmup"], clip=settings["clip"], betas=tuple(settings["betas"]),
                              weight_decay=settings["weight_decay"], checkpoints=STAGES, seed=seed, **extra)


def gap_study(name: str, profile: str = "cpu", *, seed: int = 0, cache=True, progress: bool = True,
              device=None, options: dict | None = None, lrs: dict | None = None) -> GapStudy:
    """Grid-search AdamW and SGD with momentum on ``name`` and measure the gap.

    Args:
        name: a model of :data:`hesslab.experiments.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"`` (see :func:`gap_settings`).
        seed: model initialisation and data seed.
        cache: where runs are cached (``True``: the default cache; ``None``: no cache).
        progress: progress bars.
        device: where to train (default: CUDA when available); runs are cached independently of it.
        options: model options of :func:`~hesslab.experiments.models.build` (in the runs' keys).
        lrs: optimiser -> learning-rate grid, replacing the profile's (``settings["lrs"]``).

    Returns:
        The :class:`GapStudy`.
    """
    settings, built, batches, key = training_inputs(name, profile, seed, options)
    if lrs is not None:
        settings["lrs"] = {optimizer: list(grid) for optimizer, grid in lrs.items()}
    best, runs = {}, {}
    for optimizer, grid in settings["lrs"].items():
        best[optimizer], runs[optimizer] = _train.grid_search(
            functools.partial(fresh_model, name, settings["size"], seed, options or None), built.loss_fn, batches,
            base_config(settings, optimizer, seed), grid, cache=cache, cache_key=key, progress=progress,
            device=default_device(device), workers=_train.default_workers(default_device(device), work=settings["steps"]))
    return GapStudy(name, built.family, profile, settings, best["adamw"], best["sgd"], runs)


def gap_over_seeds(names, profile: str = "cpu", *, seeds=(0, 1, 2), cache=True, progress: bool = True,
                   device=None) -> pd.DataFrame:
    """:func:`gap_study` for every model and seed, one row each.

    Args:
        names: models of :data:`hesslab.experiments.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        seeds: initialisation and data seeds (at least 3 for a margin).
        cache: where runs are cached.
        progress: progress bar over the studies.
        device: where to train.

    Returns:
        Columns ``model``, ``seed``, ``family``, ``modality``, ``initial`` (loss at
        initialisation), ``adam`` and ``sgd`` (final losses of the best runs), ``adam_lr``,
        ``sgd_lr``, ``gap`` and ``relative_gap``.
    """
    rows = []
    runs = [(name, seed) for name in names for seed in seeds]
    for name, seed in tqdm(runs, desc="gap over seeds", disable=not progress):
        study = gap_study(name, profile, seed=seed, cache=cache, progress=False, device=device)
        rows.append({"model": name, "seed": seed, "family": study.family, "modality": spec(name).modality,
                     "initial": study.initial_loss, "adam": study.adam.final_loss, "sgd": study.sgd.final_loss,
                     "adam_lr": study.adam.config.lr, "sgd_lr": study.sgd.config.lr, "gap": study.gap,
                     "relative_gap": study.relative_gap})
    return pd.DataFrame(rows)


#: AdamW "fits the training set" when its final loss is below this share of the initial loss
FIT_SHARE = 0.02


def gap_report(long: pd.DataFrame, profile: str) -> str:
    """The gap chapter's verdict, in Markdown, computed from :func:`gap_over_seeds`.

    The paper's claim: SGD about as good as AdamW on CNNs, clearly behind on Transformers
    and on the MLP-mixer. Per seed, the smallest relative gap of the Transformers (and the
    mixer's) is compared with the largest CNN relative gap (:func:`verdicts.ordering_verdict`);
    a model on which both optimisers fit the training set (final loss below
    :data:`FIT_SHARE` of the initial loss) is named, because its gap cannot separate them.
    """
    by_seed = long.pivot(index="seed", columns="model", values="relative_gap")
    families = long.groupby("model").family.first()
    cnn_max = by_seed[[m for m in by_seed if families[m] == "cnn"]].max(axis=1)
    lines = [f"**What we obtained ({profile} profile, {long.seed.nunique()} seeds; relative gap = "
             f"(SGD − AdamW) / (initial − AdamW) final training loss).**"]
    for family, label in [("transformer", "Transformers"), ("mixer", "MLP-mixer")]:
        members = [m for m in by_seed if families[m] == family]
        if not members:
            continue
        verdict = verdicts.ordering_verdict(cnn_max.to_numpy(), by_seed[members].min(axis=1).to_numpy(),
                                            what=f"largest CNN vs smallest {label} relative gap")
        lines.append(f"* SGD behind on the {label} but not on the CNNs: {verdict}. This "
                     f"{verdicts.reproduces(verdict)} the paper.")
    means = long.groupby("model")[["initial", "adam", "sgd"]].mean()
    fitted = [m for m, row in means.iterrows() if row.adam < FIT_SHARE * row.initial and row.sgd < FIT_SHARE * row.initial]
    if fitted:
        lines.append(f"* Both optimisers fit the training set (final loss below {FIT_SHARE:.0%} of the initial loss) on "
                     f"{', '.join(fitted)}: there the final loss cannot separate them.")
    return "\n".join(lines)
