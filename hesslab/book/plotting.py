"""One figure style for the whole book: theme, colours per optimiser and model family, log axes.

Chapters call :func:`use_book_style` once, then colour lines with :func:`optimiser_color`
/ :func:`family_color` so an optimiser or a model family has the same colour in every
figure. Colours come from seaborn's colour-blind palette.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

_CB = sns.color_palette("colorblind")

#: Optimiser family -> colour. SGD and GD share one (the same method, stochastic or not).
OPTIMISER_COLORS: dict[str, tuple] = {
    "gd": _CB[0],
    "momentum": _CB[9],
    "adam": _CB[3],
    "adam-variant": _CB[1],
    "adam-theory": _CB[4],
    "sign": _CB[2],
    "blockwise": _CB[7],
}

#: Model family -> colour.
FAMILY_COLORS: dict[str, tuple] = {
    "cnn": _CB[0],
    "transformer": _CB[3],
    "mlp": _CB[2],
    "mixer": _CB[4],
}

#: Line style per optimiser kind (so figures also read in grey scale).
OPTIMISER_STYLES: dict[str, str] = {
    "gd": "-", "momentum": "-.", "adam": "-", "adam-variant": "--", "adam-theory": ":",
    "sign": "--", "blockwise": ":",
}


def use_book_style(context: str = "notebook") -> None:
    """Set the book's matplotlib/seaborn theme (white grid, colour-blind palette, 110 dpi).

    Args:
        context: seaborn context (``"notebook"``, ``"paper"``, ``"talk"``).
    """
    sns.set_theme(context=context, style="whitegrid", palette="colorblind")
    plt.rcParams.update({
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "figure.constrained_layout.use": True,
        "axes.titlesize": "medium",
        "legend.fontsize": "small",
        "legend.frameon": False,
    })


def optimiser_kind(name: str) -> str:
    """Map an optimiser label to its colour key.

    "SGD"/"GD" → ``gd``; "… momentum" → ``momentum``; "Adam" → ``adam``; Adam with
    "β=(0, 1)" → ``adam-theory``; any other "Adam …" → ``adam-variant``; "sign…",
    "Signum" → ``sign``; "blockwise …" → ``blockwise``.
    """
    low = name.lower()
    if "blockwise" in low:
        return "blockwise"
    if "sign" in low:
        return "sign"
    if "adam" in low or "rmsprop" in low:
        if "β=(0, 1)" in name or "beta=(0, 1)" in low:
            return "adam-theory"
        return "adam" if low in ("adam", "adamw") else "adam-variant"
    if "momentum" in low or "sgd-m" in low:
        return "momentum"
    if low in ("gd", "sgd") or low.startswith(("gd", "sgd")):
        return "gd"
    raise ValueError(f"no colour for optimiser {name!r}; add it to OPTIMISER_COLORS")


def optimiser_color(name: str) -> tuple:
    """The book's colour for an optimiser label (see :func:`optimiser_kind`)."""
    return OPTIMISER_COLORS[optimiser_kind(name)]


def optimiser_style(name: str) -> dict:
    """``color`` and ``linestyle`` keyword arguments for an optimiser's line."""
    kind = optimiser_kind(name)
    return {"color": OPTIMISER_COLORS[kind], "linestyle": OPTIMISER_STYLES[kind]}


def family_color(family: str) -> tuple:
    """The book's colour for a model family: ``cnn``, ``transformer``, ``mlp``, ``mixer``.

    Names such as "ResNet18", "VGG16" (CNN) or "GPT2", "BERT", "ViT" (Transformer) are
    recognised too.
    """
    low = family.lower()
    for key, words in {
        "cnn": ("cnn", "resnet", "vgg", "conv"),
        "transformer": ("transformer", "gpt", "bert", "vit", "roberta"),
        "mixer": ("mixer",),
        "mlp": ("mlp",),
    }.items():
        if any(w in low for w in words):
            return FAMILY_COLORS[key]
    raise ValueError(f"no colour for model family {family!r}; add it to FAMILY_COLORS")


def log_y(ax, label: str, *, lower: float | None = None, upper: float | None = None) -> None:
    """Log-scale y axis with a label (and optional limits)."""
    ax.set_yscale("log")
    ax.set_ylabel(label)
    if lower is not None or upper is not None:
        ax.set_ylim(lower, upper)


