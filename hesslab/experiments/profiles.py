"""Every per-profile setting of the book, in one table.

A *profile* scales the whole book at once:

- ``smoke``: every chapter in about a minute on 2 CPU cores (CI);
- ``cpu``: the default book, laptop scale, three seeds per verdict (a few hours on 2 cores
  with an empty cache);
- ``paper``: the paper's model sizes, Hessian batches and Lanczos settings; needs a GPU.

:data:`PROFILES` maps each name to a :class:`Profile`: the size of every model family
(constructor arguments of :mod:`hesslab.experiments.models`), the Hessian batches and
Lanczos settings of the blockwise (Figures 3–4, Table 1) and full-spectrum (Figure 1)
measurements, the training budgets, learning-rate grids and schedules of the Adam–SGD gap,
the chapters' parameter overrides (papermill ``-p``; a chapter's tagged ``parameters``
cell holds its ``cpu`` defaults) and the time limits under which the book runner executes
a chapter. Settings taken from the papers' code say so; the others are this book's choice
(the reproduction notes, ``book/reproduction.md``, list them per figure).
Facts that do not change with the profile (a family's modality, its default blocks) live
in the model registry. This module imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the profile names, smallest first
PROFILES = ("smoke", "cpu", "paper")

#: a model's modality -> its kind of training and Hessian data
MODALITIES = ("text", "vision")


@dataclass(frozen=True)
class TimeLimits:
    """Wall-clock limits, in seconds, for executing one chapter.

    Attributes:
        cell: the longest one cell may run.
        chapter: the longest the whole chapter may run, kernel start-up included.
    """

    cell: float
    chapter: float

    def __post_init__(self):
        if not (self.cell > 0 and self.chapter > 0):
            raise ValueError(f"time limits must be positive seconds, got cell={self.cell}, chapter={self.chapter}")


@dataclass(frozen=True)
class HessianSettings:
    """The data and Lanczos settings of one Hessian measurement.

    Attributes:
        batches: modality -> ``(number of batches, batch size)`` of the Hessian's data
            (sequences for text, images for vision).
        num_steps: Lanczos steps per probe.
        num_probes: probe vectors.
    """

    batches: dict[str, tuple[int, int]]
    num_steps: int
    num_probes: int


@dataclass(frozen=True)
class Profile:
    """Everything that changes with the profile.

    Attributes:
        name: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        model_size: the size key of :func:`hesslab.experiments.models.build` (the
            profile's name).
        models: model name -> keyword arguments of its family's constructor.
        blockwise: Hessian settings of the blockwise spectra at initialisation.
        full_spectra: Hessian settings of the full-Hessian spectra over training.
        training: modality -> ``{"steps", "batch_size", "num_batches"}`` shared by AdamW and SGD.
        training_by_model: model name -> overrides of its modality's budget.
        lr_grids: modality -> optimiser -> learning-rate grid.
        lr_grids_by_model: model name -> optimiser -> grid, where the modality's grid
            puts the best rate at an edge.
        schedule: modality -> ``{"schedule", "warmup", "clip"}``.
        optimizer: modality -> ``{"betas", "weight_decay"}``.
        chapters: chapter stem -> parameter overrides (``{}``: the cell's defaults).
        time_limits: limits for executing one chapter.
        pretraining: the AdamW run that pretrains ``gpt2-pretrained``
            (:mod:`hesslab.experiments.pretraining`): ``steps``, ``batch_size``,
            ``num_batches``, ``lr``, ``betas``, ``weight_decay``, ``warmup``, ``clip``.
    """

    name: str
    models: dict[str, dict]
    blockwise: HessianSettings
    full_spectra: HessianSettings
    training: dict[str, dict]
    lr_grids: dict[str, dict[str, tuple[float, ...]]]
    schedule: dict[str, dict]
    optimizer: dict[str, dict]
    time_limits: TimeLimits
    training_by_model: dict[str, dict] = field(default_factory=dict)
    lr_grids_by_model: dict[str, dict[str, tuple[float, ...]]] = field(default_factory=dict)
    chapters: dict[str, dict] = field(default_factory=dict)
    pretraining: dict = field(default_factory=dict)

    @property
    def model_size(self) -> str:
        """The size key models are built at."""
        return self.name


def profile(name: str) -> Profile:
    """The :class:`Profile` called ``name``.

    Raises:
        ValueError: an unknown profile, naming the known ones.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILES}")
    return _TABLE[name]


def time_limits(name: str, cell: float | None = None, chapter: float | None = None) -> TimeLimits:
    """The time limits for executing a chapter at profile ``name``, with optional overrides.

    Args:
        name: one of :data:`PROFILES`.
        cell: seconds one cell may run (default: the profile's).
        chapter: seconds one chapter may run (default: the profile's).
    """
    default = profile(name).time_limits
    return TimeLimits(cell=default.cell if cell is None else cell,
                      chapter=default.chapter if chapter is None else chapter)


def parameters_for(chapter: str, name: str) -> dict:
    """Parameters papermill passes to ``chapter`` under profile ``name`` (``profile`` included).

    Args:
        chapter: notebook stem, e.g. ``"quadratic"``.
        name: one of :data:`PROFILES`.

    Returns:
        A new dict of parameter overrides.
    """
    return dict(profile(name).chapters.get(chapter, {})) | {"profile": name}


# ----------------------------------------------------------------------------- models
# Constructor arguments per family (hesslab.experiments.models): the cpu sizes fit 8×8
# digits and character-level text; the paper sizes are the paper's (parameter counts are
# tested within ±10 %). VGG stages: channels per convolution, "M" a 2×2 max-pool.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_VGG_SMOKE = dict(stages=[8, "M", 16, "M"], channels=1, image=8, classes=10, hidden=32)
_VGG_CPU = dict(stages=[16, 16, "M", 32, 32, "M", 64, "M"], channels=1, image=8, classes=10, hidden=128)
_VGG_PAPER = dict(stages=_VGG16, channels=3, image=224, classes=1000, hidden=4096)
# ResNet-18 at 8×8: the CIFAR stem (3×3 stride-1 convolution, no max-pool; He et al.'s CIFAR
# ResNets). The paper's ImageNet stem (7×7 stride 2 + max-pool) shrinks an 8×8 digit to 2×2,
# where the 3×3 convolutions see mostly zero padding: 56 % and 89 % of two cpu-size blocks'
# weights had exactly zero gradient (hesslab.zero_gradient_fractions). Paper size keeps the
# ImageNet stem (224 → 56 × 56 after the stem, as the paper's ResNet-18).
_RESNET_SMALL = dict(channels=1, image=8, classes=10, stem="cifar")
_TINY_TEXT = dict(layers=1, heads=2, width=16, context=16, vocab=32)
_CPU_TEXT = dict(layers=2, heads=4, width=64, context=64, vocab=96)
# BERT at smoke and cpu size: one token type (as RoBERTa). The masked-LM data are single
# segments, so BERT's second token type never occurs and its embedding row (half the
# token_type_embeddings block) would get exactly zero gradient. Paper size keeps BERT's 2.
_BERT_SMALL = dict(token_types=1)
# the twin encoders of the gradient-heterogeneity chapter (Post-LN and Pre-LN, the same sizes):
# 8 tokens (the digit's rows) of 8 features; paper size is RoBERTa-base's width and depth (the
# paper fine-tunes a pretrained RoBERTa-base), still on 8-token inputs
_ENCODER_SMOKE = dict(image=8, channels=1, width=16, layers=2, heads=2, classes=10)
_ENCODER_CPU = dict(image=8, channels=1, width=32, layers=4, heads=4, classes=10)
_ENCODER_PAPER = dict(image=8, channels=1, width=768, layers=12, heads=12, classes=10)

_MODELS = {
    "smoke": {
        "gpt2": _TINY_TEXT | dict(layers=2), "gpt2-pretrained": _TINY_TEXT | dict(layers=2),
        "gpt2-scratch": _TINY_TEXT | dict(layers=2),
        "gpt2-nano": _TINY_TEXT, "bert": _TINY_TEXT | _BERT_SMALL,
        "vit-base": dict(image=8, patch=4, channels=1, width=16, layers=1, heads=2, classes=10),
        "resnet18": dict(depths=[1], widths=[8]) | _RESNET_SMALL,
        "vgg16": _VGG_SMOKE, "vgg16-bn": _VGG_SMOKE | dict(batch_norm=True),
        "mlp-mixer": dict(image=8, patch=4, channels=1, width=16, depth=1, classes=10),
        "hetero-mlp": dict(features=64, width=16, depth=3, classes=10, c=1.0),
        "encoder-postln": _ENCODER_SMOKE, "encoder-preln": _ENCODER_SMOKE,
    },
    "cpu": {
        "gpt2": _CPU_TEXT | dict(layers=4, width=128), "gpt2-pretrained": _CPU_TEXT | dict(layers=4, width=128),
        "gpt2-scratch": _CPU_TEXT | dict(layers=4, width=128),
        "gpt2-nano": _CPU_TEXT, "bert": _CPU_TEXT | _BERT_SMALL,
        "vit-base": dict(image=8, patch=2, channels=1, width=64, layers=2, heads=4, classes=10),
        "resnet18": dict(depths=[1, 1], widths=[16, 32]) | _RESNET_SMALL,
        "vgg16": _VGG_CPU, "vgg16-bn": _VGG_CPU | dict(batch_norm=True),
        "mlp-mixer": dict(image=8, patch=2, channels=1, width=64, depth=2, classes=10),
        "hetero-mlp": dict(features=64, width=64, depth=4, classes=10, c=1.0),
        "encoder-postln": _ENCODER_CPU, "encoder-preln": _ENCODER_CPU,
    },
    "paper": {
        # GPT-2 124M; GPT-2-nano 11M (nanoGPT's Shakespeare-char, 65 characters); BERT 40M
        # (the paper states 40M, this configuration is the book's choice)
        "gpt2": dict(layers=12, heads=12, width=768, context=1024, vocab=50257),
        "gpt2-pretrained": dict(layers=12, heads=12, width=768, context=1024, vocab=50257),
        "gpt2-scratch": dict(layers=12, heads=12, width=768, context=1024, vocab=50257),
        "gpt2-nano": dict(layers=6, heads=6, width=384, context=256, vocab=65),
        "bert": dict(layers=8, heads=8, width=512, context=512, vocab=30522),
        "vit-base": dict(image=224, patch=16, channels=3, width=768, layers=12, heads=12, classes=1000),
        "resnet18": dict(depths=[2, 2, 2, 2], widths=[64, 128, 256, 512], channels=3, image=224, classes=1000,
                         stem="imagenet"),
        "vgg16": _VGG_PAPER, "vgg16-bn": _VGG_PAPER | dict(batch_norm=True),
        # the paper's mixer size is unverified: an 8-block, 512-wide mixer (about 18M)
        "mlp-mixer": dict(image=224, patch=16, channels=3, width=512, depth=8, classes=1000),
        "hetero-mlp": dict(features=64, width=128, depth=4, classes=10, c=1.0),
        "encoder-postln": _ENCODER_PAPER, "encoder-preln": _ENCODER_PAPER,
    },
}

# ------------------------------------------------------------------- Hessian measurements
# The paper: 100 Lanczos steps and 10 probes; GPT-2's Hessian batch is 60 micro-batches of
# 8 sequences, vision 30 × 256 images (the paper's code). Smoke and cpu give both
# measurements the same data; the full spectrum takes more steps, as it has one operator.
_HESSIAN_DATA = {
    "smoke": {"text": (2, 4), "vision": (2, 32)},
    "cpu": {"text": (2, 16), "vision": (2, 128)},
    "paper": {"text": (60, 8), "vision": (30, 256)},
}
_LANCZOS = {  # profile -> (blockwise steps, probes), (full-spectrum steps, probes)
    "smoke": ((10, 2), (12, 2)),
    "cpu": ((20, 4), (40, 4)),
    "paper": ((100, 10), (100, 10)),
}

# ------------------------------------------------------------------------------ training
# The gap study's budget, shared by both optimisers. Chosen on the cpu profile so that the
# best learning rate of each optimiser lies inside its grid (the gap chapter checks this):
# 300 steps are enough for the digits, the character-level text models need about 1000 (at
# 300 steps AdamW is still far from converged and the gap is small, 0.05 nats for
# GPT-2-nano); GPT-2 (0.8M parameters at cpu size) gets 500 to keep the book's time reasonable.
_TRAINING = {
    "smoke": {"text": dict(steps=30, batch_size=4, num_batches=10), "vision": dict(steps=30, batch_size=32, num_batches=10)},
    "cpu": {"text": dict(steps=1000, batch_size=16, num_batches=50), "vision": dict(steps=300, batch_size=64, num_batches=20)},
    "paper": {"text": dict(steps=5000, batch_size=64, num_batches=5000),
              "vision": dict(steps=5000, batch_size=256, num_batches=5000)},
}
_LR_GRIDS = {
    "text": {"adamw": (1e-3, 3e-3, 1e-2, 3e-2), "sgd": (0.03, 0.1, 0.3, 1.0)},
    "vision": {"adamw": (1e-3, 3e-3, 1e-2, 3e-2), "sgd": (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)},
}
# the paper profile's grids, around the paper's settings (GPT-2 code: AdamW 6e-4)
_LR_GRIDS_PAPER = {
    "text": {"adamw": (3e-4, 6e-4, 1.2e-3), "sgd": (0.03, 0.1, 0.3, 1.0)},
    "vision": {"adamw": (3e-4, 1e-3, 3e-3), "sgd": (0.01, 0.03, 0.1, 0.3)},
}
# cosine decay for both (the paper's vision setting); warm-up and clipping for the text
# models, as the paper's GPT-2 code
_SCHEDULE = {"text": dict(schedule="cosine", warmup=50, clip=1.0), "vision": dict(schedule="cosine", warmup=0, clip=None)}
_OPTIMIZER = {"text": dict(betas=(0.9, 0.999), weight_decay=0.0), "vision": dict(betas=(0.9, 0.999), weight_decay=0.0)}
# the paper profile follows the paper's code: GPT-2 AdamW β = (0.9, 0.95), weight decay 0.1,
# 500 warm-up steps; vision weight decay 1e-4
_OPTIMIZER_PAPER = {"text": dict(betas=(0.9, 0.95), weight_decay=0.1), "vision": dict(betas=(0.9, 0.999), weight_decay=1e-4)}
_SCHEDULE_PAPER = {"text": _SCHEDULE["text"] | dict(warmup=500), "vision": _SCHEDULE["vision"]}

# ---------------------------------------------------------------------------- pretraining
# gpt2-pretrained: the profile's GPT-2 pretrained with AdamW on the first half of the
# offline text (a fresh window every step), then measured on the second half. The paper's
# pretrained GPT-2 is OpenWebText's; the book's stands in for it. cpu: 1000 steps take the
# character-level loss from ln 96 ≈ 4.6 to well below the from-scratch models' gap-study
# losses; paper: the paper profile's GPT-2 optimiser settings.
_PRETRAINING = {
    "smoke": dict(steps=100, batch_size=4, num_batches=100, lr=3e-3, betas=(0.9, 0.999), weight_decay=0.0,
                  warmup=10, clip=1.0),
    "cpu": dict(steps=1000, batch_size=16, num_batches=1000, lr=3e-3, betas=(0.9, 0.999), weight_decay=0.0,
                warmup=50, clip=1.0),
    "paper": dict(steps=5000, batch_size=64, num_batches=5000, lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1,
                  warmup=500, clip=1.0),
}

# the heterogeneous MLP (Figure 5's knob): layer l's output times c**l inflates the initial
# loss (cpu: 2.3 nats at c = 1, 55 at c = 4, 433 at c = 8) and moves the best rates by
# orders of magnitude (cpu, seed 0: SGD 0.3 at c = 1, 1e-5 at c = 8; AdamW 3e-2 and 1e-2),
# so one wide grid per optimiser, in steps of √10, serves every c; smoke steps by 10 (time)
_HETERO_MLP_WIDE = {"adamw": tuple(float(f"{1e-5 * 10 ** (k / 2):.3g}") for k in range(9)),
                    "sgd": tuple(float(f"{1e-8 * 10 ** (k / 2):.3g}") for k in range(17))}
_HETERO_MLP_LR_GRIDS = {"smoke": {"adamw": (1e-4, 1e-3, 1e-2, 0.1), "sgd": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)},
                        "cpu": _HETERO_MLP_WIDE, "paper": _HETERO_MLP_WIDE}

