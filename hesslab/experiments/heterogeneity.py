"""Block heterogeneity at initialisation per model: blockwise spectra, JS heatmaps, JS⁰.

:func:`blockwise_at_init` measures the blockwise Hessian spectra of a freshly initialised
model of :mod:`hesslab.experiments.models` on the book's offline data (:func:`hesslab.experiments.batches.model_batches`,
``split="hessian"``), with the blocks the paper samples (:func:`sampled_blocks`) and the
Lanczos settings of a profile (:attr:`hesslab.experiments.profiles.Profile.blockwise`). Results are cached.

The paper's JS recipe is not public, so four JS⁰ variants are reported side by side
(:data:`JS_VARIANTS`, labels in :data:`VARIANT_LABELS`):

* ``"log"``: the densities on the shared-max-normalised log10|λ| axis with one-decade
  smoothing (the book's own axis), which resolves blocks whose curvature differs by orders
  of magnitude (see :mod:`hesslab.js`);
* ``"linear"``: the same nodes on the shared-max-normalised linear axis, 1 % smoothing
  (the paper's plotting axis);
* ``"lambda10"``: each block divided by its own 10th largest eigenvalue, as the paper's
  Figures 1 and 3 are normalised, 1 % smoothing on that axis (shapes only);
* ``"density"``: the hypothesis that reproduces the paper's magnitudes — raw eigenvalues,
  the smoothing and grid of the paper's SLQ code (σ² = 1e-5, 50 000 points, ±1 padding),
  density values summed without the grid step (unbounded).

The first three are JS divergences of probability masses, at most ln 2. Which one the book
leads with is decided by :func:`headline_variant` (the most reproducible over seeds), never
by which one agrees with the paper. Every number comes with its spread over initialisation
seeds (:func:`js0_over_seeds`), and the Table 1 verdict is :func:`table1_report`.

The book's reproduction notes (``book/reproduction.md``) state, per figure, what the paper
specifies, what is unverified and which choice the book makes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hesslab.js import js0, js_matrix
from hesslab.experiments import verdicts
from hesslab.experiments.models import BuiltModel, build, family_of, spec
from hesslab.experiments.profiles import profile as get_profile
from hesslab.storage.cache import open_cache
from hesslab.storage.cached import blockwise_slq
from hesslab.spectra import SpectralDensity
from hesslab.distributed import run_on_ranks, shard
from hesslab.experiments.data import default_device, to_device
from hesslab.experiments.batches import hessian_batches
from hesslab.experiments.scaleout import processes_for

#: the paper's SLQ code smooths with a Gaussian of variance 1e-5 in raw eigenvalue units
PAPER_SIGMA = 1e-5 ** 0.5

#: name -> options of :func:`hesslab.js.js_matrix`
JS_VARIANTS = {
    "log": {"axis": "log", "sigma": 1.0},
    "linear": {"axis": "linear"},
    "lambda10": {"axis": "linear", "normalize": "per-block-lambda10"},
    "density": {"mode": "density", "normalize": None, "sigma": PAPER_SIGMA, "grid_size": 50_000, "pad": 1.0},
}

#: name -> how the chapters label a variant
VARIANT_LABELS = {
    "log": "log10|λ| axis, shared max (book)",
    "linear": "linear axis, shared max (paper's plot axis)",
    "lambda10": "λ/λ₁₀ per block (paper's normalisation)",
    "density": "raw λ, density values summed (paper-magnitude hypothesis)",
}

#: Table 1 of the paper (seed 000), in its order
TABLE1_MODELS = ("resnet18", "vgg16", "gpt2-pretrained", "mlp-mixer", "bert", "gpt2", "vit-base")

#: models the book adds to Table 1
BOOK_EXTRA_MODELS = ("gpt2-nano",)

#: Table 1's values where two recollections of the paper agree (the other two are unverified)
PAPER_TABLE1 = {"resnet18": 0.10, "vgg16": 0.09, "gpt2-pretrained": 18.84, "mlp-mixer": 34.90, "bert": 53.38}

#: Table 1 entries whose recalled value is unverified (83.23, 286.41 and 371.68 are recalled
#: for these two without agreement on which is which)
PAPER_TABLE1_UNVERIFIED = ("gpt2", "vit-base")

#: batch-norm mode of the blockwise Hessians at initialisation: running statistics, as the
#: paper's code evaluates its models (``model.eval()``). At initialisation the running
#: statistics are (0, 1), so batch-norm is the identity; with batch statistics instead
#: (``"train"``) the convolutions before a batch-norm become scale-invariant, which at cpu
#: size doubles ResNet-18's JS⁰ and puts VGG-16-BN's above every Transformer's
BATCHNORM = "eval"

#: blocks smaller than this are left out (biases of tiny models, token-type embeddings)
MIN_BLOCK_DIM = 16


def sampled_blocks(name: str, built: BuiltModel):
    """The blocks whose spectra are compared: the paper's presets where its code has them.

    GPT-2 family: ``"gpt2-paper"`` (``wte`` and Q, K, V, attention output and both MLP
    matrices in 4 sampled layers); ViT: ``"vit-paper"`` (fused QKV); every other model:
    each weight matrix or convolution kernel (tensors with 2 or more dimensions).
    """
    if name.startswith("gpt2"):
        return "gpt2-paper"
    if name == "vit-base":
        return "vit-paper"
    shapes = dict(built.model.named_parameters())
    return [n for n, p in shapes.items() if p.ndim >= 2 and p.numel() >= MIN_BLOCK_DIM]


def blockwise_at_init(name: str, profile: str = "cpu", *, seed: int = 0, num_batches: int | None = None,
                      num_steps: int | None = None, num_probes: int | None = None, probe_seed: int = 0,
                      device=None, cache=True, progress: bool = True, precision: str = "float32",
                      batchnorm: str = BATCHNORM, options: dict | None = None,
                      processes: int | None = None) -> dict[str, SpectralDensity]:
    """Blockwise spectra of ``name`` at initialisation.

    Args:
        name: a model of :data:`hesslab.experiments.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"`` (its ``blockwise`` settings).
        seed: initialisation and data seed.
        num_batches, num_steps, num_probes: override the profile's Hessian batches,
            Lanczos steps and probes (for convergence studies).
        probe_seed: seed of the probe vectors.
        device: where to compute (default: CUDA when available).
        precision: the operator's arithmetic (``"float32"`` or ``"fast"``, see :class:`~hesslab.HessianOperator`).
        batchnorm: batch-norm mode (default :data:`BATCHNORM`, the paper code's running statistics).
        cache: see :func:`hesslab.storage.cached.blockwise_slq`.
        progress: progress bar.
        options: model options of :func:`hesslab.experiments.models.build` (``{"c": 4.0}`` for
            ``"hetero-mlp"``); they are part of the cache key.
        processes: data-parallel ranks (default :func:`~hesslab.experiments.scaleout.processes_for`:
            every visible GPU at the ``paper`` profile, else one); each holds a shard of
            the Hessian batches (:mod:`hesslab.distributed`).

    Returns:
        ``{block_name: SpectralDensity}`` of the blocks with at least :data:`MIN_BLOCK_DIM` entries.
    """
    settings = get_profile(profile)
    device = default_device(device)
    options = dict(options or {})
    ranks = processes_for(profile, device, processes)
    if ranks > 1:
        store = open_cache(cache)
        return run_on_ranks("hesslab.experiments.heterogeneity:blockwise_at_init", dict(
            name=name, profile=profile, seed=seed, num_batches=num_batches, num_steps=num_steps, num_probes=num_probes,
            probe_seed=probe_seed, device=device.type, cache=None if store is None else store.root, progress=False,
            precision=precision, batchnorm=batchnorm, options=options), ranks, cuda=device.type == "cuda")
    built = build(name, settings.model_size, seed=seed, device=device, **options)
    data = [to_device(batch, device)  # this rank's share under torch.distributed, else all
            for batch in shard(hessian_batches(built, settings.blockwise, num_batches=num_batches, seed=seed))]
    spectra = blockwise_slq(built.model, built.loss_fn, data, sampled_blocks(name, built),
                            num_steps=num_steps or settings.blockwise.num_steps,
                            num_probes=num_probes or settings.blockwise.num_probes,
                            seed=probe_seed, batchnorm=batchnorm, precision=precision, cache=cache,
                            cache_key={"model_options": options} if options else None, progress=progress)
    return {k: v for k, v in spectra.items() if v.dim >= MIN_BLOCK_DIM}


def js0_variants(spectra: dict[str, SpectralDensity]) -> dict[str, float]:
    """JS⁰ under every variant of :data:`JS_VARIANTS`."""
    return {variant: js0(spectra, **options) for variant, options in JS_VARIANTS.items()}


def js_heatmap(spectra: dict[str, SpectralDensity], variant: str = "log") -> pd.DataFrame:
    """Pairwise JS among the blocks (Figure 4's heatmap) under ``variant``."""
    return js_matrix(spectra, **JS_VARIANTS[variant])


def scale_spread(spectra: dict[str, SpectralDensity]) -> float:
    """Orders of magnitude between the flattest and the sharpest block: ``log10(max λ_max / min λ_max)``."""
    tops = np.array([max(s.lambda_max, 1e-30) for s in spectra.values()])
    return float(np.log10(tops.max() / tops.min()))


def js0_over_seeds(names, profile: str = "cpu", *, seeds=(0, 1, 2), cache=True, progress: bool = True,
                   **kwargs) -> pd.DataFrame:
    """JS⁰ (every variant) and scale spread per model and initialisation seed.

    Seed ``s`` initialises the model, draws its Hessian data and its probe vectors
    (``probe_seed=s``), so the spread over seeds is the whole measurement's.

    Args:
        names: models of :data:`hesslab.experiments.models.NAMES`.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        seeds: initialisation seeds (at least 3 for a margin).
        cache: see :func:`hesslab.storage.cached.blockwise_slq`.
        progress: progress bar.
        **kwargs: passed to :func:`blockwise_at_init`.

    Returns:
        A long DataFrame, one row per ``(model, seed)``: ``model``, ``seed``, ``family``,
        ``blocks``, ``js0_<variant>`` for every variant of :data:`JS_VARIANTS`, ``scale_spread``.
    """
    runs = [(name, seed) for name in names for seed in seeds]
    rows = []
    for name, seed in tqdm(runs, desc="JS⁰ over seeds", disable=not progress):
        spectra = blockwise_at_init(name, profile, seed=seed, probe_seed=seed, cache=cache, progress=False, **kwargs)
        rows.append({"model": name, "seed": seed, "family": family_of(name), "blocks": len(spectra),
                     **{f"js0_{k}": v for k, v in js0_variants(spectra).items()},
                     "scale_spread": scale_spread(spectra)})
    return pd.DataFrame(rows)


def _measures(long: pd.DataFrame) -> list[str]:
    return [c for c in long.columns if c.startswith("js0_")] + ["scale_spread"]


def seed_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per model (from :func:`js0_over_seeds`).

    Returns:
        Indexed by model (first-seen order): ``family``, ``blocks``, ``seeds``, then
        ``<measure>_mean`` and ``<measure>_sd`` per JS⁰ variant and ``scale_spread``, and
        ``paper`` (the agreed Table 1 value, NaN otherwise).
    """
    order = list(dict.fromkeys(long.model))
    grouped = long.groupby("model", sort=False)
    out = pd.DataFrame({"family": grouped.family.first(), "blocks": grouped.blocks.first(),
                        "seeds": grouped.seed.nunique()})
    for column in _measures(long):
        out[f"{column}_mean"] = grouped[column].mean()
        out[f"{column}_sd"] = grouped[column].std(ddof=1)
    out["paper"] = [PAPER_TABLE1.get(m, np.nan) for m in out.index]
    return out.loc[order]


def headline_variant(long: pd.DataFrame) -> str:
    """The variant the book leads with: the most reproducible one over seeds.

    Criterion (stated before looking at any separation): the smallest median, over models,
    of the coefficient of variation of JS⁰ across seeds (sd / mean). It rewards a measurement
    that gives the same number for the same model, whichever way that number points.
    """
    scores = {}
    for variant in JS_VARIANTS:
        grouped = long.groupby("model")[f"js0_{variant}"]
        cv = grouped.std(ddof=1) / grouped.mean().abs().clip(lower=1e-300)
        scores[variant] = float(cv.median())
    if any(np.isnan(v) for v in scores.values()):
        raise ValueError("the headline variant needs at least 2 seeds per model")
    return min(scores, key=scores.get)


def separation(long: pd.DataFrame, variant: str, *, low: str = "cnn", high: str = "transformer") -> pd.DataFrame:
    """Per seed: the largest JS⁰ of family ``low``, the smallest of family ``high``, their ratio.

    Returns:
        Indexed by seed: ``low_max``, ``high_min``, ``ratio`` (``high_min / low_max``).
    """
    column = f"js0_{variant}"
    rows = {}
    for seed, group in long.groupby("seed"):
        lows, highs = group[group.family == low][column], group[group.family == high][column]
        if lows.empty or highs.empty:
            raise ValueError(f"seed {seed} needs models of both families {low!r} and {high!r}")
        rows[seed] = {"low_max": lows.max(), "high_min": highs.min(), "ratio": highs.min() / lows.max()}
    return pd.DataFrame.from_dict(rows, orient="index")


def paper_separation() -> float:
    """The paper's Table 1 ratio: smallest agreed Transformer value over the largest CNN value."""
    return min(PAPER_TABLE1["gpt2-pretrained"], PAPER_TABLE1["bert"]) / max(PAPER_TABLE1["resnet18"],
                                                                             PAPER_TABLE1["vgg16"])


def separation_verdicts(long: pd.DataFrame) -> dict[str, verdicts.Verdict]:
    """Per variant: do the Transformers' JS⁰ exceed the CNNs' beyond the seed spread (:func:`verdicts.ratio_verdict`)?"""
    out = {}
    for variant in JS_VARIANTS:
        sep = separation(long, variant)
        if (sep.low_max <= 0).any() or (sep.high_min <= 0).any():
            out[variant] = verdicts.Verdict(False, "a JS⁰ of 0: no ratio", {"ratios": []})
            continue
        out[variant] = verdicts.ratio_verdict(sep.high_min, sep.low_max, what="smallest Transformer / largest CNN")
    return out


def table1_report(long: pd.DataFrame, profile: str) -> str:
    """The Table 1 chapter's verdict, in Markdown, computed from :func:`js0_over_seeds`.

    States the headline variant and why, the CNN/Transformer separation per variant (with
    the seed spread), whether the paper's order of magnitude is reached, and where
    pretrained GPT-2 sits, each with "reproduces" or "does **not** reproduce".
    """
    headline = headline_variant(long)
    found = separation_verdicts(long)
    paper_ratio = paper_separation()
    lines = [f"**What we obtained ({profile} profile, {long.seed.nunique()} seeds).** "
             f"The headline variant is **{VARIANT_LABELS[headline]}**, the one whose JS⁰ varies least "
             f"across seeds (median coefficient of variation over models). The paper's ratio of the smallest "
             f"Transformer value to the largest CNN value is {paper_ratio:.0f}× (agreed Table 1 values)."]
    for variant, verdict in found.items():
        mark = " (headline)" if variant == headline else ""
        magnitude = verdict.numbers.get("geometric_mean", np.nan)
        reach = ("reaches" if magnitude >= paper_ratio / 10 else "falls far short of")
        lines.append(f"* {VARIANT_LABELS[variant]}{mark}: {verdict}. The separation "
                     f"{verdicts.reproduces(verdict)}; its size {reach} the paper's order of magnitude.")
    column = f"js0_{headline}"
    by_seed = long.pivot(index="seed", columns="model", values=column)
    families = long.groupby("model").family.first()
    smallest = by_seed[[m for m in by_seed if families[m] == "transformer"]].min(axis=1)
    per_cnn = {m: float(np.exp(np.log(smallest / by_seed[m]).mean()))
               for m in by_seed if families[m] == "cnn" and (by_seed[m] > 0).all()}
    if per_cnn:
        lines.append("* Per CNN (headline variant), smallest Transformer JS⁰ over the CNN's (geometric mean over "
                     "seeds): " + ", ".join(f"{m} {r:.3g}×" for m, r in per_cnn.items()) + ".")
    pretrained = long[long.model == "gpt2-pretrained"]
    others = long[(long.family == "transformer") & (long.model != "gpt2-pretrained")]
    if not pretrained.empty and not others.empty:
        lowest_other = others.groupby("seed")[column].min().loc[pretrained.seed]
        verdict = verdicts.ordering_verdict(pretrained[column].to_numpy(), lowest_other.to_numpy(),
                                            what="pretrained GPT-2 vs the lowest other Transformer")
        lines.append(f"* Pretrained GPT-2 lowest among the Transformers (headline variant): {verdict}; "
                     f"this {verdicts.reproduces(verdict)}.")
    holds = found[headline].holds
    lines.append("\nOn the headline variant, Table 1's separation of CNNs below Transformers "
                 + ("**reproduces**." if holds else "does **not** reproduce beyond the seed spread."))
    return "\n".join(lines)


def _probe_subset(spectra: dict[str, SpectralDensity], probes: slice) -> dict[str, SpectralDensity]:
    return {n: SpectralDensity(s.nodes[probes], s.weights[probes], s.dim) for n, s in spectra.items()}


def probe_spread(spectra: dict[str, SpectralDensity], group: int = 1, variant: str = "log") -> tuple[float, float]:
    """Mean and standard deviation of JS⁰ over disjoint groups of ``group`` probes (error bars over probe seeds).

    Each block's probes are independent, so each group is an independent estimate with
    ``group`` probes per block.
    """
    k = min(s.num_probes for s in spectra.values())
    if not 1 <= group <= k:
        raise ValueError(f"group must be between 1 and the number of probes {k}, got {group}")
    values = [js0(_probe_subset(spectra, slice(i, i + group)), **JS_VARIANTS[variant])
              for i in range(0, k - group + 1, group)]
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def convergence_study(name: str, profile: str = "cpu", *, batches=(1, 2, 4), steps=(10, 20, 40),
                      probes=(1, 2, 4, 8), seed: int = 0, cache=True, progress: bool = True) -> pd.DataFrame:
    """How JS⁰ moves with the Hessian batch count, the Lanczos steps and the probes (one at a time).

    The other settings stay at the profile's values. Batches and steps: one run each, error
    bars from its single probes. Probes: one run with ``max(probes)`` probes, split into
    disjoint groups of each size (mean and spread over the groups).

    Returns:
        Rows ``setting`` (``"batches"``/``"steps"``/``"probes"``), ``value``, ``tokens``
        (examples, or token positions, in the Hessian batch), ``js0`` (book variant; for
        probes the mean over groups), ``js0_linear``, ``probe_mean``, ``probe_sd``,
        ``scale_spread``.
    """
    settings = get_profile(profile)
    model = spec(name)
    count, size = settings.blockwise.batches[model.modality]
    per_example = settings.models[name]["context"] if model.modality == "text" else 1
    runs = ([("batches", b, dict(num_batches=b)) for b in batches] + [("steps", m, dict(num_steps=m)) for m in steps]
            + [("probes", k, dict(num_probes=max(probes))) for k in probes])
    rows = []
    for setting, value, override in tqdm(runs, desc=f"{name} convergence", disable=not progress):
        spectra = blockwise_at_init(name, profile, seed=seed, cache=cache, progress=False, **override)
        group = value if setting == "probes" else 1
        mean, sd = probe_spread(spectra, group)
        variants = js0_variants(spectra)
        tokens = override.get("num_batches", count) * size * per_example
        rows.append({"setting": setting, "value": value, "tokens": tokens,
                     "js0": mean if setting == "probes" else variants["log"], "js0_linear": variants["linear"],
                     "probe_mean": mean, "probe_sd": sd, "scale_spread": scale_spread(spectra)})
    return pd.DataFrame(rows)


def check_against_exact(name: str, profile: str = "cpu", *, max_dim: int = 1000, seed: int = 0,
                        cache=True) -> pd.DataFrame:
    """SLQ λ_max of every block with at most ``max_dim`` entries against ``eigvalsh`` of the explicit block.

    Returns:
        Rows per checked block: ``dim``, ``slq`` and ``exact`` λ_max, ``rel_error`` (relative
        to |λ_max|), ``norm_error`` (relative to the block's spectral norm max |λ|: Lanczos
        resolves the extremes to a fraction of the whole spectrum's width, so a λ_max far
        below a large negative λ_min converges late in relative terms), and ``w1_rel``
        (Wasserstein-1 distance between the SLQ density and the exact spectrum, relative to
        the exact spectral range).
    """
    from hesslab.hvp import HessianOperator
    from hesslab.slq import exact_block_eigenvalues

    settings = get_profile(profile)
    built = build(name, settings.model_size, seed=seed)
    data = hessian_batches(built, settings.blockwise, seed=seed)
    spectra = blockwise_at_init(name, profile, seed=seed, cache=cache, progress=False, device="cpu")
    small = [b for b, s in spectra.items() if s.dim <= max_dim]
    if not small:
        raise ValueError(f"no block of {name!r} has at most {max_dim} entries; raise max_dim")
    operator = HessianOperator(built.model, built.loss_fn, data, batchnorm=BATCHNORM)
    exact = exact_block_eigenvalues(operator, small, max_dim=max_dim)
    rows = {}
    for block, eigenvalues in exact.items():
        s = spectra[block]
        span = float(eigenvalues[-1] - eigenvalues[0]) or 1.0
        rows[block] = {"dim": s.dim, "slq": s.lambda_max, "exact": float(eigenvalues[-1]),
                       "rel_error": abs(s.lambda_max - eigenvalues[-1]) / abs(eigenvalues[-1]),
                       "norm_error": abs(s.lambda_max - eigenvalues[-1]) / float(np.abs(eigenvalues).max()),
                       "w1_rel": s.wasserstein1(eigenvalues) / span}
    return pd.DataFrame.from_dict(rows, orient="index")


def representative_blocks(name: str, spectra: dict[str, SpectralDensity], count: int = 4) -> list[str]:
    """``count`` blocks to show side by side (Figure 3).

    For BERT the first layer's Q, K, V and MLP input matrices (the paper's choice is
    unverified), otherwise blocks evenly spaced in depth.
    """
    names = list(spectra)
    if name == "bert":
        wanted = ["layer.0.attention.self.query", "layer.0.attention.self.key", "layer.0.attention.self.value",
                  "layer.0.intermediate.dense"]
        picked = [next((n for n in names if w in n), None) for w in wanted]
        if all(picked):
            return picked[:count]
    index = np.linspace(0, len(names) - 1, min(count, len(names))).round().astype(int)
    return [names[i] for i in index]
