"""Beyond the papers: can a learning rate per block, set from measured curvature, rescue SGD?

Both papers conclude that one learning rate cannot serve blocks whose Hessians live on
different scales. This module tests the obvious remedy. At initialisation it measures each
block's largest Hessian eigenvalue λ_b (Lanczos on the block's Hessian, the same operator
as the blockwise spectra), gives block ``b`` the gradient factor

    s_b = λ_ref / max(λ_b, λ_ref / MAX_FACTOR),     λ_ref = max_b λ_b,

so the stiffest block keeps the base learning rate and flatter blocks get proportionally
larger ones (at most :data:`MAX_FACTOR` times), and grid-searches that base rate for SGD with
momentum as the gap study searches plain SGD's (on a grid reaching lower, :func:`block_grid`) (:func:`hesslab.experiments.gap.gap_study`;
the factors act as :attr:`hesslab.experiments.training.TrainConfig.block_scales`).
Gradient descent on a quadratic is stable for step sizes below 2/λ_max, so the rule gives
every block the same stability margin. The factors are
measured once, at initialisation, and not refreshed during training (the book's choice).

The blocks are the model's default partition (:class:`hesslab.experiments.models.ModelSpec`
``blocks``: every tensor its own block, GPT-2's ``c_attn`` split into Q, K and V), which
covers every parameter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import hesslab.experiments.training as _train
from hesslab.experiments import verdicts
from hesslab.experiments.batches import hessian_batches
from hesslab.experiments.data import default_device, to_device
from hesslab.experiments.gap import GapStudy, base_config, fresh_model, gap_study, relative_gap, training_inputs
from hesslab.experiments.heterogeneity import BATCHNORM
from hesslab.experiments.models import build, spec
from hesslab.experiments.profiles import profile as get_profile
from hesslab.storage.cached import blockwise_slq

#: the largest learning-rate factor a block gets (flatter blocks are capped at it)
MAX_FACTOR = 1000.0

#: Lanczos steps and probes for each block's λ_max (extreme Ritz values converge first)
CURVATURE_STEPS, CURVATURE_PROBES = 10, 1

#: per-block SGD searches plain SGD's grid extended downwards by these multiples of its smallest
#: rate: the base rate is the stiffest block's, and the flatter blocks' factors make the whole
#: step larger than plain SGD's at the same base rate
GRID_EXTENSION = (1 / 10, 1 / 3)

#: the optimiser's name in tables and figures
BLOCK_SGD = "sgd-per-block"


def block_curvatures(name: str, profile: str = "cpu", *, seed: int = 0, cache=True, progress: bool = True,
                     device=None, options: dict | None = None) -> pd.Series:
    """λ_max of every block of ``name``'s default partition at initialisation.

    Args:
        name: a model of :data:`hesslab.experiments.models.NAMES`.
        profile: its Hessian batches (the profile's ``blockwise`` settings).
        seed: initialisation and data seed.
        cache: see :func:`hesslab.storage.cached.blockwise_slq`.
        progress: progress bar.
        device: where to compute.
        options: model options of :func:`~hesslab.experiments.models.build` (e.g. the knob MLP's ``c``).

    Returns:
        Block name -> the largest Ritz value over probes, in the loss's units per parameter².
    """
    settings = get_profile(profile)
    device = default_device(device)
    built = build(name, settings.model_size, seed=seed, device=device, **(options or {}))
    data = [to_device(batch, device) for batch in hessian_batches(built, settings.blockwise, seed=seed)]
    spectra = blockwise_slq(built.model, built.loss_fn, data, built.blocks, num_steps=CURVATURE_STEPS,
                            num_probes=CURVATURE_PROBES, seed=0, batchnorm=BATCHNORM, cache=cache, progress=progress,
                            cache_key={"model_options": options} if options else None)
    return pd.Series({block: s.lambda_max for block, s in spectra.items()}, name="lambda_max")


def block_factors(curvatures: pd.Series, max_factor: float = MAX_FACTOR) -> pd.Series:
    """The gradient factor of every block: ``λ_ref / max(λ_b, λ_ref / max_factor)`` (1 for the stiffest).

    Raises:
        ValueError: no block has positive curvature.
    """
    reference = float(curvatures.max())
    if not reference > 0:
        raise ValueError("no block has a positive largest eigenvalue; per-block learning rates are undefined")
    factors = reference / np.maximum(curvatures.to_numpy(), reference / max_factor)
    return pd.Series(factors.round(6), index=curvatures.index, name="factor")


@dataclass
class RescueStudy:
    """The gap study of one model and seed, and the best SGD run with a learning rate per block.

    Attributes:
        gap: the :class:`~hesslab.experiments.gap.GapStudy` (best AdamW and SGD).
        block_sgd: the best run of SGD with per-block factors.
        factors: block -> gradient factor.
        runs: learning rate -> run of the per-block grid.
    """

    gap: GapStudy
    block_sgd: _train.TrainResult
    factors: pd.Series
    runs: dict

    @property
    def relative_gap(self) -> float:
        """:attr:`GapStudy.relative_gap` of the per-block SGD run: its shortfall behind AdamW."""
        return relative_gap(self.gap.initial_loss, self.gap.adam.final_loss, self.block_sgd.final_loss)


def rescue_study(name: str, profile: str = "cpu", *, seed: int = 0, cache=True, progress: bool = True,
                 device=None, options: dict | None = None) -> RescueStudy:
    """AdamW, SGD and SGD with a learning rate per block on ``name``, each on its best learning rate.

    The per-block run uses plain SGD's settings and its learning-rate grid extended downwards
    (:func:`block_grid`; the base rate is the stiffest block's), so the three differ only in
    the step sizes.

    Args:
        name: a model of :data:`hesslab.experiments.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        seed: initialisation and data seed.
        cache: where runs and spectra are cached.
        progress: progress bars.
        device: where to train and measure.
        options: model options of :func:`~hesslab.experiments.models.build` (e.g. the knob MLP's ``c``).
    """
    study = gap_study(name, profile, seed=seed, cache=cache, progress=progress, device=device, options=options)
    factors = block_factors(block_curvatures(name, profile, seed=seed, cache=cache, progress=progress, device=device,
                                             options=options))
    settings, built, batches, key = training_inputs(name, profile, seed, options)
    config = base_config(settings, "sgd", seed, block_scales=tuple((b, float(f)) for b, f in factors.items()),
                         scale_blocks=spec(name).blocks)
    device = default_device(device)
    best, runs = _train.grid_search(
        functools.partial(fresh_model, name, settings["size"], seed, options), built.loss_fn, batches, config,
        block_grid(settings["lrs"]["sgd"]), cache=cache, cache_key=key, progress=progress, device=device,
        workers=_train.default_workers(device, work=settings["steps"]))
    return RescueStudy(study, best, factors, runs)


def block_grid(sgd_grid) -> list[float]:
    """Per-block SGD's base learning rates: plain SGD's ``sgd_grid`` and :data:`GRID_EXTENSION` times its smallest."""
    low = min(sgd_grid)
    return sorted({float(f"{low * f:.3g}") for f in GRID_EXTENSION} | {float(lr) for lr in sgd_grid})


def model_label(name: str, options: dict | None = None) -> str:
    """``name``, with its model options when it has any: ``"hetero-mlp (c=8, reparametrized)"``."""
    if not options:
        return name
    return f"{name} (" + ", ".join(k if v is True else f"{k}={v:g}" for k, v in options.items()) + ")"


def rescue_over_seeds(names, profile: str = "cpu", *, seeds=(0, 1, 2), cache=True, progress: bool = True,
                      device=None, options: dict | None = None) -> pd.DataFrame:
    """:func:`rescue_study` for every model and seed, one row each.

    Args:
        names: models of :data:`hesslab.experiments.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        seeds: initialisation and data seeds (at least 3 for a margin).
        cache: where runs are cached.
        progress: progress bar over the studies.
        device: where to train.
        options: model name -> its model options (e.g. ``{"hetero-mlp": {"c": 8.0}}``); such a
            model's rows name them, e.g. ``"hetero-mlp (c=8)"``.

    Returns:
        Columns ``model``, ``seed``, ``family``, ``initial``, ``adam``, ``sgd``, ``block_sgd``
        (final training losses of the best runs), ``sgd_lr``, ``block_lr``,
        ``relative_gap`` (SGD's), ``block_relative_gap`` (per-block SGD's), ``closed`` (the
        share of SGD's gap the per-block rates close, ``(sgd − block_sgd) / (sgd − adam)``)
        and ``max_factor`` (the largest factor a block got).
    """
    rows = []
    for name, seed in tqdm([(n, s) for n in names for s in seeds], desc="per-block SGD", disable=not progress):
        given = (options or {}).get(name)
        r = rescue_study(name, profile, seed=seed, cache=cache, progress=False, device=device, options=given)
        g = r.gap
        rows.append({"model": model_label(name, given), "seed": seed, "family": g.family, "initial": g.initial_loss,
                     "adam": g.adam.final_loss, "sgd": g.sgd.final_loss, "block_sgd": r.block_sgd.final_loss,
                     "sgd_lr": g.sgd.config.lr, "block_lr": r.block_sgd.config.lr,
                     "relative_gap": g.relative_gap, "block_relative_gap": r.relative_gap,
                     "closed": closed_share(g.adam.final_loss, g.sgd.final_loss, r.block_sgd.final_loss),
                     "max_factor": float(r.factors.max())})
    return pd.DataFrame(rows)


def closed_share(adam: float, sgd: float, block_sgd: float) -> float:
    """``(sgd − block_sgd) / (sgd − adam)``: 1 closes SGD's gap to AdamW, 0 changes nothing (nan without a gap)."""
    return (sgd - block_sgd) / (sgd - adam) if sgd > adam else float("nan")


#: a family's gap is "closed by at least half" when the closed share's mean − sd exceeds this
HALF = 0.5


def rescue_report(long: pd.DataFrame, profile: str) -> str:
    """The rescue chapter's verdicts, in Markdown, from :func:`rescue_over_seeds`.

    Per model: does per-block SGD beat plain SGD (:func:`verdicts.ordering_verdict` on the
    relative gaps over seeds), and how much of the gap does it close (mean ± sd of
    :func:`closed_share`; "at least half" when mean − sd > :data:`HALF` and every seed closes
    more than half). There is no paper claim to reproduce: the lines say what was measured.
    """
    lines = [f"**What we measured ({profile} profile, {long.seed.nunique()} seeds; relative gap = "
             f"(SGD − AdamW) / (initial − AdamW) final training loss).**"]
    for name, rows in long.groupby("model", sort=False):
        better = verdicts.ordering_verdict(rows.block_relative_gap.to_numpy(), rows.relative_gap.to_numpy(),
                                           what=f"{name}: relative gap of per-block SGD vs plain SGD")
        closed = rows.closed.to_numpy()
        if np.isnan(closed).any():
            share = "plain SGD is not behind AdamW on every seed, so there is no gap to close"
        else:
            half = len(closed) > 1 and (closed > HALF).all() and closed.mean() - closed.std(ddof=1) > HALF
            share = (f"it closes {closed.mean():.0%} ± {closed.std(ddof=1) if len(closed) > 1 else float('nan'):.0%} "
                     f"of SGD's gap ({'at least half, beyond the seed spread' if half else 'not established as at least half'})")
        lines.append(f"* **{name}** ({rows.family.iloc[0]}): per-block SGD "
                     f"{better.says('beats', 'does **not** beat')} plain SGD beyond the seed spread ({better}); {share}.")
    return "\n".join(lines)
