"""Gradient heterogeneity and sign-based optimisers (Tomihari & Sato, arXiv 2502.00213 v2).

The companion paper explains the Adam–SGD gap in fine-tuning Transformers by *gradient
heterogeneity*: the gradient norms of the parameter blocks differ by orders of magnitude,
and when the large gradients sit on sharp blocks (large top Hessian eigenvalue) gradient
descent must take steps small enough for the sharpest block, while sign-based methods
(SignSGD, Signum) and Adam are hurt much less. The book's miniature of their setting:

* **models**: the twin encoders ``encoder-postln`` / ``encoder-preln`` of
  :mod:`hesslab.experiments.models` (identical parameters, only the layer-norm placement
  differs; a digit's 8 rows are its 8 tokens) and a small CNN (``resnet18`` of the zoo);
* **pretraining** (:func:`pretrained_state`): AdamW on the digits 0–4, cached as an ordinary
  training run; **fine-tuning** (:func:`finetuning_start`): the pretrained model with a fresh
  head (as RoBERTa gets one per task), trained on the digits 5–9;
* **measurements at the start of fine-tuning** (:func:`measure_blocks`): per block, the
  gradient norm averaged over mini-batches (their Figure 1's x-axis), the full-batch
  gradient norm, and the largest Ritz value of cached blockwise SLQ as λ_max (their
  Figure 1 uses power iteration);
* **optimisers** (:func:`optimiser_runs`): SGD, SGD with momentum 0.9, SignSGD, Signum
  (β = 0.9) and Adam(W) (weight decay 0), each on its own learning-rate grid of
  :func:`hesslab.experiments.profiles.sign_methods_settings`;
* the verdicts: :func:`gradient_report`.

**Reconstructions (unverified).** The paper's exact formulas are not checked here. Gradient
heterogeneity is :func:`hesslab.gradient_heterogeneity` (``log10_spread`` of the block
norms leads). The weighted Hessian complexities (their Definition 4.5) are taken from a
blockwise descent lemma: one step ``Δ_b`` per block lowers the loss by at least
``Σ_b ⟨g_b, Δ_b⟩ − ½ Σ_b λ_b ||Δ_b||²``. For gradient descent (``Δ_b = −η g_b``) the best
step is ``η = 1/Λ_G`` with ``Λ_G = Σ_b λ_b ||g_b||² / Σ_b ||g_b||²``: curvature weighted by
squared gradient norm, near the largest λ_b when the large gradients sit on sharp blocks.
For sign descent (``Δ_b = −η sign(g_b)``, ``||Δ_b||² = η² d_b``) the curvature enters as
``Λ_P = Σ_b λ_b d_b / Σ_b d_b``: weighted by parameter count, blind to where the gradient
is (:func:`weighted_hessian_complexity`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import torch
from torch import nn

import hesslab.experiments.training as _train
from hesslab.batching import call_model
from hesslab.experiments import verdicts
from hesslab.experiments.batches import _cycled_image_batches, _digit_images
from hesslab.experiments.gap import FIT_SHARE, relative_gap
from hesslab.experiments.models import build
from hesslab.experiments.profiles import sign_methods_settings
from hesslab.gradients import block_gradient_norms, gradient_heterogeneity
from hesslab.js import js_matrix
from hesslab.storage.cached import blockwise_slq

#: the digits the models are pretrained on, and those they are fine-tuned on
PRETRAINING_CLASSES = (0, 1, 2, 3, 4)
FINETUNING_CLASSES = (5, 6, 7, 8, 9)

#: the chapter's models: the Post-LN and Pre-LN twins and the CNN
MODELS = ("encoder-postln", "encoder-preln", "resnet18")
POSTLN, PRELN = "encoder-postln", "encoder-preln"

#: optimiser -> label, in the chapter's order
OPTIMISER_LABELS = {"sgd-plain": "SGD", "sgd": "SGD momentum", "signsgd": "SignSGD", "signum": "Signum",
                    "adamw": "Adam"}

#: the gradient-based method each sign method is compared with (their Figures 3–4 pairs)
PAIRS = (("sgd-plain", "signsgd"), ("sgd", "signum"))

#: the smallest block measured (smaller weights, e.g. of a 1-channel stem, are left out)
MIN_BLOCK_DIM = 8

#: Adam's relative gaps use the fine-tuning's schedule and budget; every run has weight decay 0
SCHEDULE = "cosine"

#: batch-norm mode of the measurements (running statistics, as the paper's evaluation)
BATCHNORM = "eval"


def digit_batches(classes, num_batches: int, batch_size: int | None, *, seed: int = 0, split: str = "train",
                  size: int = 8, channels: int = 1) -> list:
    """Batches ``(images [B, C, S, S], labels [B])`` of the digits whose label is in ``classes``.

    Args:
        classes: the digit labels kept (labels are not renumbered).
        num_batches: how many batches (successive seeded epochs).
        batch_size: images per batch (None: every kept digit, one epoch per batch).
        seed: sampling seed.
        split: ``"train"`` or ``"hessian"`` (another seed stream, as :func:`~hesslab.experiments.batches.model_batches`).
        size: image side.
        channels: image channels.
    """
    images, labels = _digit_images(size, channels)
    keep = torch.isin(labels, torch.tensor(list(classes)))
    batch_size = int(keep.sum()) if batch_size is None else batch_size
    return _cycled_image_batches(images[keep], labels[keep], batch_size, num_batches, 2 * seed + (split == "hessian"))


def _model_digits(name: str, size: str, classes, num_batches: int, batch_size: int | None, seed: int, split: str = "train"):
    spec = build(name, size, seed=seed, device="meta").inputs
    return digit_batches(classes, num_batches, batch_size, seed=seed, split=split, size=spec["size"],
                         channels=spec["channels"])


def _fresh(name: str, size: str, seed: int) -> nn.Module:
    """A newly built ``name`` (picklable)."""
    return build(name, size, seed=seed).model


def pretrained_state(name: str, profile: str, seed: int = 0, *, cache=True, progress: bool = False) -> dict:
    """The state dict of ``name`` after AdamW pretraining on the digits 0–4 (cached run).

    Args:
        name: an image model of :mod:`hesslab.experiments.models`.
        profile: the profile (model size and pretraining budget).
        seed: initialisation and data seed.
        cache: where the run is cached (``True``: the default cache; ``None``: recompute).
        progress: progress bar.

    Raises:
        RuntimeError: the pretraining diverged.
    """
    settings = sign_methods_settings(profile)["pretraining"]
    built = build(name, profile, seed=seed, device="meta")
    batches = _model_digits(name, profile, PRETRAINING_CLASSES, settings["num_batches"], settings["batch_size"], seed)
    config = _train.TrainConfig("adamw", settings["lr"], settings["steps"], schedule=SCHEDULE, checkpoints=(1.0,),
                                seed=seed)
    run = _train.train(functools.partial(_fresh, name, profile, seed), built.loss_fn, batches, config, cache=cache,
                       cache_key={"model": name, "size": profile, "seed": seed, "data": "digits 0-4"},
                       progress=progress)
    if not np.isfinite(run.losses).all():
        raise RuntimeError(f"pretraining {name} ({profile}, seed {seed}) diverged; lower its pretraining lr")
    return run.states[1.0]


def head_of(model: nn.Module) -> nn.Linear:
    """The model's classification head: its last :class:`torch.nn.Linear` module."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear layer to serve as a head")
    return linears[-1]


