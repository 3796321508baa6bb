"""Figure 5: the heterogeneity knob, the paper's causal test of "heterogeneity hurts SGD".

Zhang et al. build an MLP whose degree of block heterogeneity is a parameter and report
that SGD falls behind Adam as it rises, with no gap when there is none. The paper's exact
construction is unverified; the book's is :class:`~hesslab.experiments.models.handwritten.HeterogeneousMLP`
(``"hetero-mlp"``): layer ``l``'s output multiplied by ``c**l`` (``l = 0, 1, …``), tanh
between layers, trained on the flattened 8×8 digits. ``c = 1`` is a plain MLP.

Per multiplier ``c`` and seed, :func:`knob_sweep` measures JS⁰ at initialisation (every
variant of :data:`hesslab.experiments.heterogeneity.JS_VARIANTS`, the model's blockwise
spectra at the profile's Lanczos settings) and the relative Adam–SGD gap (learning rates
tuned on the profile's ``"hetero-mlp"`` grids, as the gap chapter does; :func:`knob_gap_study`).
:func:`knob_report` turns the sweep, and the MLP-mixer's and the CNNs' JS⁰ and the mixer's
gap (Figure 5(b, c)), into verdicts with margins. Every computation is cached, with ``c`` in
its key: the model's multipliers are a buffer, part of the model fingerprint, and ``c`` is
also named in the keys' descriptions.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hesslab.experiments import heterogeneity as het
from hesslab.experiments import verdicts
from hesslab.experiments.gap import GapStudy, gap_settings, gap_study

#: the model whose heterogeneity is the knob
MODEL = "hetero-mlp"

#: the JS⁰ variant the verdicts read: the book's own log10|λ| axis, chosen before the sweep
#: because the knob moves the blocks' curvature scales apart by orders of magnitude
VARIANT = "log"

#: the gap whose rise with ``c`` is judged: the final-loss difference in nats. Every ``c``
#: trains the same 10-class task, so losses share one scale; the relative gap's denominator
#: (initial − AdamW) would grow with the multipliers' inflated initial loss (cpu: 2.3 nats at
#: c = 1, 433 at c = 8) and shrink the gap by construction. The relative gap is reported too.
GAP_COLUMN = "gap"

#: "the gap vanishes" at ``c = 1``: SGD's relative gap below this in every seed (SGD makes
#: at least 90 % of AdamW's progress from the initial loss; negative means SGD is ahead)
NEGLIGIBLE_GAP = 0.1

#: the loss of a uniform guess over the digits' 10 classes (nats): a run that ends above it
#: has learned nothing, and a gap between two such runs compares two failures
CHANCE_LOSS = math.log(10)

#: the CNNs the MLP-mixer's JS⁰ is compared with (Figure 5(b), the paper's Table 1 CNNs)
CNNS = ("resnet18", "vgg16")


def model_options(c: float, reparametrized: bool = False) -> dict:
    """The :func:`~hesslab.experiments.models.build` options of the knob MLP.

    ``reparametrized`` appears only when set, so the default construction keeps its cache keys.
    """
    return {"c": float(c), **({"reparametrized": True} if reparametrized else {})}


def knob_gap_study(c: float, profile: str = "cpu", *, seed: int = 0, cache=True, progress: bool = True,
                   device=None, reparametrized: bool = False) -> GapStudy:
    """:func:`hesslab.experiments.gap.gap_study` of the heterogeneous MLP with multiplier ``c``.

    The same budget, schedule and learning-rate grids as the gap study of ``"hetero-mlp"``
    (:func:`hesslab.experiments.gap.gap_settings`); the model is built with ``c`` and the
    runs' cache key names ``c`` (the model's multipliers, a buffer, are keyed as well).

    Args:
        c: the layer multiplier base (layer ``l``'s output times ``c**l``).
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        seed: initialisation and data seed.
        cache: where runs are cached (``True``: the default cache; ``None``: no cache).
        progress: progress bars.
        device: where to train (default: CUDA when available).
        reparametrized: the construction that keeps the network's function (see
            :class:`~hesslab.experiments.models.handwritten.HeterogeneousMLP`).

    Returns:
        The :class:`~hesslab.experiments.gap.GapStudy` (its ``settings`` gain the model options).
    """
    options = model_options(c, reparametrized)
    lrs = gap_settings(MODEL, profile)["lrs"]
    if reparametrized:  # Adam's steps in layer l's weights grow as c**l: its grid reaches lower
        low = min(lrs["adamw"])
        lrs["adamw"] = sorted({float(f"{low * 10 ** (-k / 2):.3g}") for k in range(1, 5)} | set(lrs["adamw"]))
    return gap_study(MODEL, profile, seed=seed, cache=cache, progress=progress, device=device, options=options,
                     lrs=lrs)


def at_grid_edge(runs: dict) -> bool:
    """Whether the best learning rate of one optimiser's grid (``{lr: TrainResult}``) is its smallest or largest."""
    lrs = sorted(runs)
    best = min(lrs, key=lambda lr: runs[lr].final_loss)
    return best in (lrs[0], lrs[-1])