# the MLP-mixer fits the 1797 digits within the vision budget (final loss about 0.005 for
# both optimisers at cpu), so its gap measured nothing: it trains on shifted digits
# (batches.augment_images), a fresh batch every step; at cpu AdamW then ends near 0.2 from 2.3
_MIXER_TRAINING = {"smoke": dict(num_batches=30, augment=True), "cpu": dict(num_batches=300, augment=True)}

# ------------------------------------------------------------------- gradient heterogeneity
# Tomihari & Sato's setting in miniature (hesslab.experiments.sign_methods): each model is
# pretrained with AdamW on the digits 0–4, gets a fresh head and is fine-tuned on 5–9 with
# five optimisers, each on its own grid; gradients and block curvatures are measured at the
# start of fine-tuning. Grids: SGD's rates are about 100× the sign methods' and Adam's
# (whose steps are about lr per coordinate). All of it is this book's choice.
_SIGN_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
_SGD_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
_SIGN_METHODS = {
    "smoke": dict(pretraining=dict(steps=40, batch_size=32, num_batches=20, lr=3e-3),
                  finetuning=dict(steps=30, batch_size=32, num_batches=10), gradient_batches=4,
                  hessian=(1, 64), lanczos=(8, 1),
                  lrs={"adamw": (1e-3, 1e-2), "signsgd": (1e-3, 1e-2), "signum": (1e-3, 1e-2),
                       "sgd": (0.03, 0.3), "sgd-plain": (0.03, 0.3)}),
    "cpu": dict(pretraining=dict(steps=300, batch_size=64, num_batches=15, lr=3e-3),
                finetuning=dict(steps=100, batch_size=64, num_batches=14), gradient_batches=8,
                hessian=(1, 128), lanczos=(20, 1),
                lrs={"adamw": _SIGN_GRID, "signsgd": _SIGN_GRID, "signum": _SIGN_GRID,
                     "sgd": _SGD_GRID, "sgd-plain": _SGD_GRID}),
    "paper": dict(pretraining=dict(steps=3000, batch_size=64, num_batches=15, lr=3e-4),
                  finetuning=dict(steps=1000, batch_size=16, num_batches=56), gradient_batches=32,
                  hessian=(8, 64), lanczos=(100, 10),
                  lrs={"adamw": _SIGN_GRID, "signsgd": _SIGN_GRID, "signum": _SIGN_GRID,
                       "sgd": _SGD_GRID, "sgd-plain": _SGD_GRID}),
}


