"""Full-Hessian spectra over training (Figure 1).

:func:`spectra_over_training` takes the best AdamW run of a model's gap study
(:func:`hesslab.experiments.gap.gap_study`, which keeps the model state at :data:`hesslab.experiments.gap.STAGES`)
and measures the SLQ spectrum of the *full* Hessian at every stage
(:func:`full_spectrum`), and its ten largest eigenvalues with multiplicity
(:func:`hesslab.top_eigenvalues`, for the λ₁₀ normalisation of Figure 1), on the
profile's Hessian batches (:func:`hessian_batches`,
``split="hessian"`` of :func:`hesslab.experiments.batches.model_batches`). Everything a profile sets is in
:attr:`hesslab.experiments.profiles.Profile.full_spectra`. Batch-norm uses batch statistics (``batchnorm="train"``), as in the
blockwise chapters. Spectra are cached by :func:`hesslab.storage.cached.slq`.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from hesslab.distributed import run_on_ranks, shard
from hesslab.experiments import verdicts
from hesslab.experiments.data import default_device, to_device
from hesslab.experiments.scaleout import processes_for
from hesslab.experiments.gap import STAGES, gap_study
from hesslab.experiments.training import default_workers
from hesslab.storage.cache import open_cache
from hesslab.experiments.heterogeneity import JS_VARIANTS
from hesslab.hvp import HessianOperator
from hesslab.js import spectra_js
from hesslab.experiments.models import build
from hesslab.storage.cached import slq, top_eigenvalues
from hesslab.spectra import SpectralDensity
from hesslab.experiments.batches import hessian_batches
from hesslab.experiments.profiles import profile as get_profile

#: the operator's batch-norm mode: batch statistics, as the model is trained
BATCHNORM = "train"

#: Figure 1 divides every spectrum by its k-th largest eigenvalue (with multiplicity)
NORMALIZE_K = 10
#: residual tolerance of λ_k relative to λ_1: Weyl bounds λ_k's error by it, and Ritz values
#: converge quadratically, so λ_k is far closer (gpt2-nano at cpu: 2e-7 relative, 270 products)
NORMALIZE_TOL = 1e-3


def _check_stages(stages) -> None:
    missing = [s for s in stages if s not in STAGES]
    if missing:
        raise ValueError(f"stages {missing} are not kept by the gap study; choose from {STAGES}")


def spectra_over_training(name: str, profile: str = "cpu", *, stages=STAGES, seed: int = 0, device=None,
                          cache=True, progress: bool = True) -> dict[float, SpectralDensity]:
    """SLQ spectra of the full Hessian of ``name`` at fractions of its best AdamW run.

    Args:
        name: a model of :data:`hesslab.experiments.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"`` (:attr:`hesslab.experiments.profiles.Profile.full_spectra`).
        stages: fractions of training, a subset of :data:`hesslab.experiments.gap.STAGES`.
        seed: initialisation, data and probe seed.
        device: where to compute (default: CUDA when available).
        cache: cache for the training runs and the spectra.
        progress: progress bars (one tick per stage).

    Stages not stored yet are computed in worker processes on a CPU (one per core, as the
    gap study trains), else one after the other, each on every visible GPU at the ``paper``
    profile (data-parallel ranks, :mod:`hesslab.experiments.scaleout`).

    Returns:
        ``{stage: SpectralDensity}`` in raw eigenvalue units; ``info["top_eigenvalues"]``
        and ``info["top_residuals"]`` hold the :data:`NORMALIZE_K` largest eigenvalues
        (with multiplicity) and their residuals.
    """
    _check_stages(stages)
    run = gap_study(name, profile, seed=seed, cache=cache, progress=progress, device=device).adam
    device = default_device(device)
    out = {stage: _stage_spectrum(name, profile, run.states[stage], seed, device, cache, stored_only=True)
           for stage in stages}
    todo = [stage for stage in stages if out[stage] is None]
    full = get_profile(profile).full_spectra
    # work per stage: the SLQ products, and about as many again for the top eigenvalues
    workers = min(len(todo), default_workers(device, work=2 * full.num_steps * full.num_probes))
    if workers > 1:
        store = open_cache(cache)
        root = None if store is None else store.root  # the resolved folder: the same in every process
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            threads = max(1, torch.get_num_threads() // workers)
            futures = {stage: pool.submit(_stage_in_worker, threads, name, profile, run.states[stage], seed, root)
                       for stage in todo}
            for stage in tqdm(todo, desc=f"{name} full spectra ({workers} processes)", disable=not progress):
                out[stage] = futures[stage].result()
    else:
        ranks = processes_for(profile, device)  # every visible GPU at the paper profile
        store = open_cache(cache)
        for stage in tqdm(todo, desc=f"{name} full spectra" + (f" ({ranks} ranks)" if ranks > 1 else ""),
                          disable=not progress):
            if ranks > 1:
                state = {k: v.cpu() for k, v in run.states[stage].items()}
                out[stage] = run_on_ranks("hesslab.experiments.full_spectra:_stage_spectrum", dict(
                    name=name, profile=profile, state=state, seed=seed, device=device.type,
                    cache=None if store is None else store.root), ranks, cuda=device.type == "cuda")
            else:
                out[stage] = _stage_spectrum(name, profile, run.states[stage], seed, device, cache)
    return {stage: out[stage] for stage in stages}


def _stage_in_worker(threads: int, name: str, profile: str, state: dict, seed: int, cache_root) -> SpectralDensity:
    """:func:`_stage_spectrum` on the CPU in a worker process with ``threads`` intra-op threads."""
    torch.set_num_threads(threads)
    return _stage_spectrum(name, profile, state, seed, torch.device("cpu"), cache_root)


def _stage_spectrum(name: str, profile: str, state: dict, seed: int, device, cache,
                    stored_only: bool = False) -> SpectralDensity | None:
    """The full spectrum and top eigenvalues of ``name`` with weights ``state`` (None if ``stored_only`` and not stored)."""
    settings = get_profile(profile)
    built = build(name, settings.model_size, seed=seed, device=device)
    built.model.load_state_dict(state)
    data = [to_device(batch, device)  # this rank's share under torch.distributed, else all
            for batch in shard(hessian_batches(built, settings.full_spectra, seed=seed))]
    operator = HessianOperator(built.model, built.loss_fn, data, batchnorm=BATCHNORM)
    spectrum = slq(operator, num_steps=settings.full_spectra.num_steps, num_probes=settings.full_spectra.num_probes,
                   seed=seed, cache=cache, progress=False, stored_only=stored_only)
    top = top_eigenvalues(operator, NORMALIZE_K, tol=NORMALIZE_TOL, seed=seed, cache=cache, stored_only=stored_only)
    if spectrum is None or top is None:
        return None
    spectrum.info.update(top_eigenvalues=top.values.tolist(), top_residuals=top.residuals.tolist(),
                         top_converged=top.converged)
    return spectrum


def full_spectrum(name: str, profile: str = "cpu", stage: float = 1.0, **options) -> SpectralDensity:
    """SLQ spectrum of the full Hessian of ``name`` at one ``stage`` of its best AdamW run.

    Args:
        name: a model of :data:`hesslab.experiments.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        stage: a fraction of training in :data:`hesslab.experiments.gap.STAGES`.
        **options: ``seed``, ``device``, ``cache``, ``progress`` as :func:`spectra_over_training`.

    Returns:
        The :class:`~hesslab.SpectralDensity` in raw eigenvalue units.
    """
    return spectra_over_training(name, profile, stages=(stage,), **options)[stage]


def normalized_by_lambda10(spectrum: SpectralDensity, k: int = NORMALIZE_K) -> SpectralDensity:
    """The spectrum with its eigenvalue axis divided by λ_k, the k-th largest eigenvalue counted with multiplicity.

    λ_k comes from ``info["top_eigenvalues"]`` (:func:`hesslab.top_eigenvalues`, as
    :func:`spectra_over_training` stores it) when present, else from the quadrature
    weights (:meth:`~hesslab.SpectralDensity.kth_largest`, an estimate). Falls back to
    the largest eigenvalue when λ_k is not positive. ``info["normalized_by"]`` says which.
    """
    top = spectrum.info.get("top_eigenvalues")
    if top is not None and len(top) >= k:
        scale, source = float(top[k - 1]), f"lambda_{k} (top_eigenvalues)"
    else:
        scale, source = spectrum.kth_largest(k), f"lambda_{k} (estimated from the SLQ weights)"
    if np.isfinite(scale) and scale > 0:
        out = spectrum.normalized(by=scale)
        out.info["normalized_by"] = source
        return out
    out = spectrum.normalized(by=spectrum.lambda_max)
    out.info["normalized_by"] = f"lambda_max (lambda_{k} = {scale:.3g} is not positive)"
    return out


def cross_family_js(spectra: dict[str, dict[float, SpectralDensity]], a: str, b: str, variant: str = "log") -> dict:
    """The JS divergence between the λ₁₀-normalised full spectra of models ``a`` and ``b`` at each common stage.

    Each spectrum is divided by its own λ₁₀ (as Figure 1), then compared like the blockwise
    spectra (:data:`hesslab.experiments.heterogeneity.JS_VARIANTS`), so the numbers are comparable with JS⁰.
    """
    options = dict(JS_VARIANTS[variant], normalize=None)
    stages = [s for s in spectra[a] if s in spectra[b]]
    return {s: spectra_js(normalized_by_lambda10(spectra[a][s]), normalized_by_lambda10(spectra[b][s]), **options)
            for s in stages}


def cross_js_table(spectra_by_seed: dict, families: dict[str, str], variant: str = "log") -> pd.DataFrame:
    """JS between the λ₁₀-normalised full spectra of every pair of models, per seed and stage.

    Args:
        spectra_by_seed: seed -> model -> stage -> :class:`~hesslab.SpectralDensity`
            (:func:`spectra_over_training` per seed).
        families: model -> family.
        variant: a JS⁰ variant (:data:`hesslab.experiments.heterogeneity.JS_VARIANTS`).

    Returns:
        One row per (seed, pair, stage): ``seed``, ``kind`` (``"cross"`` for a CNN and a
        Transformer, ``"within"`` for two models of one family), ``pair``, ``stage``, ``js``.
    """
    rows = []
    for seed, spectra in spectra_by_seed.items():
        names = list(spectra)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                pair = {families[a], families[b]}
                kind = "cross" if pair == {"cnn", "transformer"} else "within" if len(pair) == 1 else None
                if kind is None:
                    continue
                for stage, js in cross_family_js(spectra, a, b, variant).items():
                    rows.append({"seed": seed, "kind": kind, "pair": f"{a} vs {b}", "stage": stage, "js": js})
    return pd.DataFrame(rows)


#: Figure 1's claim holds when the median CNN-vs-Transformer JS is at most this many times
#: the median same-family JS (the family does not show in the full spectrum)
ALIKE_FACTOR = 1.5


def figure1_verdicts(cross: pd.DataFrame, blockwise: pd.Series) -> dict[str, verdicts.Verdict]:
    """The two parts of Figure 1's claim, judged over seeds.

    * ``"alike"``: the full spectra of a CNN and a Transformer differ no more than two models
      of one family do: per seed, median same-family JS × :data:`ALIKE_FACTOR` over median
      CNN-vs-Transformer JS above 1 (:func:`verdicts.ratio_verdict`);
    * ``"blocks_differ_more"``: the blocks of one Transformer differ more among themselves
      than a CNN's and a Transformer's full spectra: per seed, the median Transformer JS⁰
      (``blockwise``, indexed by seed) over the median CNN-vs-Transformer JS above 1.

    Args:
        cross: :func:`cross_js_table` output.
        blockwise: seed -> the median blockwise JS⁰ of the Transformers (same variant).
    """
    medians = cross.groupby(["seed", "kind"]).js.median().unstack()
    out = {}
    if "within" in medians and "cross" in medians:
        out["alike"] = verdicts.ratio_verdict(ALIKE_FACTOR * medians.within, medians.cross,
                                              what=f"{ALIKE_FACTOR:g} × same-family / CNN-vs-Transformer median JS")
    seeds = medians.index.intersection(blockwise.index)
    out["blocks_differ_more"] = verdicts.ratio_verdict(blockwise.loc[seeds], medians.cross.loc[seeds],
                                                       what="Transformer JS⁰ / CNN-vs-Transformer full-spectrum JS")
    return out


def spike_share(spectrum: SpectralDensity, width: float = 0.1) -> float:
    """The share of spectral mass within ``±width`` of zero (nodes weighted, probes averaged)."""
    nodes = np.nan_to_num(spectrum.nodes, nan=np.inf)
    return float((spectrum.weights * (np.abs(nodes) < width)).sum() / spectrum.num_probes)


__all__ = ["BATCHNORM", "NORMALIZE_K", "ALIKE_FACTOR", "spectra_over_training", "full_spectrum",
           "normalized_by_lambda10", "cross_family_js", "cross_js_table", "figure1_verdicts", "spike_share"]
