"""Per-chapter parameters for the book's execution profiles.

A chapter's tagged ``parameters`` cell holds its ``cpu`` defaults; a profile only
overrides parameters (papermill ``-p``). ``smoke`` runs every chapter in about a
minute on 2 CPU cores (CI); ``cpu`` is the default book (well under an hour on a
laptop); ``paper`` uses the paper's sizes and needs a GPU.

Each profile also sets the time limits under which :mod:`hesslab.book` executes a chapter
(:data:`TIME_LIMITS`, overridable on the command line).
"""

from __future__ import annotations

from dataclasses import dataclass

PROFILES = ("smoke", "cpu", "paper")


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


#: profile -> time limits. ``smoke`` chapters take about a minute each on 2 CPU cores with an
#: empty cache, so 5 min per cell and 10 min per chapter fail a hung chapter well inside a
#: CI job's limit while leaving a slow machine several times the usual time. ``cpu``: all
#: chapters together take about 25 minutes on 2 cores with an empty cache, most of it the
#: gap chapter's training; 1 h per cell and 2 h per chapter. ``paper`` (a GPU, the papers'
#: sizes, never timed yet): 12 h per cell, a day per chapter.
TIME_LIMITS: dict[str, TimeLimits] = {
    "smoke": TimeLimits(cell=5 * 60, chapter=10 * 60),
    "cpu": TimeLimits(cell=60 * 60, chapter=2 * 60 * 60),
    "paper": TimeLimits(cell=12 * 60 * 60, chapter=24 * 60 * 60),
}


def time_limits(profile: str, cell: float | None = None, chapter: float | None = None) -> TimeLimits:
    """The time limits for executing a chapter at ``profile``, with optional overrides.

    Args:
        profile: one of :data:`PROFILES`.
        cell: seconds one cell may run (default: the profile's).
        chapter: seconds one chapter may run (default: the profile's).

    Returns:
        A :class:`TimeLimits`.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    default = TIME_LIMITS[profile]
    return TimeLimits(cell=default.cell if cell is None else cell,
                      chapter=default.chapter if chapter is None else chapter)

#: chapter stem -> profile -> parameter overrides (``{}`` means the cell's defaults)
CHAPTER_PARAMETERS: dict[str, dict[str, dict]] = {}


def parameters_for(chapter: str, profile: str) -> dict:
    """Parameters papermill passes to ``chapter`` under ``profile``.

    Args:
        chapter: notebook stem, e.g. ``"quadratic"``.
        profile: one of :data:`PROFILES`.

    Returns:
        The parameter overrides (a new dict; empty for the cell's defaults).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    chapter_profiles = CHAPTER_PARAMETERS.get(chapter, {})
    return dict(chapter_profiles.get(profile, {})) | {"profile": profile}


# Quadratic Cases 1–4 (notebooks/quadratic.md). Iteration counts hardly depend on the
# block size d (they are set by κ and the block condition numbers), so smoke only shrinks
# d. The paper's problem size is unverified: "paper" is a larger d, not the paper's size.
CHAPTER_PARAMETERS["quadratic"] = {
    "smoke": {"block_size": 25, "widget_block_size": 25, "widget_max_iter": 1000},
    "cpu": {},
    "paper": {"block_size": 100, "widget_block_size": 100, "max_iter": 100000},
}

# Methods and validation (notebooks/methods.md). Exact checks are cheap at every profile;
# the profiles change the size of the GPT-2 whose HVP and Lanczos-step costs are timed.
CHAPTER_PARAMETERS["methods"] = {
    "smoke": {"slq_steps": [5, 20], "bench_layers": 2, "bench_width": 64, "bench_repeats": 1},
    "cpu": {},
    "paper": {"bench_layers": 12, "bench_width": 768, "bench_repeats": 10},
}

# Blockwise spectra at initialisation (notebooks/heterogeneity.md, blockwise.md, js0_gap.md,
# convergence.md): the profile picks the model sizes and the Hessian/Lanczos settings
# (hesslab.heterogeneity.SETTINGS), so only the convergence grid changes here.
for _chapter in ("heterogeneity", "blockwise", "js0_gap"):
    CHAPTER_PARAMETERS[_chapter] = {"smoke": {}, "cpu": {}, "paper": {}}
CHAPTER_PARAMETERS["convergence"] = {
    "smoke": {"batches": [1, 2], "steps": [5, 10], "probes": [1, 2, 4]},
    "cpu": {},
    "paper": {"batches": [15, 30, 60], "steps": [50, 100, 200], "probes": [1, 2, 5, 10, 20]},
}

# The explicit Hessian of the digits MLP (notebooks/mlp_hessian.md): cheap at every profile.
CHAPTER_PARAMETERS["mlp_hessian"] = {"smoke": {"steps": 300}, "cpu": {}, "paper": {"steps": 3000}}

# Full-Hessian spectra over training (notebooks/full_spectra.md); Lanczos settings in
# hesslab.full_spectra.FULL_SETTINGS, checkpoints from the gap study.
CHAPTER_PARAMETERS["full_spectra"] = {
    "smoke": {"models": ["resnet18", "gpt2-nano"]},
    "cpu": {},
    "paper": {"models": ["resnet18", "vgg16", "gpt2-nano", "bert", "vit-base", "gpt2"]},
}

# The gap (notebooks/gap.md): budgets and grids per profile live in hesslab.gap.gap_settings.
CHAPTER_PARAMETERS["gap"] = {"smoke": {}, "cpu": {}, "paper": {}}
