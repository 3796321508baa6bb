"""Figure 7: JS⁰ at initialisation against the Adam–SGD gap, one point per model, over seeds.

Joins :func:`hesslab.experiments.heterogeneity.js0_over_seeds` (x) with
:func:`hesslab.experiments.gap.gap_over_seeds` (y: the relative gap, comparable across
tasks) and tests the paper's claim, "the larger JS⁰, the larger the gap", with
:func:`hesslab.experiments.verdicts.correlation_verdict` on the per-model means, the
spread of Spearman's ρ over seeds, and the rank of the CNNs on both axes.
"""

from __future__ import annotations

import pandas as pd

from hesslab.experiments import verdicts
from hesslab.experiments.heterogeneity import JS_VARIANTS, VARIANT_LABELS
from hesslab.experiments.verdicts import spearman_rho

__all__ = ["figure7_table", "seed_correlations", "figure7_report", "pair_report", "spearman_rho"]


def figure7_table(js_long: pd.DataFrame, gap_long: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean and sd over seeds of every JS⁰ variant and of the relative gap.

    Args:
        js_long: one row per ``(model, seed)`` with ``js0_<variant>`` columns.
        gap_long: one row per ``(model, seed)`` with ``relative_gap`` and ``modality``.

    Returns:
        Indexed by the models present in both tables (order of ``gap_long``): ``family``,
        ``modality``, ``<column>_mean`` / ``<column>_sd`` for each JS⁰ variant and ``relative_gap``.
    """
    merged = gap_long.merge(js_long.drop(columns=["family"]), on=["model", "seed"], how="inner")
    if merged.empty:
        raise ValueError("the JS⁰ and gap tables share no (model, seed) pair")
    order = [m for m in dict.fromkeys(gap_long.model) if m in set(merged.model)]
    grouped = merged.groupby("model")
    out = pd.DataFrame({"family": grouped.family.first(), "modality": grouped.modality.first()})
    for column in [f"js0_{v}" for v in JS_VARIANTS] + ["relative_gap"]:
        out[f"{column}_mean"] = grouped[column].mean()
        out[f"{column}_sd"] = grouped[column].std(ddof=1)
    return out.loc[order]


def seed_correlations(js_long: pd.DataFrame, gap_long: pd.DataFrame, variant: str) -> pd.Series:
    """Spearman's ρ between JS⁰ (``variant``) and the relative gap within each seed, indexed by seed."""
    merged = gap_long.merge(js_long.drop(columns=["family"]), on=["model", "seed"])
    return merged.groupby("seed").apply(
        lambda g: spearman_rho(g[f"js0_{variant}"].to_numpy(), g.relative_gap.to_numpy()), include_groups=False)


def figure7_report(js_long: pd.DataFrame, gap_long: pd.DataFrame, headline: str, profile: str) -> str:
    """The Figure 7 chapter's verdict, in Markdown.

    For every JS⁰ variant: Spearman's ρ between the per-model means of JS⁰ and of the
    relative gap, with its permutation p-value, n and bootstrap interval, and the range of ρ
    over seeds. The headline variant (chosen in the Table 1 chapter by reproducibility)
    decides; "the CNNs lowest on both axes" is checked separately.
    """
    table = figure7_table(js_long, gap_long)
    lines = [f"**What we obtained ({profile} profile, {len(table)} models, {gap_long.seed.nunique()} seeds).**"]
    decided = None
    for variant in JS_VARIANTS:
        x, y = table[f"js0_{variant}_mean"].to_numpy(), table.relative_gap_mean.to_numpy()
        verdict = verdicts.correlation_verdict(x, y, what="ρ")
        per_seed = seed_correlations(js_long, gap_long, variant)
        mark = " (headline)" if variant == headline else ""
        lines.append(f"* {VARIANT_LABELS[variant]}{mark}: {verdict}; ρ within single seeds ranges "
                     f"{per_seed.min():.2f} to {per_seed.max():.2f}.")
        if variant == headline:
            decided = verdict
    cnn = table.family == "cnn"
    if cnn.any() and (~cnn).any():
        lowest_js = bool(table.loc[cnn, f"js0_{headline}_mean"].max() < table.loc[~cnn, f"js0_{headline}_mean"].min())
        lowest_gap = bool(table.loc[cnn, "relative_gap_mean"].max() < table.loc[~cnn, "relative_gap_mean"].min())
        lines.append(f"* The CNNs {'have' if lowest_js else 'do **not** have'} the lowest mean JS⁰ (headline variant), "
                     f"and they {'have' if lowest_gap else 'do **not** have'} the lowest mean relative gap.")
    within = []
    for modality, group in table.groupby("modality"):
        if len(group) >= 3:
            rho = spearman_rho(group[f"js0_{headline}_mean"].to_numpy(), group.relative_gap_mean.to_numpy())
            within.append(f"{modality} ρ = {rho:.2f} (n = {len(group)})")
    if within:
        lines.append("* Within one modality (descriptive, too few models for a test): " + ", ".join(within) + ".")
    lines.append("\nOn the headline variant, the paper's claim that a larger JS⁰ comes with a larger gap "
                 + ("**reproduces**." if decided.holds else
                    f"does **not** reproduce (ρ = {decided.numbers['rho']:.2f}, p = {decided.numbers['p']:.3f})."))
    return "\n".join(lines)


def _by_seed(long: pd.DataFrame, model: str, column: str) -> pd.Series:
    values = long[long.model == model].set_index("seed")[column]
    if values.empty:
        raise ValueError(f"no rows for model {model!r}")
    return values


def pair_report(js_long: pd.DataFrame, gap_long: pd.DataFrame, low: str, high: str, headline: str,
                profile: str) -> str:
    """Figure 3's verdict in Markdown: is ``high`` (BERT) more heterogeneous than ``low`` (VGG), with a larger gap?

    Both comparisons are :func:`verdicts.ordering_verdict` over the seeds the two tables
    share: JS⁰ under the headline variant, the decades between the blocks' largest
    eigenvalues, and the relative gap. The figure's contrast reproduces only when the
    JS⁰ and the gap orderings both hold.
    """
    seeds = sorted(set(js_long.seed) & set(gap_long.seed))
    if not seeds:
        raise ValueError("the JS⁰ and gap tables share no seed")
    checks = {}
    for key, table, column, label in [("js0", js_long, f"js0_{headline}", f"JS⁰ ({VARIANT_LABELS[headline]})"),
                                      ("decades", js_long, "scale_spread", "decades between blocks"),
                                      ("gap", gap_long, "relative_gap", "relative gap")]:
        checks[key] = verdicts.ordering_verdict(_by_seed(table, low, column).loc[seeds].to_numpy(),
                                                _by_seed(table, high, column).loc[seeds].to_numpy(),
                                                what=f"{label}, {low} vs {high}")
    lines = [f"**What we obtained ({profile} profile, {len(seeds)} seeds).**"]
    lines += [f"* {verdict}." for verdict in checks.values()]
    holds = checks["js0"].holds and checks["gap"].holds
    lines.append(f"\nFigure 3's contrast ({high} more heterogeneous than {low}, and SGD further behind on it) "
                 + ("**reproduces**." if holds else "does **not** reproduce beyond the seed spread."))
    return "\n".join(lines)