def knob_sweep(c_values, profile: str = "cpu", *, seeds=(0, 1, 2), cache=True, progress: bool = True,
               device=None, reparametrized: bool = False) -> pd.DataFrame:
    """JS⁰ at initialisation and the relative Adam–SGD gap of the heterogeneous MLP, per ``c`` and seed.

    Seed ``s`` initialises the model, draws its Hessian and training data and its probe
    vectors, so the spread over seeds is the whole measurement's.

    Args:
        c_values: layer multiplier bases (e.g. ``[1, 2, 4, 8]``).
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        seeds: initialisation seeds (at least 2 for a margin).
        cache: where results are cached.
        progress: progress bar over the ``(c, seed)`` points.
        device: where to compute.
        reparametrized: the construction that keeps the network's function at initialisation.

    Returns:
        One row per ``(c, seed)``: ``c``, ``seed``, ``js0_<variant>`` for every variant of
        :data:`hesslab.experiments.heterogeneity.JS_VARIANTS`, ``scale_spread`` (decades between
        the blocks' largest eigenvalues), ``initial``, ``adam``, ``sgd`` (training losses: at
        initialisation, final of the best AdamW and SGD runs), ``adam_lr``, ``sgd_lr``,
        ``adam_edge``, ``sgd_edge`` (best rate at an end of its grid), ``gap`` and ``relative_gap``.
    """
    points = [(float(c), seed) for c in c_values for seed in seeds]
    rows = []
    for c, seed in tqdm(points, desc="heterogeneity knob", disable=not progress):
        spectra = het.blockwise_at_init(MODEL, profile, seed=seed, probe_seed=seed, cache=cache, progress=False,
                                        device=device, options=model_options(c, reparametrized))
        study = knob_gap_study(c, profile, seed=seed, cache=cache, progress=False, device=device,
                               reparametrized=reparametrized)
        rows.append({"c": c, "seed": seed, **{f"js0_{k}": v for k, v in het.js0_variants(spectra).items()},
                     "scale_spread": het.scale_spread(spectra), "initial": study.initial_loss,
                     "adam": study.adam.final_loss, "sgd": study.sgd.final_loss,
                     "adam_lr": study.adam.config.lr, "sgd_lr": study.sgd.config.lr,
                     "adam_edge": at_grid_edge(study.runs["adamw"]), "sgd_edge": at_grid_edge(study.runs["sgd"]),
                     "gap": study.gap, "relative_gap": study.relative_gap})
    return pd.DataFrame(rows)