def finetuning_start(name: str, profile: str, seed: int = 0) -> nn.Module:
    """The pretrained ``name`` with a fresh head (seeded by ``seed``): where fine-tuning starts (picklable)."""
    model = _fresh(name, profile, seed)
    model.load_state_dict(pretrained_state(name, profile, seed))
    torch.manual_seed(10_000 + seed)
    head_of(model).reset_parameters()
    return model.eval()


def measured_blocks(model: nn.Module) -> list[str]:
    """The blocks measured: every parameter named ``*weight`` with at least :data:`MIN_BLOCK_DIM` entries.

    Weight matrices, convolution kernels, embeddings and layer/batch-norm scales (their
    Figure 1: Q, K, V, FFN and LN weights and the head); biases are left out.
    """
    return [n for n, p in model.named_parameters()
            if (n.endswith("weight") or n == "position") and p.numel() >= MIN_BLOCK_DIM]


def coordinate_gradients(model: nn.Module, loss_fn, batches, blocks) -> np.ndarray:
    """The gradient of each batch's mean loss, per coordinate of ``blocks``: ``[batches, coordinates]``.

    Args:
        model: the network (measured in eval mode).
        loss_fn: ``loss_fn(outputs, targets)``, a batch mean.
        batches: ``(inputs, targets)`` batches.
        blocks: parameter names, concatenated in this order.
    """
    named = dict(model.named_parameters())
    params = [named[b] for b in blocks]
    was_training = model.training
    model.eval()
    rows = []
    for inputs, targets in batches:
        grads = torch.autograd.grad(loss_fn(call_model(model, inputs), targets), params)
        rows.append(torch.cat([g.detach().reshape(-1) for g in grads]).double().numpy())
    model.train(was_training)
    return np.stack(rows)