def plot_histories(ax, histories: Mapping[str, Sequence[float]], *, relative: bool = True,
                   xlabel: str = "iteration", ylabel: str | None = None) -> None:
    """Log-y curves of one quantity per optimiser, e.g. ‖∇f‖ vs iteration.

    Args:
        ax: a matplotlib axis.
        histories: optimiser label -> ``[k + 1]`` values (lengths may differ).
        relative: divide each curve by its first value.
        xlabel: x label.
        ylabel: y label (default "‖∇f(w_t)‖ / ‖∇f(w_0)‖" or "‖∇f(w_t)‖").
    """
    for name, values in histories.items():
        y = np.asarray(values, dtype=np.float64)
        if relative:
            y = y / y[0]
        ax.plot(np.arange(y.size), y, label=name, lw=1.6, **optimiser_style(name))
    log_y(ax, ylabel or ("‖∇f(w_t)‖ / ‖∇f(w_0)‖" if relative else "‖∇f(w_t)‖"))
    ax.set_xlabel(xlabel)


def plot_spectrum(ax, density, *, sigma: float, grid=None, label: str | None = None, color=None,
                  floor: float = 1e-10, **line_kwargs):
    """Plot a :class:`~hesslab.SpectralDensity` on a log-y axis, as the paper's figures do.

    Args:
        ax: matplotlib axes.
        density: the spectral density (normalise it first if the axis should be λ/λ_k).
        sigma: Gaussian smoothing width, in the units of the density's nodes.
        grid: evaluation points (default: ``density.grid(2000)``).
        label, color: passed to ``ax.semilogy``.
        floor: lower clip of the density (the paper's y-axis starts at 1e-10).
        **line_kwargs: more ``semilogy`` options.

    Returns:
        The evaluated ``(grid, values)``.
    """
    grid = density.grid(2000) if grid is None else grid
    values = density.log_density(grid, sigma, floor=floor)
    ax.semilogy(grid, values, label=label, color=color, **line_kwargs)
    ax.set_ylim(bottom=floor)
    return grid, values


_PREFIXES = ("bert.embeddings.", "bert.", "transformer.", "vit.encoder.", "vit.embeddings.",
             "vit.", "resnet.embedder.", "attention.self.", "cls.predictions.")


