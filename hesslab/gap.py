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
from .data import default_device
from .models import build
from .zoo import model_batches

#: Fractions of training at which every run keeps the model state (0 = initialisation).
STAGES = (0.0, 0.1, 0.5, 1.0)

#: profile -> model size
SIZE_OF_PROFILE = {"smoke": "smoke", "cpu": "cpu", "paper": "paper"}

# Per profile: the budget shared by both optimisers, per input kind ("text" or "vision"),
# and per-model exceptions. Chosen on the cpu profile so that the best learning rate of each
# optimiser lies inside its grid (the chapter checks this): 300 steps are enough for the
# digits, the character-level text models need about 1000 (at 300 steps AdamW is still far
# from converged and the gap is small, 0.05 nats for GPT-2-nano); GPT-2 (0.8M parameters at
# cpu size) gets 500 to keep the book's run time reasonable.
_BUDGET = {
    "smoke": {"text": dict(steps=30, batch_size=4, num_batches=10), "vision": dict(steps=30, batch_size=32, num_batches=10)},
    "cpu": {"text": dict(steps=1000, batch_size=16, num_batches=50), "vision": dict(steps=300, batch_size=64, num_batches=20)},
    "paper": {"text": dict(steps=5000, batch_size=64, num_batches=5000),
              "vision": dict(steps=5000, batch_size=256, num_batches=5000)},
}
_MODEL_BUDGET = {("gpt2", "cpu"): dict(steps=500)}

#: input kind -> optimiser -> learning-rate grid (the best of each is kept)
LR_GRID = {
    "text": {"adamw": (1e-3, 3e-3, 1e-2, 3e-2), "sgd": (0.03, 0.1, 0.3, 1.0)},
    "vision": {"adamw": (1e-3, 3e-3, 1e-2, 3e-2), "sgd": (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)},
}

#: per-model grids at the cpu profile, where the kind's grid has the best rate at an edge
#: (BERT's character-level masked LM wants smaller rates than the causal models; ResNet-18
#: with batch-norm takes larger AdamW rates)
_MODEL_GRID = {("bert", "cpu"): {"adamw": (3e-4, 1e-3, 3e-3, 1e-2), "sgd": (0.01, 0.03, 0.1, 0.3)},
               ("resnet18", "cpu"): {"adamw": (1e-3, 3e-3, 1e-2, 3e-2, 0.1), "sgd": LR_GRID["vision"]["sgd"]}}

#: the paper profile's grids, around the paper's settings (GPT-2 code: AdamW 6e-4)
LR_GRID_PAPER = {
    "text": {"adamw": (3e-4, 6e-4, 1.2e-3), "sgd": (0.03, 0.1, 0.3, 1.0)},
    "vision": {"adamw": (3e-4, 1e-3, 3e-3), "sgd": (0.01, 0.03, 0.1, 0.3)},
}

#: input kind -> schedule options: cosine decay for both (the paper's vision setting);
#: warm-up and clipping for the text models, as the paper's GPT-2 code.
_SCHEDULE = {"text": dict(schedule="cosine", warmup=50, clip=1.0), "vision": dict(schedule="cosine", warmup=0, clip=None)}

#: the paper profile follows the paper's code: GPT-2 AdamW β = (0.9, 0.95), weight decay 0.1;
#: vision weight decay 1e-4
_PAPER = {"text": dict(warmup=500, betas=(0.9, 0.95), weight_decay=0.1), "vision": dict(weight_decay=1e-4)}


def gap_settings(name: str, profile: str) -> dict:
    """Training settings of ``name`` under ``profile`` (what :func:`gap_study` runs).

    Returns:
        ``{"size", "batch_size", "num_batches", "steps", "schedule", "warmup", "clip", "betas",
        "weight_decay", "lrs": {optimizer: grid}}``.
    """
    if profile not in _BUDGET:
        raise ValueError(f"unknown profile {profile!r}; choose one of {tuple(_BUDGET)}")
    kind = "text" if build(name, "smoke", device="meta").inputs["kind"] in ("tokens", "masked-tokens") else "vision"
    budget = {**_BUDGET[profile][kind], **_MODEL_BUDGET.get((name, profile), {})}
    if profile == "smoke":
        budget["warmup"] = 0
    if profile == "paper":
        budget.update(_PAPER[kind])
    grid = _MODEL_GRID.get((name, profile), (LR_GRID_PAPER if profile == "paper" else LR_GRID)[kind])
    return {"size": SIZE_OF_PROFILE[profile], "betas": (0.9, 0.999), "weight_decay": 0.0, **budget,
            **{k: v for k, v in _SCHEDULE[kind].items() if k not in budget}, "lrs": {k: list(v) for k, v in grid.items()}}


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


def gap_study(name: str, profile: str = "cpu", *, seed: int = 0, cache=True, progress: bool = True,
              device=None) -> GapStudy:
    """Grid-search AdamW and SGD with momentum on ``name`` and measure the gap.

    Args:
        name: a model of :data:`hesslab.models.NAMES`.
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
    key = {"model": name, "size": settings["size"], "seed": seed, "data": "zoo.model_batches/train",
           "batch_size": settings["batch_size"], "num_batches": settings["num_batches"]}
    best, runs = {}, {}
    for optimizer, lrs in settings["lrs"].items():
        base = _train.TrainConfig(optimizer, 0.0, settings["steps"], schedule=settings["schedule"],
                                  warmup=settings["warmup"], clip=settings["clip"], betas=tuple(settings["betas"]),
                                  weight_decay=settings["weight_decay"], checkpoints=STAGES, seed=seed)
        best[optimizer], runs[optimizer] = _train.grid_search(
            lambda: build(name, settings["size"], seed=seed).model, built.loss_fn, batches, base, lrs,
            cache=cache, cache_key=key, progress=progress, device=default_device(device))
    return GapStudy(name, built.family, profile, settings, best["adamw"], best["sgd"], runs)
