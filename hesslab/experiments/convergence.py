"""Is JS⁰ converged in the Hessian batch, the Lanczos steps and the probes? The verdict.

:func:`hesslab.experiments.heterogeneity.convergence_study` measures JS⁰ of one model while
one setting at a time moves away from the profile's values. :func:`convergence_verdict`
reads those tables for a CNN and a Transformer (or more models of each kind) and decides
whether the profile's settings are converged *for the comparison the book makes*: a model
is converged when JS⁰ moves, over the Hessian batches and over the Lanczos steps tried,
by less than half the separation between the families (the smallest non-CNN JS⁰ minus
the largest CNN JS⁰, both at the profile's settings). The numbers and the sentences the
convergence chapter prints come back in a :class:`ConvergenceVerdict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from hesslab.experiments.profiles import HessianSettings

#: settings whose spread decides convergence (probes are reported, not judged: pooling more
#: probes smooths every density and lowers JS⁰ systematically)
JUDGED_SETTINGS = ("batches", "steps")
#: the Hessian batch counts as "within the quadrature's variation" up to this much more spread
DATA_TOLERANCE = 0.01


@dataclass(frozen=True)
class ConvergenceVerdict:
    """What the convergence study says about the profile's JS⁰ values.

    All JS⁰ values are the book's log-axis variant (dimensionless, ``0 … ln 2``).

    Attributes:
        at_profile: model -> JS⁰ at the profile's settings (the ``steps`` row at the
            profile's Lanczos steps).
        separation: smallest non-CNN JS⁰ minus largest CNN JS⁰ at the profile's settings
            (NaN without both kinds of model).
        spreads: model -> setting (``"batches"``, ``"steps"``, ``"probes"``) -> largest
            minus smallest JS⁰ over that setting's values.
        probes: model -> ``(fewest, most, JS⁰ with fewest, JS⁰ with most)`` probes pooled.
        scale_variation: model -> largest minus smallest scale spread (decades) over every run.
        converged: model -> whether ``max(spreads[batches], spreads[steps]) < separation / 2``.
        ordering_margin: smallest non-CNN JS⁰ minus largest CNN JS⁰ over *every* run of
            the study (positive: the ordering CNN < Transformer holds throughout).
        data_within_quadrature: for every model, the Hessian batches move JS⁰ at most
            :data:`DATA_TOLERANCE` more than the Lanczos steps do.
        lines: one Markdown bullet per model, as the chapter prints it.
        conclusion: the Markdown sentences that follow the bullets.
    """

    at_profile: dict[str, float]
    separation: float
    spreads: dict[str, dict[str, float]]
    probes: dict[str, tuple[int, int, float, float]]
    scale_variation: dict[str, float]
    converged: dict[str, bool]
    ordering_margin: float
    data_within_quadrature: bool
    lines: list[str]
    conclusion: str

    @property
    def unconverged(self) -> list[str]:
        """The models whose JS⁰ is not converged for the CNN–Transformer comparison."""
        return [name for name, ok in self.converged.items() if not ok]


def setting_spread(study: pd.DataFrame, setting: str) -> float:
    """Largest minus smallest JS⁰ (all probes pooled) over the values of one setting.

    Args:
        study: a table of :func:`hesslab.experiments.heterogeneity.convergence_study`
            (columns ``setting``, ``value``, ``js0``, ...).
        setting: ``"batches"``, ``"steps"`` or ``"probes"``.
    """
    rows = study[study.setting == setting].js0
    return float(rows.max() - rows.min())


def convergence_verdict(studies: Mapping[str, pd.DataFrame], settings: HessianSettings,
                        families: Mapping[str, str] | None = None) -> ConvergenceVerdict:
    """Judge the profile's JS⁰ settings from convergence studies of CNNs and other models.

    Args:
        studies: model -> its :func:`~hesslab.experiments.heterogeneity.convergence_study`
            table; the ``steps`` rows must include ``settings.num_steps``.
        settings: the profile's blockwise Hessian settings
            (:attr:`hesslab.experiments.profiles.Profile.blockwise`).
        families: model -> family (``"cnn"`` or another); default
            :func:`hesslab.experiments.models.family_of`.

    Returns:
        The :class:`ConvergenceVerdict`.

    Raises:
        ValueError: a study has no ``steps`` row at the profile's Lanczos steps.
    """
    if families is None:
        from hesslab.experiments.models import family_of

        families = {name: family_of(name) for name in studies}
    at_profile = {}
    for name, study in studies.items():
        row = study[(study.setting == "steps") & (study.value == settings.num_steps)]
        if row.empty:
            raise ValueError(f"the convergence study of {name!r} has no run at the profile's {settings.num_steps} "
                             f"Lanczos steps (steps tried: {sorted(study[study.setting == 'steps'].value)}); "
                             "include it in `steps`")
        at_profile[name] = float(row.js0.iloc[0])
    cnns = [m for m in studies if families[m] == "cnn"]
    others = [m for m in studies if families[m] != "cnn"]
    both = bool(cnns and others)
    separation = min(at_profile[m] for m in others) - max(at_profile[m] for m in cnns) if both else float("nan")

    spreads, probes, scale_variation, converged, lines = {}, {}, {}, {}, []
    for name, study in studies.items():
        spreads[name] = {s: setting_spread(study, s) for s in ("batches", "steps", "probes")}
        by_probes = study[study.setting == "probes"]
        probes[name] = (int(by_probes.value.iloc[0]), int(by_probes.value.iloc[-1]), float(by_probes.js0.iloc[0]),
                        float(by_probes.js0.iloc[-1]))
        scale_variation[name] = float(study.scale_spread.max() - study.scale_spread.min())
        converged[name] = bool(max(spreads[name][s] for s in JUDGED_SETTINGS) < separation / 2)
        fewest, most, js_fewest, js_most = probes[name]
        lines.append(f"* **{name}** (JS⁰ {at_profile[name]:.3f} at the profile's settings): over the Hessian batches tried "
                     f"JS⁰ varies by {spreads[name]['batches']:.3f}, over the Lanczos steps by {spreads[name]['steps']:.3f}; "
                     f"pooling {fewest} vs {most} probes moves it from "
                     f"{js_fewest:.3f} to {js_most:.3f}; the scale spread stays within "
                     f"{scale_variation[name]:.2f} decades. "
                     + ("Converged for the CNN–Transformer comparison (variation below half the separation)."
                        if converged[name] else "**Not converged** for that comparison: the variation is at least half "
                                                "the separation."))
    data_within_quadrature = all(spreads[m]["batches"] <= spreads[m]["steps"] + DATA_TOLERANCE for m in studies)
    ordering_margin = (min(studies[m].js0.min() for m in others) - max(studies[m].js0.max() for m in cnns)
                       if both else float("nan"))
    unconverged = [name for name, ok in converged.items() if not ok]
    ordering = ("holds: the smallest Transformer value exceeds the largest CNN value by " + f"{ordering_margin:.3f}"
                if ordering_margin > 0 else "does **not** always hold")
    scale_margin = (min(studies[m].scale_spread.min() for m in others) - max(studies[m].scale_spread.max() for m in cnns)
                    if both else float("nan"))
    scale = (f"The scale spread (decades between the blocks' largest eigenvalues) separates the families in every run, "
             f"by at least {scale_margin:.2f} decades." if scale_margin > 0 else
             "The scale spread (decades between the blocks' largest eigenvalues) does **not** separate the families "
             "in every run either.")
    if not unconverged:
        settled = "The profile's settings are converged for the comparison the book makes."
    else:
        settled = ("So the profile's JS⁰ values of " + ", ".join(unconverged) + " carry an uncertainty comparable to "
                   "the CNN–Transformer difference: "
                   + ("the ordering holds in every run, but its size is not settled." if ordering_margin > 0 else
                      "neither the ordering nor its size is settled at these settings."))
    lowered = [m for m, (_, _, js_fewest, js_most) in probes.items() if js_most < js_fewest]
    pooling = ("Pooling more probes smooths each block's density and lowers JS⁰ for every model"
               if len(lowered) == len(probes) else
               "Pooling more probes lowers JS⁰ for " + (", ".join(lowered) if lowered else "no model")
               + " and not for the others")
    data = ("the Hessian batch moves JS⁰ no more than the Lanczos steps do, so the variation comes from the "
            "quadrature (steps and probes) rather than from the data" if data_within_quadrature else
            "the Hessian batch moves JS⁰ more than the Lanczos steps do: more data is needed")
    conclusion = (f"Over every setting tried, the ordering CNN < Transformer {ordering}. {settled} {scale} {pooling}, "
                  "so JS⁰ values are only comparable at the same number of probes (every chapter uses the "
                  f"profile's). How much data is enough: within the range tried, {data}.")
    return ConvergenceVerdict(at_profile=at_profile, separation=float(separation), spreads=spreads, probes=probes,
                              scale_variation=scale_variation, converged=converged,
                              ordering_margin=float(ordering_margin), data_within_quadrature=data_within_quadrature,
                              lines=lines, conclusion=conclusion)