def knob_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per ``c`` (from :func:`knob_sweep`).

    Returns:
        Indexed by ``c`` (ascending): ``seeds``, then ``<measure>_mean`` and ``<measure>_sd``
        for every JS⁰ variant, ``scale_spread``, ``initial``, ``adam``, ``sgd``, ``gap`` and
        ``relative_gap``.
    """
    grouped = long.groupby("c")
    out = pd.DataFrame({"seeds": grouped.seed.nunique()})
    measures = [k for k in long.columns if k.startswith("js0_")] + [
        k for k in ("scale_spread", "initial", "adam", "sgd", "gap", "relative_gap") if k in long]
    for column in measures:
        out[f"{column}_mean"] = grouped[column].mean()
        out[f"{column}_sd"] = grouped[column].std(ddof=1)
    return out.sort_index()


def grid_edges(long: pd.DataFrame) -> list[str]:
    """``"c = 8, seed 1: sgd"`` for every sweep point whose best learning rate sits at an end of its grid."""
    out = []
    for _, row in long.iterrows():
        for optimizer in ("adam", "sgd"):
            if row[f"{optimizer}_edge"]:
                out.append(f"c = {row.c:g}, seed {row.seed}: {'adamw' if optimizer == 'adam' else 'sgd'}")
    return out


def _by_seed(long: pd.DataFrame, c: float, column: str) -> pd.Series:
    return long[long.c == c].set_index("seed")[column].sort_index()


def rise_verdict(long: pd.DataFrame, column: str, *, what: str) -> verdicts.Verdict:
    """Does ``column`` rise with ``c``? Both tests must hold.

    Spearman's ρ between ``c`` and ``column`` over every ``(c, seed)`` point, with its
    one-sided permutation p-value and bootstrap interval (:func:`verdicts.correlation_verdict`),
    and the smallest ``c`` below the largest in every seed, beyond the seed spread
    (:func:`verdicts.ordering_verdict`).

    Args:
        long: :func:`knob_sweep` output (at least two values of ``c``).
        column: the measure, e.g. ``"js0_log"`` or ``"relative_gap"``.
        what: the measure's name in the sentence.

    Returns:
        A :class:`~hesslab.experiments.verdicts.Verdict`; ``numbers`` has ``correlation`` and
        ``ordering`` (the two verdicts' numbers).
    """
    cs = sorted(long.c.unique())
    if len(cs) < 2:
        raise ValueError(f"the knob needs at least two values of c, got {cs}")
    correlation = verdicts.correlation_verdict(long.c.to_numpy(), long[column].to_numpy(),
                                               what=f"Spearman's ρ of c and {what}")
    low, high = _by_seed(long, cs[0], column), _by_seed(long, cs[-1], column)
    if not low.index.equals(high.index):
        raise ValueError(f"c = {cs[0]:g} and c = {cs[-1]:g} must have the same seeds")
    ordering = verdicts.ordering_verdict(low.to_numpy(), high.to_numpy(), what=f"{what} at c = {cs[0]:g} vs c = {cs[-1]:g}")
    holds = correlation.holds and ordering.holds
    return verdicts.Verdict(holds, f"{correlation}; {ordering}",
                            {"correlation": correlation.numbers, "ordering": ordering.numbers})


def vanishing_gap_verdict(long: pd.DataFrame, *, threshold: float = NEGLIGIBLE_GAP) -> verdicts.Verdict:
    """Is the relative gap at ``c = 1`` below ``threshold`` in every seed (no gap without heterogeneity)?

    Args:
        long: :func:`knob_sweep` output, with ``c = 1`` among its values.
        threshold: the largest relative gap that counts as none (default :data:`NEGLIGIBLE_GAP`).

    Returns:
        A :class:`~hesslab.experiments.verdicts.Verdict`; ``numbers`` has ``gaps`` (per seed),
        ``mean``, ``sd``, ``threshold``. A single seed is not enough (no spread).
    """
    gaps = _by_seed(long, 1.0, "relative_gap").to_numpy()
    if gaps.size == 0:
        raise ValueError("the sweep has no c = 1 (the MLP without heterogeneity)")
    sd = float(gaps.std(ddof=1)) if gaps.size > 1 else float("nan")
    numbers = {"gaps": gaps.tolist(), "mean": float(gaps.mean()), "sd": sd, "threshold": threshold}
    text = (f"relative gap at c = 1: {gaps.mean():.3g} ± {sd:.2g} (mean ± sd over {gaps.size} seeds; "
            f"range {gaps.min():.3g} to {gaps.max():.3g})")
    if gaps.size == 1:
        return verdicts.Verdict(False, f"{text}: a single seed, so not established", numbers)
    if (gaps < threshold).all():
        return verdicts.Verdict(True, f"{text}: below {threshold:g} in every seed", numbers)
    return verdicts.Verdict(False, f"{text}: not below {threshold:g} in every seed", numbers)


def mixer_verdicts(reference: pd.DataFrame, mixer_gaps: pd.DataFrame | None = None, *,
                   variant: str = VARIANT) -> dict[str, verdicts.Verdict]:
    """Figure 5(b, c): the MLP-mixer's JS⁰ above the CNNs', and SGD behind AdamW on it.

    Args:
        reference: :func:`hesslab.experiments.heterogeneity.js0_over_seeds` of ``"mlp-mixer"``
            and the CNNs (:data:`CNNS`), the same seeds.
        mixer_gaps: :func:`hesslab.experiments.gap.gap_over_seeds` of ``"mlp-mixer"`` (None: not judged).
        variant: the JS⁰ variant.

    Returns:
        ``{"mixer_js0": ..., "mixer_gap": ...}`` (the second only with ``mixer_gaps``):
        :func:`verdicts.ordering_verdict` of the largest CNN JS⁰ against the mixer's per seed,
        and of 0 against the mixer's relative gap per seed.
    """
    by_seed = reference.pivot(index="seed", columns="model", values=f"js0_{variant}")
    cnns = [m for m in CNNS if m in by_seed]
    if "mlp-mixer" not in by_seed or not cnns:
        raise ValueError(f"reference needs 'mlp-mixer' and at least one of {CNNS}, got {list(by_seed)}")
    out = {"mixer_js0": verdicts.ordering_verdict(by_seed[cnns].max(axis=1).to_numpy(), by_seed["mlp-mixer"].to_numpy(),
                                                  what=f"JS⁰ of the largest CNN ({', '.join(cnns)}) vs the MLP-mixer")}
    if mixer_gaps is not None:
        gaps = mixer_gaps[mixer_gaps.model == "mlp-mixer"].sort_values("seed").relative_gap.to_numpy()
        out["mixer_gap"] = verdicts.ordering_verdict(np.zeros_like(gaps), gaps,
                                                     what="no gap vs the MLP-mixer's relative gap")
    return out


def knob_verdicts(long: pd.DataFrame, reference: pd.DataFrame | None = None, mixer_gaps: pd.DataFrame | None = None,
                  *, variant: str = VARIANT) -> dict[str, verdicts.Verdict]:
    """Every Figure 5 verdict: ``"js0_rises"``, ``"gap_rises"`` (:data:`GAP_COLUMN`), ``"gap_vanishes"``, the mixer's.

    Args:
        long: :func:`knob_sweep` output.
        reference: JS⁰ of the MLP-mixer and the CNNs (see :func:`mixer_verdicts`; None: not judged).
        mixer_gaps: the MLP-mixer's gaps (see :func:`mixer_verdicts`).
        variant: the JS⁰ variant (default :data:`VARIANT`).
    """
    out = {"js0_rises": rise_verdict(long, f"js0_{variant}", what="JS⁰"),
           "gap_rises": rise_verdict(long, GAP_COLUMN, what="the gap (nats)"),
           "gap_vanishes": vanishing_gap_verdict(long)}
    if reference is not None:
        out |= mixer_verdicts(reference, mixer_gaps, variant=variant)
    return out


def knob_report(long: pd.DataFrame, profile: str, reference: pd.DataFrame | None = None,
                mixer_gaps: pd.DataFrame | None = None, *, variant: str = VARIANT,
                model: str = "the book's knob MLP") -> str:
    """The Figure 5 chapter's verdict, in Markdown, computed from the sweep and the mixer's measurements.

    Each claim gets a sentence with its deciding numbers and "reproduces" or "does **not**
    reproduce"; the last line judges the paper's causal claim as a whole (JS⁰ and the gap
    rise with ``c``, and no gap at ``c = 1``). Best learning rates at a grid edge are named.

    Args:
        long: :func:`knob_sweep` output.
        profile: the profile's name, for the sentence.
        reference: JS⁰ of the MLP-mixer and the CNNs (None: Figure 5(b) not judged).
        mixer_gaps: the MLP-mixer's gaps (None: Figure 5(c) not judged).
        model: how the closing sentence names the swept model (e.g. its construction).
        variant: the JS⁰ variant the verdicts read.
    """
    found = knob_verdicts(long, reference, mixer_gaps, variant=variant)
    cs = sorted(long.c.unique())
    lines = [f"**What we obtained ({profile} profile, c ∈ {{{', '.join(f'{c:g}' for c in cs)}}}, "
             f"{long.seed.nunique()} seeds; JS⁰ on the {het.VARIANT_LABELS[variant]}; gap = SGD − AdamW final "
             f"training loss in nats; relative gap = the gap / (initial − AdamW)).**"]
    labels = {"js0_rises": "JS⁰ at initialisation rises with c",
              "gap_rises": "SGD falls further behind AdamW as c rises",
              "gap_vanishes": f"no gap without heterogeneity (relative gap below {NEGLIGIBLE_GAP:g} at c = 1)",
              "mixer_js0": "the MLP-mixer at initialisation is more heterogeneous than the CNNs (Figure 5(b))",
              "mixer_gap": "SGD behind AdamW on the MLP-mixer (Figure 5(c))"}
    for name, verdict in found.items():
        lines.append(f"* {labels[name][0].upper() + labels[name][1:]}: {verdict}. This {verdicts.reproduces(verdict)}.")
    failed = long[long.adam >= CHANCE_LOSS]
    if not failed.empty:
        lines.append(f"* AdamW ends at or above the chance loss ln 10 = {CHANCE_LOSS:.2f} nats at "
                     + ", ".join(f"c = {r.c:g} (seed {r.seed}: {r.adam:.3g})" for r in failed.itertuples())
                     + ": there AdamW did not learn the task within the budget, so the gap does not measure "
                     "SGD's shortfall.")
        learned = long[~long.c.isin(failed.c)]
        if learned.c.nunique() >= 2:
            kept = rise_verdict(learned, GAP_COLUMN, what="the gap (nats)")
            lines.append(f"* Post hoc, over the c values where AdamW learned in every seed only: {kept}. "
                         "This check was added after seeing the sweep; the verdict above is the one that counts.")
    others = {v: rise_verdict(long, f"js0_{v}", what="JS⁰") for v in het.JS_VARIANTS
              if v != variant and f"js0_{v}" in long}
    if others:
        lines.append("* JS⁰ under the other variants (the same two tests): " + "; ".join(
            f"{het.VARIANT_LABELS[v]}: ρ = {o.numbers['correlation']['rho']:.2f}, "
            + o.says("rises beyond the margins", "does not rise beyond the margins") for v, o in others.items()) + ".")
    if "scale_spread" in long:
        spread = rise_verdict(long, "scale_spread", what="the decades between the blocks' largest eigenvalues")
        lines.append(f"* The blocks' curvature scales move apart as c rises (a direct measure of the knob, not a "
                     f"JS⁰): {spread}.")
    relative = rise_verdict(long, "relative_gap", what="the relative gap")
    lines.append(f"* For comparison, the relative gap (the gap chapter's metric, whose denominator grows with the "
                 f"initial loss the multipliers inflate): {relative}.")
    edges = grid_edges(long)
    lines.append("* Best learning rates at an end of their grid: " + ("; ".join(edges) if edges else "none") + ".")
    whole = all(found[k].holds for k in ("js0_rises", "gap_rises", "gap_vanishes"))
    lines.append("\nThe paper's causal claim, that the Adam–SGD gap grows with block heterogeneity and vanishes "
                 "without it on one and the same architecture, "
                 + (f"**reproduces** on {model}." if whole else
                    f"does **not** reproduce on {model} beyond the seed spread."))
    return "\n".join(lines)