def short_block_name(name: str, width: int = 24) -> str:
    """A block name for axis labels: library prefixes and ``.weight`` dropped, at most ``width`` characters."""
    name = name.replace("bert.encoder.layer.", "L").replace("resnet.encoder.stages.", "stage")
    for prefix in _PREFIXES:
        name = name.replace(prefix, "")
    name = name.replace(".weight", "").replace("layers.", "L").replace("layer.", "L")
    return name if len(name) <= width else "…" + name[-(width - 1):]


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Running mean of ``window`` consecutive values (e.g. noisy per-step mini-batch losses).

    Args:
        values: ``[n]`` values, one per step.
        window: number of steps averaged, ``1 <= window <= n``.

    Returns:
        ``[n - window + 1]`` means; entry ``i`` averages steps ``i … i + window − 1``, so it
        belongs at step ``i + window − 1`` (see :func:`plot_training_curves`).
    """
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_training_curves(ax, study, *, window: int, lw: float = 1.4) -> None:
    """The best AdamW and best SGD run of a gap study, as running means of their losses.

    Args:
        ax: a matplotlib axis.
        study: a :class:`hesslab.experiments.gap.GapStudy` (``.adam`` and ``.sgd`` runs with
            ``.losses [steps]`` and ``.config.lr``).
        window: steps per running mean (:func:`smooth`); the curve starts at step ``window − 1``.
        lw: line width.
    """
    for label, run in [("AdamW", study.adam), ("SGD", study.sgd)]:
        ax.plot(np.arange(window - 1, len(run.losses)), smooth(run.losses, window),
                label=f"{label} (lr {run.config.lr:g})", color=optimiser_color(label.lower()), lw=lw)


#: x-axis label of each JS⁰ variant's normalised eigenvalue axis
VARIANT_AXES = {
    "linear": "λ / max |λ| over the model's blocks",
    "log": "sign(λ) · (log10 |λ / max| + 8)",
    "lambda10": "λ / λ₁₀ of the block",
    "density": "λ (raw)",
}


def plot_block_densities(axes: Sequence, spectra: Mapping, blocks: Sequence[str], variants: Mapping[str, dict],
                         *, model: str) -> None:
    """Densities of some blocks of one model, one axis per JS⁰ variant's normalisation (Figure 3).

    Each variant normalises the blocks as its JS⁰ does (e.g. ``"linear"`` and ``"log"``
    divide *all* blocks of the model by one shared largest |eigenvalue|, ``"lambda10"`` each
    block by its own 10th largest eigenvalue, as the paper's figure), then only ``blocks``
    are drawn, on a log y axis clipped below at 1e-8 (limits from 1e-5).

    Args:
        axes: matplotlib axes, one per variant, in the order of ``variants``.
        spectra: block name -> :class:`~hesslab.SpectralDensity`, every block of the model.
        blocks: the block names to draw (keys of ``spectra``).
        variants: variant name -> options of :func:`hesslab.js.shared_densities` (e.g. a
            selection of :data:`hesslab.experiments.heterogeneity.JS_VARIANTS`).
        model: the model's name, for the y label.
    """
    from hesslab.js import shared_densities

    if len(axes) != len(variants):
        raise ValueError(f"need one axis per variant: {len(axes)} axes for {len(variants)} variants")
    chosen = [spectra[b] for b in blocks]
    everything = list(spectra.values())
    for ax, (variant, options) in zip(axes, variants.items()):
        options = {k: v for k, v in options.items() if k != "mode"}
        grid, dens = shared_densities(everything + chosen, **options)
        for block, d in zip(blocks, dens[len(everything):]):
            ax.semilogy(grid, np.maximum(d, 1e-8), label=short_block_name(block), lw=1.3)
        ax.set_ylim(1e-5, None)
        ax.set_xlabel(VARIANT_AXES.get(variant, variant))
    axes[0].set_ylabel(f"{model}\ndensity")
    axes[0].legend(fontsize=7)


def plot_js0_by_model(ax, long, variant: str, *, log: bool = False) -> None:
    """JS⁰ per model under one variant: bars at the mean over seeds, one-sd error bars, a dot per seed.

    Args:
        ax: matplotlib axis.
        long: :func:`hesslab.experiments.heterogeneity.js0_over_seeds` output (one row per model and seed).
        variant: a key of :data:`hesslab.experiments.heterogeneity.JS_VARIANTS`.
        log: log-scale y axis (for the unbounded density variant).
    """
    column = f"js0_{variant}"
    models = list(dict.fromkeys(long.model))
    grouped = long.groupby("model", sort=False)[column]
    means, sds = grouped.mean().loc[models], grouped.std(ddof=1).loc[models].fillna(0.0)
    families = long.groupby("model", sort=False).family.first().loc[models]
    x = np.arange(len(models))
    ax.bar(x, means, yerr=sds, capsize=3, color=[family_color(f) for f in families], alpha=0.8)
    for i, model in enumerate(models):
        values = long.loc[long.model == model, column].to_numpy()
        ax.scatter(np.full(values.size, i) + np.linspace(-0.15, 0.15, values.size), values, s=10, color="black",
                   zorder=3)
    ax.set_xticks(x, models, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("JS⁰")
    if log:
        ax.set_yscale("log")


def plot_separation(ax, ratios: Mapping[str, Sequence[float]], *, reference: float | None = None) -> None:
    """Per-seed ratios per variant (dots) and their geometric mean (bar), on a log axis.

    Args:
        ax: matplotlib axis.
        ratios: variant label -> ratios, one per seed (e.g. smallest Transformer JS⁰ over largest CNN JS⁰).
        reference: a ratio to mark with a dotted line (the paper's).
    """
    labels = list(ratios)
    for i, label in enumerate(labels):
        values = np.asarray(ratios[label], dtype=float)
        ax.barh(i, np.exp(np.log(values).mean()), color="0.8")
        ax.scatter(values, np.full(values.size, i), color="black", s=14, zorder=3)
    ax.axvline(1.0, color="black", ls="--", lw=1)
    if reference is not None:
        ax.axvline(reference, color="tab:red", ls=":", lw=1.5, label=f"paper {reference:.0f}×")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("smallest Transformer JS⁰ / largest CNN JS⁰")


def plot_against_knob(ax, long, column: str, *, color=None, label: str | None = None) -> None:
    """A measure against the heterogeneity knob ``c``: mean over seeds with one-sd error bars, a dot per seed.

    Args:
        ax: matplotlib axis (its x axis becomes log base 2, ticks at the measured ``c``).
        long: :func:`hesslab.experiments.knob.knob_sweep` output (one row per ``c`` and seed).
        column: the measure, e.g. ``"js0_log"`` or ``"gap"``.
        color: line and dot colour (default: the MLP family's).
        label: legend label of the mean line.
    """
    color = family_color("mlp") if color is None else color
    grouped = long.groupby("c")[column]
    means, sds = grouped.mean(), grouped.std(ddof=1).fillna(0.0)
    ax.errorbar(means.index, means, yerr=sds, color=color, marker="o", capsize=3, lw=1.4, label=label)
    ax.scatter(long.c, long[column], color="black", s=9, zorder=3)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(means.index), [f"{c:g}" for c in means.index])
    ax.set_xlabel("multiplier base c")


def plot_seed_bars(ax, long, column: str, models: Sequence[str], colors: Mapping[str, object], *,
                   log: bool = False) -> None:
    """One bar per model at the mean over seeds, a one-sd error bar and a dot per seed (NaN values left out).

    Args:
        ax: matplotlib axis.
        long: one row per model and seed (e.g. :func:`hesslab.experiments.finetuning.pair_over_seeds` tables).
        column: the measure, e.g. ``"js0_log"`` or ``"relative_gap"``.
        models: the models, in the order of the bars.
        colors: model -> bar colour.
        log: log-scale y axis.
    """
    for i, model in enumerate(models):
        values = long.loc[long.model == model, column].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        ax.bar(i, values.mean() if values.size else np.nan, yerr=values.std(ddof=1) if values.size > 1 else 0,
               capsize=4, color=colors[model], alpha=0.75)
        ax.scatter(np.full(values.size, i) + np.linspace(-0.12, 0.12, values.size), values, color="black", s=12,
                   zorder=3)
    ax.set_xticks(range(len(models)), list(models), fontsize=8)
    if log:
        ax.set_yscale("log")


#: block kind -> marker of :func:`plot_gradient_vs_curvature`
BLOCK_KIND_MARKERS = {"attention Q/K": "^", "attention V/O": "v", "FFN": "s", "norm": "D", "embedding": "P",
                      "convolution": "o", "head": "*"}


def block_kind(name: str) -> str:
    """The kind of a parameter block, from its name: a key of :data:`BLOCK_KIND_MARKERS`.

    Args:
        name: a parameter name, e.g. ``"layers.0.q.weight"`` or ``"classifier.1.weight"``.
    """
    parts = name.split(".")
    if "norm" in name or "normalization" in name or any(p.startswith("ln") for p in parts):
        return "norm"
    if any(p in ("q", "k") for p in parts):
        return "attention Q/K"
    if any(p in ("v", "o") for p in parts):
        return "attention V/O"
    if any(p.startswith("ffn") for p in parts):
        return "FFN"
    if "embed.weight" in name or name == "position":
        return "embedding"
    if "conv" in name:
        return "convolution"
    return "head"


def plot_gradient_vs_curvature(ax, table, *, color=None) -> None:
    """Tomihari & Sato's Figure 1: per block, the gradient norm against the top Hessian eigenvalue (log-log).

    Args:
        ax: matplotlib axis.
        table: rows of :func:`hesslab.experiments.sign_methods.measure_blocks` (``block``, ``seed``,
            ``grad_norm``, ``lambda_max``); blocks whose λ_max is not positive are left out.
        color: marker colour (default: the Transformer family's).
    """
    color = FAMILY_COLORS["transformer"] if color is None else color
    shown = table[table.lambda_max > 0]
    for kind, marker in BLOCK_KIND_MARKERS.items():
        rows = shown[[block_kind(b) == kind for b in shown.block]]
        if len(rows):
            ax.scatter(rows.lambda_max, rows.grad_norm, marker=marker, s=28, color=color, alpha=0.7,
                       edgecolor="k", linewidth=0.3, label=kind)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("λ_max of the block")
    ax.set_ylabel("gradient norm (mean over mini-batches)")
