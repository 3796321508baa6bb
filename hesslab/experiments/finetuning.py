"""Figure 6: a pretrained Transformer against the same architecture from scratch.

The paper's claim (Zhang et al., Figure 6): at the start of fine-tuning, a pretrained
GPT-2's blockwise spectra are much less heterogeneous than a from-scratch Transformer's,
and SGD is only moderately behind Adam when fine-tuning it. The book compares a *pair*
that differs only in its weights (:data:`PAIRS`):

* ``"gpt2-pretrained"``: the profile's GPT-2 pretrained with AdamW on the first half of the
  offline text (:mod:`hesslab.experiments.pretraining`);
* ``"gpt2-scratch"``: the same GPT-2 at the initialisation that pretraining started from
  (the same seed), both measured and trained on the **second half** of the text.

Nothing here measures or trains on its own: JS⁰ comes from
:func:`hesslab.experiments.heterogeneity.js0_over_seeds`, the fine-tuning runs from
:func:`hesslab.experiments.gap.gap_study` (the gap study's budget and learning-rate grids,
the same for both models of a pair), the verdicts from :mod:`hesslab.experiments.verdicts`.
Unlike :func:`~hesslab.experiments.gap.gap_over_seeds`, :func:`finetuning_over_seeds` keeps a
seed in which AdamW did not lower a pretrained model's loss (little is left to learn), with
an undefined relative gap (NaN) that the verdict reports. :func:`pretrained_report` writes
the chapter's verdict.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from hesslab.experiments import verdicts
from hesslab.experiments.gap import gap_study
from hesslab.experiments.heterogeneity import JS_VARIANTS, VARIANT_LABELS, js0_over_seeds
from hesslab.experiments.models import spec

#: label -> (pretrained model, the same architecture from scratch), registry names
PAIRS = {"GPT-2": ("gpt2-pretrained", "gpt2-scratch")}

#: the JS⁰ variant that decides (the book's own log10|λ| axis)
HEADLINE = "log"


def finetuning_over_seeds(names, profile: str = "cpu", *, seeds=(0, 1, 2), cache=True,
                          progress: bool = True) -> pd.DataFrame:
    """The best AdamW and SGD fine-tuning run (:func:`~hesslab.experiments.gap.gap_study`) per model and seed.

    Args:
        names: registry names.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        seeds: initialisation and data seeds.
        cache: where runs are cached.
        progress: progress bar over the studies.

    Returns:
        The columns of :func:`~hesslab.experiments.gap.gap_over_seeds` (``model``, ``seed``,
        ``family``, ``modality``, ``initial``, ``adam``, ``sgd``, ``adam_lr``, ``sgd_lr``,
        ``gap`` in nats, ``relative_gap``); ``relative_gap`` is NaN where AdamW did not lower
        the loss below the initial one.
    """
    from tqdm.auto import tqdm

    rows = []
    for name, seed in tqdm([(n, s) for n in names for s in seeds], desc="fine-tuning", disable=not progress):
        study = gap_study(name, profile, seed=seed, cache=cache, progress=False)
        initial, adam, sgd = study.initial_loss, study.adam.final_loss, study.sgd.final_loss
        rows.append({"model": name, "seed": seed, "family": study.family, "modality": spec(name).modality,
                     "initial": initial, "adam": adam, "sgd": sgd, "adam_lr": study.adam.config.lr,
                     "sgd_lr": study.sgd.config.lr, "gap": study.gap,
                     "relative_gap": study.relative_gap if initial > adam else np.nan})
    return pd.DataFrame(rows)


def pair_over_seeds(pretrained: str, scratch: str, profile: str = "cpu", *, seeds=(0, 1, 2), cache=True,
                    progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """JS⁰ at the start of fine-tuning and the fine-tuning gap of a pair, per seed.

    Args:
        pretrained: registry name of the pretrained model.
        scratch: registry name of the same architecture from scratch.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        seeds: initialisation, data and probe seeds (at least 3 for a margin).
        cache: where spectra and runs are cached (``True``: the default cache).
        progress: progress bars.

    Returns:
        ``(js_long, gap_long)``: :func:`~hesslab.experiments.heterogeneity.js0_over_seeds` and
        :func:`finetuning_over_seeds` of the two models, one row per model and seed.
    """
    names = [pretrained, scratch]
    return (js0_over_seeds(names, profile, seeds=seeds, cache=cache, progress=progress),
            finetuning_over_seeds(names, profile, seeds=seeds, cache=cache, progress=progress))


def weight_changes(pretrained: torch.nn.Module, scratch: torch.nn.Module) -> pd.DataFrame:
    """How far pretraining moved each tensor: ``‖w_pre − w_scratch‖ / ‖w_scratch‖``.

    Args:
        pretrained: the pretrained model.
        scratch: the same architecture at its initialisation.

    Returns:
        Indexed by parameter name: ``shape`` and ``relative_change`` (0: unchanged; NaN for a
        tensor that starts at zero, such as a bias, where no relative change is defined).

    Raises:
        ValueError: the two models do not have the same parameter names and shapes.
    """
    a = {n: p.detach() for n, p in pretrained.named_parameters()}
    b = {n: p.detach() for n, p in scratch.named_parameters()}
    if list(a) != list(b) or any(a[n].shape != b[n].shape for n in a):
        raise ValueError("the two models differ in architecture (parameter names or shapes)")
    rows = {n: {"shape": tuple(a[n].shape),
                "relative_change": float((a[n] - b[n]).norm() / b[n].norm()) if b[n].norm() > 0 else np.nan}
            for n in a}
    return pd.DataFrame.from_dict(rows, orient="index")


def _paired(long: pd.DataFrame, pretrained: str, scratch: str, column: str) -> pd.DataFrame:
    """``column`` per seed (index) for the two models (columns), over the seeds both have rows for."""
    missing = [m for m in (pretrained, scratch) if m not in set(long.model)]
    if missing:
        raise ValueError(f"no rows for {missing} in the {column!r} table")
    shared = set(long.seed[long.model == pretrained]) & set(long.seed[long.model == scratch])
    if not shared:
        raise ValueError(f"{pretrained} and {scratch} share no seed in the {column!r} table")
    rows = long[long.model.isin([pretrained, scratch]) & long.seed.isin(shared)]
    return rows.pivot(index="seed", columns="model", values=column)[[pretrained, scratch]]


def _ordering(long: pd.DataFrame, pretrained: str, scratch: str, column: str, what: str) -> verdicts.Verdict:
    """:func:`verdicts.ordering_verdict` of ``column``: pretrained (low) below scratch (high); NaN is undefined."""
    table = _paired(long, pretrained, scratch, column)
    undefined = [int(seed) for seed in table.index[table.isna().any(axis=1)]]
    if undefined:
        return verdicts.Verdict(False, f"{what}: undefined in seed(s) {undefined} (AdamW did not lower the loss "
                                       f"there), so not established", {"undefined_seeds": undefined})
    return verdicts.ordering_verdict(table[pretrained].to_numpy(), table[scratch].to_numpy(), what=what)


def pretrained_verdicts(js_long: pd.DataFrame, gap_long: pd.DataFrame, pretrained: str, scratch: str, *,
                        variant: str = HEADLINE) -> dict[str, verdicts.Verdict]:
    """Figure 6's orderings, over the seeds each table has for both models.

    Args:
        js_long: one row per ``(model, seed)`` with ``js0_<variant>`` columns.
        gap_long: one row per ``(model, seed)`` with ``relative_gap`` (NaN: undefined) and ``gap``.
        pretrained: the pretrained model's name.
        scratch: the from-scratch model's name.
        variant: the JS⁰ variant of :data:`~hesslab.experiments.heterogeneity.JS_VARIANTS`.

    Returns:
        :func:`verdicts.ordering_verdict` of each claim, pretrained below scratch: ``"js0"``
        (JS⁰ at the start of fine-tuning) and ``"gap"`` (SGD − AdamW final loss in nats)
        decide; ``"relative_gap"`` (not established where it is undefined) is reported beside
        them. The nats decide because the pair shares data, task and loss scale, which is what
        the relative gap corrects for across tasks; dividing by AdamW's progress would instead
        inflate the pretrained model's gap, which starts near its optimum.
    """
    if variant not in JS_VARIANTS:
        raise ValueError(f"unknown JS⁰ variant {variant!r}; choose one of {tuple(JS_VARIANTS)}")
    pair = f"{pretrained} vs {scratch}"
    return {"js0": _ordering(js_long, pretrained, scratch, f"js0_{variant}", f"JS⁰ ({VARIANT_LABELS[variant]}), {pair}"),
            "gap": _ordering(gap_long, pretrained, scratch, "gap", f"SGD − AdamW final loss (nats), {pair}"),
            "relative_gap": _ordering(gap_long, pretrained, scratch, "relative_gap", f"relative gap, {pair}")}


def pretrained_report(js_long: pd.DataFrame, gap_long: pd.DataFrame, pretrained: str, scratch: str, *,
                      profile: str, variant: str = HEADLINE) -> str:
    """The Figure 6 chapter's verdict for one pair, in Markdown.

    (i) JS⁰ at the start of fine-tuning lower for the pretrained model, (ii) its Adam–SGD
    gap (nats) lower, each an ordering over seeds beyond the seed spread
    (:func:`pretrained_verdicts`). Listed, not deciding: the other JS⁰ variants, the relative
    gap, and whether SGD is behind AdamW at all when fine-tuning the pretrained model (the
    paper's "moderately behind").

    Args:
        js_long: one row per ``(model, seed)`` with ``js0_<variant>`` columns.
        gap_long: one row per ``(model, seed)`` with ``relative_gap`` and ``gap``.
        pretrained: the pretrained model's name.
        scratch: the from-scratch model's name.
        profile: the profile's name, for the heading.
        variant: the deciding JS⁰ variant.
    """
    found = pretrained_verdicts(js_long, gap_long, pretrained, scratch, variant=variant)
    seeds = sorted(set(js_long.seed) & set(gap_long.seed))
    lines = [f"**What we obtained ({profile} profile, {len(seeds)} seeds, {pretrained} vs {scratch}).**",
             f"* (i) Pretraining lowers heterogeneity: {found['js0']}. This {verdicts.reproduces(found['js0'])} "
             "the paper."]
    for other in [v for v in JS_VARIANTS if v != variant and f"js0_{v}" in js_long]:
        verdict = pretrained_verdicts(js_long, gap_long, pretrained, scratch, variant=other)["js0"]
        lines.append(f"  * not deciding, {VARIANT_LABELS[other]}: {verdict.says('lower', 'not lower')} beyond the "
                     f"spread ({verdict.numbers['low_mean']:.3g} vs {verdict.numbers['high_mean']:.3g}).")
    lines.append(f"* (ii) Pretraining lowers SGD's deficit: {found['gap']}. This {verdicts.reproduces(found['gap'])} "
                 "the paper.")
    lines.append(f"  * not deciding, relative to AdamW's progress: {found['relative_gap']}.")
    gaps = _paired(gap_long, pretrained, scratch, "gap")[pretrained].to_numpy()
    behind = bool((gaps > 0).all())
    lines.append(f"* Fine-tuning {pretrained}, SGD {'is' if behind else 'is **not**'} behind AdamW in every seed "
                 f"(final loss {gaps.mean():+.3g} nats on average).")
    holds = found["js0"].holds and found["gap"].holds
    lines.append("\nFigure 6's claim (pretraining lowers both the heterogeneity and SGD's deficit) "
                 + ("**reproduces**." if holds else "does **not** reproduce beyond the seed spread."))
    return "\n".join(lines)