def sign_methods_settings(name: str) -> dict:
    """The gradient-heterogeneity chapter's settings under profile ``name`` (a new dict).

    Args:
        name: one of :data:`PROFILES`.

    Returns:
        ``pretraining`` (AdamW on digits 0–4: ``steps``, ``batch_size``, ``num_batches``, ``lr``),
        ``finetuning`` (on digits 5–9: ``steps``, ``batch_size``, ``num_batches``),
        ``gradient_batches`` (mini-batches whose gradient norms are averaged), ``hessian``
        (``(batches, batch size)`` of the Hessian's data), ``lanczos`` (``(steps, probes)``)
        and ``lrs`` (optimiser -> grid).
    """
    profile(name)  # the name's check
    settings = _SIGN_METHODS[name]
    return {k: dict(v) if isinstance(v, dict) else v for k, v in settings.items()}


# ------------------------------------------------------------------------------ chapters
# Quadratic Cases 1–4: iteration counts hardly depend on the block size d (they are set by κ
# and the block condition numbers), so smoke only shrinks d. The paper's problem size is
# unverified: "paper" is a larger d, not the paper's size. Methods: exact checks are cheap at
# every profile; the profiles change the size of the GPT-2 whose HVP and Lanczos-step costs
# are timed. The blockwise chapters take their sizes from the profile; only the convergence
# grid changes.
_CHAPTERS = {
    "smoke": {
        "quadratic": {"block_size": 25, "widget_block_size": 25, "widget_max_iter": 1000},
        "methods": {"slq_steps": [5, 20], "bench_layers": 2, "bench_width": 64, "bench_repeats": 1},
        "convergence": {"batches": [1, 2], "steps": [5, 10], "probes": [1, 2, 4]},
        "mlp_hessian": {"steps": 300},
        "full_spectra": {"models": ["resnet18", "gpt2-nano"]},
        "rescue": {"models": ["gpt2", "resnet18", "hetero-mlp"], "knob": {"c": 4.0, "reparametrized": True}},
        "heterogeneous_mlp": {"c_values": [1, 2, 4], "seeds": [0, 1]},
        "gradient_heterogeneity": {"seeds": [0, 1]},
    },
    "cpu": {},
    "paper": {
        "quadratic": {"block_size": 100, "widget_block_size": 100, "max_iter": 100000},
        "methods": {"bench_layers": 12, "bench_width": 768, "bench_repeats": 10, "precision_profile": "paper"},
        "convergence": {"batches": [15, 30, 60], "steps": [50, 100, 200], "probes": [1, 2, 5, 10, 20]},
        "mlp_hessian": {"steps": 3000},
        "full_spectra": {"models": ["resnet18", "vgg16", "gpt2-nano", "bert", "vit-base", "gpt2"]},
    },
}