def measure_blocks(name: str, profile: str, seed: int = 0, *, cache=True, progress: bool = False):
    """Per-block gradient norms and curvature of ``name`` at the start of fine-tuning.

    Args:
        name: a model of :data:`MODELS` (any image model of the zoo works).
        profile: the profile.
        seed: initialisation, data and probe seed.
        cache: where the pretraining and the spectra are cached.
        progress: progress bars.

    Returns:
        ``(table, spectra)``: ``table`` has one row per block, columns ``model``, ``seed``, ``block``,
        ``dim`` (entries), ``grad_norm`` (``||∇_b L||₂`` of a mini-batch's mean loss, averaged over
        the first ``gradient_batches`` fine-tuning batches), ``full_grad_norm`` (of the loss over all
        fine-tuning digits) and ``lambda_max`` (largest Ritz value of the block's SLQ); ``spectra``
        is ``{block: SpectralDensity}``.
    """
    settings = sign_methods_settings(profile)
    pretrained_state(name, profile, seed, cache=cache, progress=progress)
    model = finetuning_start(name, profile, seed)
    built = build(name, profile, seed=seed, device="meta")
    blocks = measured_blocks(model)
    train = _model_digits(name, profile, FINETUNING_CLASSES, settings["gradient_batches"],
                          settings["finetuning"]["batch_size"], seed)
    per_batch = [block_gradient_norms(model, built.loss_fn, [batch], blocks, batchnorm=BATCHNORM) for batch in train]
    everything = _model_digits(name, profile, FINETUNING_CLASSES, 1, None, seed)  # one batch: every digit once
    full = block_gradient_norms(model, built.loss_fn, everything, blocks, batchnorm=BATCHNORM)
    count, batch_size = settings["hessian"]
    data = _model_digits(name, profile, FINETUNING_CLASSES, count, batch_size, seed, split="hessian")
    steps, probes = settings["lanczos"]
    spectra = blockwise_slq(model, built.loss_fn, data, blocks, num_steps=steps, num_probes=probes, seed=seed,
                            batchnorm=BATCHNORM, cache=cache, progress=progress,
                            cache_key={"model": name, "size": profile, "seed": seed,
                                       "state": "pretrained on digits 0-4, fresh head", "data": "digits 5-9"})
    dims = {n: p.numel() for n, p in model.named_parameters()}
    table = pd.DataFrame([{"model": name, "seed": seed, "block": b, "dim": dims[b],
                           "grad_norm": float(np.mean([norms[b] for norms in per_batch])),
                           "full_grad_norm": full[b], "lambda_max": spectra[b].lambda_max} for b in blocks])
    return table, spectra


def weighted_hessian_complexity(grad_norms, lambda_max, dims) -> dict[str, float]:
    """The book's reconstruction of Tomihari & Sato's Λ_G and Λ_P (module docstring).

    Args:
        grad_norms: ``[blocks]`` gradient norms ``||g_b||₂``.
        lambda_max: ``[blocks]`` top Hessian eigenvalues ``λ_b`` of the blocks.
        dims: ``[blocks]`` parameter counts ``d_b``.

    Returns:
        ``gradient``: Λ_G = Σ λ_b ||g_b||² / Σ ||g_b||²; ``sign``: Λ_P = Σ λ_b d_b / Σ d_b;
        ``largest``: max λ_b; ``gradient_share`` and ``sign_share``: Λ_G and Λ_P divided by it.
    """
    g, lam, d = (np.asarray(v, dtype=np.float64) for v in (grad_norms, lambda_max, dims))
    if not (g.shape == lam.shape == d.shape) or g.size == 0:
        raise ValueError(f"need one gradient norm, eigenvalue and size per block, got {g.size}, {lam.size}, {d.size}")
    if (g < 0).any() or (d <= 0).any() or not np.isfinite(np.concatenate([g, lam, d])).all():
        raise ValueError("gradient norms must be nonnegative, sizes positive, everything finite")
    weights = g ** 2
    gradient = float((weights * lam).sum() / weights.sum()) if weights.sum() > 0 else math.nan
    sign = float((d * lam).sum() / d.sum())
    largest = float(lam.max())
    return {"gradient": gradient, "sign": sign, "largest": largest,
            "gradient_share": gradient / largest if largest > 0 else math.nan,
            "sign_share": sign / largest if largest > 0 else math.nan}


