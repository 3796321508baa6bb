"""Per-chapter parameters for the book's execution profiles.

A chapter's tagged ``parameters`` cell holds its ``cpu`` defaults; a profile only
overrides parameters (papermill ``-p``). ``smoke`` runs every chapter in about a
minute on 2 CPU cores (CI); ``cpu`` is the default book (well under an hour on a
laptop); ``paper`` uses the paper's sizes and needs a GPU.
"""

PROFILES = ("smoke", "cpu", "paper")

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
