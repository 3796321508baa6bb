"""Full-Hessian spectra over training (Figure 1).

:func:`spectra_over_training` takes the best AdamW run of a model's gap study
(:func:`hesslab.gap.gap_study`, which keeps the model state at :data:`hesslab.gap.STAGES`)
and measures the SLQ spectrum of the *full* Hessian at every stage, on the profile's
Hessian batches (:func:`hesslab.heterogeneity.hessian_data`). Batch-norm uses batch
statistics (``batchnorm="train"``), as in the blockwise chapters.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .gap import STAGES, gap_study
from .data import default_device, to_device
from .heterogeneity import JS_VARIANTS, SETTINGS, hessian_data
from .hvp import HessianOperator
from .js import js_distance
from .models import build
from .slq import slq
from .spectra import SpectralDensity

#: profile -> (Lanczos steps, probes) for the full Hessian
FULL_SETTINGS = {"smoke": (10, 2), "cpu": (40, 4), "paper": (100, 10)}


def spectra_over_training(name: str, profile: str = "cpu", *, stages=STAGES, seed: int = 0, device=None,
                          cache=True, progress: bool = True) -> dict[float, SpectralDensity]:
    """SLQ spectra of the full Hessian of ``name`` at fractions of its best AdamW run.

    Args:
        name: a model of :data:`hesslab.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        stages: fractions of training, a subset of :data:`hesslab.gap.STAGES`.
        seed: initialisation and data seed.
        device: where to compute (default: CUDA when available).
        cache: cache for the training runs and the spectra.
        progress: progress bars.

    Returns:
        ``{stage: SpectralDensity}`` in raw eigenvalue units.
    """
    missing = [s for s in stages if s not in STAGES]
    if missing:
        raise ValueError(f"stages {missing} are not kept by the gap study; choose from {STAGES}")
    run = gap_study(name, profile, seed=seed, cache=cache, progress=progress).adam
    device = default_device(device)
    built = build(name, SETTINGS[profile]["size"], seed=seed, device=device)
    data = [to_device(batch, device) for batch in hessian_data(built, profile, seed=seed)]
    num_steps, num_probes = FULL_SETTINGS[profile]
    out = {}
    for stage in tqdm(stages, desc=f"{name} full spectra", disable=not progress):
        built.model.load_state_dict(run.states[stage])
        operator = HessianOperator(built.model, built.loss_fn, data, batchnorm="train")
        out[stage] = slq(operator, num_steps=num_steps, num_probes=num_probes, seed=seed, cache=cache, progress=False)
    return out


def normalized_by_lambda10(spectrum: SpectralDensity, k: int = 10) -> SpectralDensity:
    """The spectrum with its eigenvalue axis divided by λ_k (per-probe k-th largest Ritz value, median over probes).

    Falls back to the largest eigenvalue when λ_k is not positive (recorded in ``info``).
    """
    scale = spectrum.kth_largest(k)
    if np.isfinite(scale) and scale > 0:
        return spectrum.normalized(k)
    out = spectrum.normalized(by=spectrum.lambda_max)
    out.info["normalized_by"] = f"lambda_max (lambda_{k} = {scale:.3g} is not positive)"
    return out


def cross_family_js(spectra: dict[str, dict[float, SpectralDensity]], a: str, b: str, variant: str = "log") -> dict:
    """JS between the λ₁₀-normalised full spectra of models ``a`` and ``b`` at each common stage.

    Each spectrum is divided by its own λ₁₀ (as Figure 1), then compared like the blockwise
    spectra (:data:`hesslab.heterogeneity.JS_VARIANTS`), so the numbers are comparable with JS⁰.
    """
    options = dict(JS_VARIANTS[variant], normalize=None)
    stages = [s for s in spectra[a] if s in spectra[b]]
    return {s: js_distance(normalized_by_lambda10(spectra[a][s]), normalized_by_lambda10(spectra[b][s]), **options)
            for s in stages}


__all__ = ["FULL_SETTINGS", "spectra_over_training", "normalized_by_lambda10", "cross_family_js"]