def optimiser_runs(name: str, profile: str, seed: int = 0, *, optimizers=tuple(OPTIMISER_LABELS), cache=True,
                   progress: bool = False):
    """Fine-tune ``name`` from :func:`finetuning_start` with each optimiser on its grid.

    Args:
        name: a model of :data:`MODELS`.
        profile: the profile (budget and grids of :func:`~hesslab.experiments.profiles.sign_methods_settings`).
        seed: initialisation and data seed.
        optimizers: names of :data:`hesslab.experiments.training.OPTIMIZERS`.
        cache: where runs are cached.
        progress: progress bars.

    Returns:
        ``(best, runs)``: optimiser -> best :class:`~hesslab.experiments.training.TrainResult`, and
        optimiser -> learning rate -> run.
    """
    settings = sign_methods_settings(profile)
    budget = settings["finetuning"]
    pretrained_state(name, profile, seed, cache=cache, progress=progress)
    loss_fn = build(name, profile, seed=seed, device="meta").loss_fn
    batches = _model_digits(name, profile, FINETUNING_CLASSES, budget["num_batches"], budget["batch_size"], seed)
    key = {"model": name, "size": profile, "seed": seed, "start": "pretrained on digits 0-4, fresh head",
           "data": "digits 5-9", "batch_size": budget["batch_size"], "num_batches": budget["num_batches"]}
    best, runs = {}, {}
    for optimizer in optimizers:
        base = _train.TrainConfig(optimizer, 0.0, budget["steps"], schedule=SCHEDULE, seed=seed)
        best[optimizer], runs[optimizer] = _train.grid_search(
            functools.partial(finetuning_start, name, profile, seed), loss_fn, batches, base,
            settings["lrs"][optimizer], cache=cache, cache_key=key, progress=progress)
    return best, runs


def run_table(name: str, profile: str, seed: int, best: dict, runs: dict) -> pd.DataFrame:
    """One row per optimiser: its best run's final loss, rate, and relative gap to Adam.

    Args:
        name: the model.
        profile: the profile.
        seed: the seed.
        best: optimiser -> best run (:func:`optimiser_runs`).
        runs: optimiser -> rate -> run.

    Returns:
        Columns ``model``, ``seed``, ``optimizer``, ``lr``, ``initial`` (the first batch's loss),
        ``final``, ``relative_gap`` ((final − Adam's) / (initial − Adam's); NaN when Adam made no
        progress or a final loss is infinite) and ``edge`` (the best rate is at the grid's edge).
    """
    adam = best["adamw"]
    initial = float(adam.losses[0])
    rows = []
    for optimizer, run in best.items():
        grid = sorted(runs[optimizer])
        try:
            gap = relative_gap(initial, adam.final_loss, run.final_loss)
        except ValueError:
            gap = math.nan
        rows.append({"model": name, "seed": seed, "optimizer": optimizer, "lr": run.config.lr, "initial": initial,
                     "final": run.final_loss, "relative_gap": gap if math.isfinite(gap) else math.nan,
                     "edge": len(grid) > 1 and run.config.lr in (grid[0], grid[-1])})
    return pd.DataFrame(rows)


def study(models=MODELS, profile: str = "cpu", *, seeds=(0, 1, 2), cache=True, progress: bool = False):
    """Every measurement and run of the chapter.

    Args:
        models: models of the zoo (:data:`MODELS`).
        profile: the profile.
        seeds: initialisation and data seeds.
        cache: where runs and spectra are cached.
        progress: progress bars.

    Returns:
        ``(blocks, runs, spectra, curves)``: the concatenated :func:`measure_blocks` tables, the
        concatenated :func:`run_table` tables, ``{(model, seed): spectra}`` and
        ``{(model, seed): {optimizer: best run}}``.
    """
    tables, rows, spectra, curves = [], [], {}, {}
    for name in models:
        for seed in seeds:
            table, spectra[name, seed] = measure_blocks(name, profile, seed, cache=cache, progress=progress)
            tables.append(table)
            best, runs = optimiser_runs(name, profile, seed, cache=cache, progress=progress)
            curves[name, seed] = best
            rows.append(run_table(name, profile, seed, best, runs))
    return pd.concat(tables, ignore_index=True), pd.concat(rows, ignore_index=True), spectra, curves