# ---------------------------------------------------------------------------- time limits
# smoke chapters take about a minute each on 2 CPU cores with an empty cache, so 5 min per
# cell and 10 min per chapter fail a hung chapter well inside a CI job's limit while leaving
# a slow machine several times the usual time. cpu: with one seed all chapters together
# took about 30 minutes on 2 cores with an empty cache, most of it the gap chapter's
# training; the verdicts now use three seeds, so the gap cell alone takes about three times
# that: 4 h per cell, 6 h per chapter. paper (a GPU, the papers' sizes, never timed yet):
# 12 h per cell, a day per chapter.
_TIME_LIMITS = {
    "smoke": TimeLimits(cell=5 * 60, chapter=10 * 60),
    "cpu": TimeLimits(cell=4 * 60 * 60, chapter=6 * 60 * 60),
    "paper": TimeLimits(cell=12 * 60 * 60, chapter=24 * 60 * 60),
}


def _profile(name: str) -> Profile:
    paper = name == "paper"
    (block_steps, block_probes), (full_steps, full_probes) = _LANCZOS[name]
    smoke_schedule = {m: s | dict(warmup=0) for m, s in _SCHEDULE.items()}
    return Profile(
        name=name,
        models=_MODELS[name],
        blockwise=HessianSettings(_HESSIAN_DATA[name], block_steps, block_probes),
        full_spectra=HessianSettings(_HESSIAN_DATA[name], full_steps, full_probes),
        training=_TRAINING[name],
        training_by_model=({"gpt2": dict(steps=500), "gpt2-pretrained": dict(steps=500), "gpt2-scratch": dict(steps=500)}
                           if name == "cpu" else {})
        | ({"mlp-mixer": _MIXER_TRAINING[name]} if name in _MIXER_TRAINING else {}),
        lr_grids=_LR_GRIDS_PAPER if paper else _LR_GRIDS,
        # BERT's character-level masked LM wants smaller rates than the causal models;
        # ResNet-18 with batch-norm takes larger AdamW rates
        lr_grids_by_model=({"bert": {"adamw": (3e-4, 1e-3, 3e-3, 1e-2), "sgd": (0.01, 0.03, 0.1, 0.3)},
                            "resnet18": {"adamw": (1e-3, 3e-3, 1e-2, 3e-2, 0.1), "sgd": _LR_GRIDS["vision"]["sgd"]},
                            } if name == "cpu" else {}) | {"hetero-mlp": _HETERO_MLP_LR_GRIDS[name]},
        schedule=_SCHEDULE_PAPER if paper else smoke_schedule if name == "smoke" else _SCHEDULE,
        optimizer=_OPTIMIZER_PAPER if paper else _OPTIMIZER,
        chapters=_CHAPTERS[name],
        time_limits=_TIME_LIMITS[name],
        pretraining=_PRETRAINING[name],
    )


_TABLE: dict[str, Profile] = {name: _profile(name) for name in PROFILES}

#: profile -> chapter time limits (read by the book runner)
TIME_LIMITS: dict[str, TimeLimits] = {name: p.time_limits for name, p in _TABLE.items()}
