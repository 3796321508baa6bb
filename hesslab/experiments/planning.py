"""The book's cost, chapter by chapter, before anything runs (``python -m hesslab.book run --dry-run``).

:func:`chapter_workloads` lists what a chapter computes at a profile — training runs of the
Adam–SGD gap study, blockwise spectra at initialisation, full spectra over training — from
its parameters. :func:`plan_book` calibrates every model once on this device
(:func:`hesslab.plan.calibrate`: one gradient and one Hessian-vector product of the real
model, at the profile's size) and prices each workload with :func:`hesslab.plan.plan`. A
computation already paid for by an earlier chapter is cached and costs nothing again,
as when the book runs. Chapters whose work is small at every profile (exact Hessians of
tiny models, quadratic problems, the methods chapter's checks) are listed without an estimate.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from hesslab.experiments.batches import hessian_batches, modality
from hesslab.experiments.data import default_device, to_device
from hesslab.experiments.gap import STAGES, gap_settings
from hesslab.experiments.heterogeneity import sampled_blocks
from hesslab.experiments.models import build, spec
from hesslab.experiments.profiles import profile as get_profile
from hesslab.plan import Calibration, calibrate, plan

#: chapters whose work does not grow to paper scale (tiny exact problems)
SMALL_CHAPTERS = ("methods", "mlp_hessian", "quadratic")
#: top-k eigenvalues per full spectrum (the λ₁₀ normalisation) cost about this many products
TOP_K_PRODUCTS = 300


@dataclass(frozen=True)
class Workload:
    """One computation of a chapter.

    Attributes:
        chapter: notebook stem.
        model: model name.
        kind: ``"train"`` (the gap study's grid), ``"blockwise_slq"`` or ``"slq"`` (full spectra).
        options: what distinguishes it (overrides of batches, steps, probes; stages).
    """

    chapter: str
    model: str
    kind: str
    options: tuple = ()

    @property
    def key(self) -> tuple:
        """What the cache keys on: the same computation in two chapters is paid once."""
        return self.model, self.kind, self.options


def chapter_workloads(chapter: str, parameters: Mapping) -> list[Workload]:
    """The computations chapter ``chapter`` runs with ``parameters`` (its tagged cell, profile applied).

    A chapter with a ``seeds`` parameter repeats every computation per seed (the option
    ``("seed", s)`` tells them apart); one with ``seed`` runs that seed only.
    """
    seeds = list(parameters.get("seeds", [parameters.get("seed", 0)]))
    return [Workload(w.chapter, w.model, w.kind, w.options + (("seed", s),))
            for s in seeds for w in _workloads_of_one_seed(chapter, parameters)]


def _workloads_of_one_seed(chapter: str, parameters: Mapping) -> list[Workload]:
    models = list(parameters.get("models", []))
    train = [Workload(chapter, m, "train") for m in models]
    blockwise = [Workload(chapter, m, "blockwise_slq") for m in models]
    if chapter == "gap":
        return train
    if chapter in ("blockwise", "js0_gap"):
        return train + blockwise
    if chapter == "heterogeneity":
        return blockwise
    if chapter == "full_spectra":
        # the verdict compares with the Transformers' blockwise JS⁰
        transformers = [Workload(chapter, m, "blockwise_slq") for m in models if spec(m).family == "transformer"]
        return train + [Workload(chapter, m, "slq", (("stages", len(STAGES)),)) for m in models] + transformers
    if chapter == "convergence":
        out = []
        for m in models:
            out += [Workload(chapter, m, "blockwise_slq", (("num_batches", b),)) for b in parameters["batches"]]
            out += [Workload(chapter, m, "blockwise_slq", (("num_steps", s),)) for s in parameters["steps"]]
            out.append(Workload(chapter, m, "blockwise_slq", (("num_probes", max(parameters["probes"])),)))
        return out
    return []


@dataclass
class _Model:
    calibration: Calibration
    built: object
    batch: object
    settings: dict = field(default_factory=dict)


def _calibrated(name: str, profile: str, device, examples: int | None) -> _Model:
    settings = get_profile(profile)
    built = build(name, settings.model_size, seed=0, device=device)
    batch = hessian_batches(built, settings.blockwise, num_batches=1)[0]
    batch = to_device(batch, device)
    cal = calibrate(built.model, built.loss_fn, batch, examples=examples, batchnorm="train", repeats=1)
    return _Model(cal, built, batch)


def _priced_model(name: str, profile: str, device: str, examples: int | None, workloads: list,
                  variants: list) -> tuple[Calibration, list[dict]]:
    """Calibrate ``name`` and price its ``workloads`` under each Lanczos variant (run in a worker process)."""
    model = _calibrated(name, profile, torch.device(device), examples)
    return model.calibration, [{w.key: _price(w, model, profile, v) for w in workloads} for v in variants]


def _price(w: Workload, m: _Model, profile: str, lanczos: tuple[int, int] | None = None) -> dict:
    settings = get_profile(profile)
    if w.kind == "train":
        gap = gap_settings(w.model, profile)
        runs = sum(len(v) for v in gap["lrs"].values())
        per_example = m.calibration.gradient_s / m.calibration.examples
        seconds = runs * gap["steps"] * gap["batch_size"] * per_example
        return {"HVPs": 0, "basis GiB": 0.0, "peak GiB": float("nan"), "hours": seconds / 3600,
                "note": f"{runs} runs × {gap['steps']} steps"}
    hessian = settings.full_spectra if w.kind == "slq" else settings.blockwise
    options = dict(w.options)
    count, _ = hessian.batches[modality(m.built)]
    count = options.get("num_batches", count)
    repeats = options.pop("stages", 1)
    cost = plan(m.built.model, m.built.loss_fn, [m.batch] * count,
                None if w.kind == "slq" else sampled_blocks(w.model, m.built), kind=w.kind,
                num_steps=options.get("num_steps", lanczos[0] if lanczos else hessian.num_steps),
                num_probes=options.get("num_probes", lanczos[1] if lanczos else hessian.num_probes),
                calibration=m.calibration,
                batchnorm="train")
    extra = repeats * TOP_K_PRODUCTS * m.calibration.product_s * cost.examples / m.calibration.examples \
        if w.kind == "slq" else 0.0
    return {"HVPs": repeats * cost.products, "basis GiB": cost.row()["basis GiB"], "peak GiB": cost.row()["peak GiB"],
            "hours": (repeats * cost.seconds + extra) / 3600,
            "note": f"{cost.blocks} blocks; " * (w.kind != "slq") + f"{repeats} stage(s); " * (w.kind == "slq")
            + "; ".join(cost.basis)}


def plan_book(chapters: Mapping[str, Mapping], profile: str, *, device=None, calibration_examples: int | None = None,
              lanczos: tuple[int, int] | None = None, progress: bool = True) -> pd.DataFrame:
    """Predicted cost of every chapter's computations at ``profile`` on this device.

    Args:
        chapters: chapter stem -> its parameters (tagged cell with the profile's overrides), in run order.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"`` (model sizes and Hessian settings).
        device: where to calibrate (default CUDA when available).
        calibration_examples: calibrate each model on this many examples of one Hessian batch
            (large models on a slow device); default the whole batch.
        lanczos: ``(steps, probes)`` in place of the profile's (reduced settings), except where a
            chapter sets them itself (the convergence study).
        progress: progress bar over models.

    Returns:
        One row per chapter and workload: ``chapter``, ``model``, ``kind``, ``HVPs``, ``basis GiB``,
        ``peak GiB``, ``hours`` (0 where an earlier chapter computed it: ``cached``), ``note``.
    """
    return plan_book_variants(chapters, profile, [lanczos], device=device, calibration_examples=calibration_examples,
                              progress=progress)[0]


def plan_book_variants(chapters: Mapping[str, Mapping], profile: str, variants: Sequence[tuple[int, int] | None], *,
                       device=None, calibration_examples: int | None = None,
                       progress: bool = True) -> list[pd.DataFrame]:
    """:func:`plan_book` for several Lanczos settings (``None``: the profile's) from one calibration per model.

    Models are built, calibrated and priced one at a time, so only one is in memory.
    """
    device = default_device(device)
    workloads = [w for chapter, params in chapters.items() for w in chapter_workloads(chapter, params)]
    first = {}
    for w in workloads:  # the chapter that pays for each computation
        first.setdefault(w.key, w)
    prices: list[dict] = [{} for _ in variants]
    calibrations = {}
    names = list(dict.fromkeys(w.model for w in workloads))
    # each model in a fresh process: its memory (the model, a paper-size batch, the graphs) is
    # returned to the system before the next is built
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = {name: pool.submit(_priced_model, name, profile, str(device), calibration_examples,
                                     [w for w in first.values() if w.model == name], list(variants))
                   for name in names}
        for name in tqdm(names, desc="calibrating", disable=not progress):
            calibrations[name], per_variant = futures[name].result()
            for i, priced in enumerate(per_variant):
                prices[i].update(priced)
    tables = []
    for i in range(len(variants)):
        rows = []
        for chapter in chapters:
            mine = [w for w in workloads if w.chapter == chapter]
            if not mine:
                rows.append({"chapter": chapter, "model": "", "kind": "", "HVPs": 0, "hours": float("nan"),
                             "note": "small at every profile" if chapter in SMALL_CHAPTERS
                             else "no Hessian or training work"})
            for w in mine:
                row = {"chapter": chapter, "model": w.model, "kind": w.kind, **dict(w.options)}
                if first[w.key] is not w:
                    rows.append(row | {"HVPs": 0, "hours": 0.0, "note": "cached (computed by an earlier chapter)"})
                else:
                    rows.append(row | prices[i][w.key])
        table = pd.DataFrame(rows)
        table.attrs["device"] = str(device)
        table.attrs["calibration"] = calibrations
        tables.append(table)
    return tables


def chapter_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per chapter: HVPs, the largest basis and peak memory, hours; and a ``total`` row."""
    grouped = table.groupby("chapter", sort=False)
    out = pd.DataFrame({"HVPs": grouped["HVPs"].sum(), "max basis GiB": grouped["basis GiB"].max(),
                        "max peak GiB": grouped["peak GiB"].max(), "hours": grouped["hours"].sum(min_count=1)})
    out.loc["total"] = [out["HVPs"].sum(), out["max basis GiB"].max(), out["max peak GiB"].max(), out["hours"].sum()]
    return out.reset_index(names="chapter")


def totals(table: pd.DataFrame) -> pd.Series:
    """Hours per chapter (and ``total``) of a :func:`plan_book` table."""
    hours = table.groupby("chapter", sort=False)["hours"].sum(min_count=1)
    return pd.concat([hours, pd.Series({"total": hours.sum()})])


def format_plan(table: pd.DataFrame, columns: Iterable[str] = ("chapter", "model", "kind", "HVPs", "basis GiB",
                                                                "peak GiB", "hours", "note")) -> str:
    """The table as aligned text, with per-chapter totals."""
    shown = table[[c for c in columns if c in table]]
    lines = [shown.to_string(index=False, float_format=lambda x: f"{x:.3g}"), "",
             "hours per chapter:", totals(table).to_string(float_format=lambda x: f"{x:.3g}")]
    return "\n".join(lines)


__all__ = ["Workload", "chapter_workloads", "plan_book", "plan_book_variants", "chapter_summary", "totals", "format_plan", "SMALL_CHAPTERS"]