def heterogeneity_table(blocks: pd.DataFrame) -> pd.DataFrame:
    """Per model and seed: gradient heterogeneity and the weighted Hessian complexities.

    Args:
        blocks: :func:`measure_blocks` tables (columns ``model``, ``seed``, ``block``, ``dim``,
            ``grad_norm``, ``lambda_max``).

    Returns:
        Columns ``model``, ``seed``, ``log10_spread`` and ``cv`` of the mini-batch-mean gradient
        norms (:func:`hesslab.gradient_heterogeneity`), ``steepest`` block, and Λ_G, Λ_P, max λ,
        Λ_G / max λ, Λ_P / max λ (:func:`weighted_hessian_complexity`, with the absolute value of
        λ_max so that a block whose largest Ritz value is negative counts as flat).
    """
    rows = []
    for (name, seed), group in blocks.groupby(["model", "seed"], sort=False):
        spread = gradient_heterogeneity(dict(zip(group.block, group.grad_norm)))
        lam = weighted_hessian_complexity(group.grad_norm, group.lambda_max.clip(lower=0), group.dim)
        rows.append({"model": name, "seed": seed, "log10_spread": spread["log10_spread"], "cv": spread["cv"],
                     "steepest": spread["steepest"], "Lambda_G": lam["gradient"], "Lambda_P": lam["sign"],
                     "lambda_max": lam["largest"], "Lambda_G_share": lam["gradient_share"],
                     "Lambda_P_share": lam["sign_share"]})
    return pd.DataFrame(rows)


def block_js_distance(spectra: dict, **options) -> pd.Series:
    """Each block's mean JS distance to the other blocks (the first paper's heterogeneity, per block).

    Args:
        spectra: ``{block: SpectralDensity}``.
        **options: options of :func:`hesslab.js_matrix` (default: the book's log axis, one-decade smoothing).
    """
    options = options or {"axis": "log", "sigma": 1.0}
    matrix = js_matrix(spectra, sqrt=True, **options)
    n = len(matrix)
    return matrix.sum(axis=1) / max(1, n - 1)


def _ordering(low, high, what: str) -> verdicts.Verdict:
    """:func:`verdicts.ordering_verdict`, or not established when a value is undefined (NaN)."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        return verdicts.Verdict(False, f"{what}: a relative gap is undefined (Adam made no progress or a run "
                                       "diverged), so not established", {})
    return verdicts.ordering_verdict(low, high, what=what)


def _by_seed(frame: pd.DataFrame, column: str, model: str, optimizer: str | None = None) -> np.ndarray:
    rows = frame[frame.model == model]
    if optimizer is not None:
        rows = rows[rows.optimizer == optimizer]
    return rows.sort_values("seed")[column].to_numpy(dtype=np.float64)


def gradient_report(blocks: pd.DataFrame, runs: pd.DataFrame, profile: str, *, cnn: str = "resnet18") -> str:
    """The chapter's verdicts, in Markdown, computed from :func:`study`'s tables.

    The claims: (i) Post-LN shows more gradient heterogeneity than Pre-LN; (ii) across blocks
    the gradient norm rises with λ_max (each encoder); (iii) SGD falls further behind Adam than
    the sign methods (SGD vs SignSGD, SGD momentum vs Signum, each encoder); (iv) more so for
    Post-LN than Pre-LN (SGD momentum's relative gap); (v) the CNN shows little of it (its
    relative gap of SGD momentum and its gradient heterogeneity below both encoders').

    Args:
        blocks: :func:`measure_blocks` tables of the twin encoders and ``cnn``.
        runs: :func:`run_table` tables of the same models.
        profile: the profile, for the heading.
        cnn: the CNN's model name.
    """
    het = heterogeneity_table(blocks)
    seeds = blocks.seed.nunique()
    lines = [f"**What we obtained ({profile} profile, {seeds} seeds; gradient heterogeneity = log10(max/min) of the "
             "mini-batch-mean block gradient norms at the start of fine-tuning; relative gap = (optimiser − Adam) / "
             "(initial − Adam) final training loss).**"]
    v = _ordering(_by_seed(het, "log10_spread", PRELN), _by_seed(het, "log10_spread", POSTLN),
                  "gradient heterogeneity, Pre-LN vs Post-LN")
    lines.append(f"* (i) Post-LN more heterogeneous than Pre-LN: {v}. This {verdicts.reproduces(v)} the paper's claim.")
    for name in (POSTLN, PRELN):
        mean = blocks[blocks.model == name].groupby("block")[["grad_norm", "lambda_max"]].mean()
        v = verdicts.correlation_verdict(mean.lambda_max, mean.grad_norm,
                                         what="Spearman's ρ of gradient norm and λ_max over blocks")
        lines.append(f"* (ii) large gradients on sharp blocks, {name}: {v}. This {verdicts.reproduces(v)} "
                     "their Figure 1.")
    for name in (POSTLN, PRELN):
        for gradient, sign in PAIRS:
            v = _ordering(_by_seed(runs, "relative_gap", name, sign), _by_seed(runs, "relative_gap", name, gradient),
                          f"relative gap of {OPTIMISER_LABELS[sign]} vs {OPTIMISER_LABELS[gradient]}")
            lines.append(f"* (iii) {OPTIMISER_LABELS[gradient]} behind {OPTIMISER_LABELS[sign]}, {name}: {v}. "
                         f"This {verdicts.reproduces(v)} the paper.")
    v = _ordering(_by_seed(runs, "relative_gap", PRELN, "sgd"), _by_seed(runs, "relative_gap", POSTLN, "sgd"),
                  "relative gap of SGD momentum, Pre-LN vs Post-LN")
    lines.append(f"* (iv) SGD further behind on Post-LN than on Pre-LN: {v}. This {verdicts.reproduces(v)} the paper.")
    if cnn in set(blocks.model) and cnn in set(runs.model):
        encoders = np.minimum(_by_seed(runs, "relative_gap", POSTLN, "sgd"), _by_seed(runs, "relative_gap", PRELN, "sgd"))
        v = _ordering(_by_seed(runs, "relative_gap", cnn, "sgd"), encoders,
                      f"relative gap of SGD momentum, {cnn} vs the smaller of the encoders'")
        lines.append(f"* (v) little of it on the CNN, the gap: {v}. This {verdicts.reproduces(v)} the paper.")
        encoders = np.minimum(_by_seed(het, "log10_spread", POSTLN), _by_seed(het, "log10_spread", PRELN))
        v = _ordering(_by_seed(het, "log10_spread", cnn), encoders,
                      f"gradient heterogeneity, {cnn} vs the smaller of the encoders'")
        lines.append(f"* (v) little of it on the CNN, the heterogeneity: {v}. This {verdicts.reproduces(v)} the paper.")
    means = runs[runs.optimizer.isin(["adamw", "sgd"])].groupby(["model", "optimizer"])[["initial", "final"]].mean()
    fitted = [m for m in dict.fromkeys(runs.model)
              if all(means.loc[(m, o), "final"] < FIT_SHARE * means.loc[(m, o), "initial"] for o in ("adamw", "sgd")
                     if (m, o) in means.index)]
    if fitted:
        lines.append(f"* Adam and SGD momentum both fit the fine-tuning set (final loss below {FIT_SHARE:.0%} of the "
                     f"initial loss) on {', '.join(fitted)}: there a small relative gap says little.")
    edges = runs[runs.edge]
    if len(edges):
        named = sorted({f"{m}/{OPTIMISER_LABELS[o]}" for m, o in zip(edges.model, edges.optimizer)})
        lines.append(f"* Best rate at a grid edge (the grid may be too narrow) for: {', '.join(named)}.")
    return "\n".join(lines)


__all__ = ["MODELS", "OPTIMISER_LABELS", "PAIRS", "digit_batches", "pretrained_state", "finetuning_start",
           "measured_blocks", "coordinate_gradients", "measure_blocks", "weighted_hessian_complexity",
           "optimiser_runs", "run_table", "study", "heterogeneity_table", "block_js_distance", "gradient_report"]
