"""Block heterogeneity at initialisation per model: blockwise spectra, JS heatmaps, JS⁰.

:func:`blockwise_at_init` measures the blockwise Hessian spectra of a freshly initialised
model of :mod:`hesslab.experiments.models` on the book's offline data (:func:`hesslab.experiments.batches.model_batches`,
``split="hessian"``), with the blocks the paper samples (:func:`sampled_blocks`) and the
Lanczos settings of a profile (:attr:`hesslab.experiments.profiles.Profile.blockwise`). Results are cached.

Two JS⁰ variants are reported side by side (:data:`JS_VARIANTS`):

* ``"linear"``: the densities on the shared-max-normalised linear axis, 1 % smoothing
  (the paper's axis; its exact JS recipe is not public);
* ``"log"`` (the book's main variant, its own choice): the same nodes on a log10 axis with
  one-decade smoothing, which resolves blocks whose curvature differs by orders of
  magnitude (see :mod:`hesslab.js`).

The book's reproduction notes (``book/reproduction.md``) state, per figure, what the paper
specifies, what is unverified and which choice the book makes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hesslab.js import js0, js_matrix
from hesslab.experiments.models import BuiltModel, build, family_of, spec
from hesslab.experiments.profiles import profile as get_profile
from hesslab.storage.cached import blockwise_slq
from hesslab.spectra import SpectralDensity
from hesslab.experiments.data import default_device, to_device
from hesslab.experiments.batches import hessian_batches

#: name -> options of :func:`hesslab.js.js_matrix`
JS_VARIANTS = {
    "log": {"axis": "log", "sigma": 1.0},
    "linear": {"axis": "linear"},
}

#: Table 1 of the paper as recalled (unverified; which model the last three values belong to is disputed)
PAPER_TABLE1 = {"resnet18": 0.10, "vgg16": 0.09, "gpt2-pretrained": 18.84, "mlp-mixer": 34.90, "bert": 53.38,
                "gpt2-nano": 83.23, "vit-base": 286.41, "gpt2": 371.68}

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
                      ) -> dict[str, SpectralDensity]:
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
        cache: see :func:`hesslab.storage.cached.blockwise_slq`.
        progress: progress bar.

    Returns:
        ``{block_name: SpectralDensity}`` of the blocks with at least :data:`MIN_BLOCK_DIM` entries.
    """
    settings = get_profile(profile)
    device = default_device(device)
    built = build(name, settings.model_size, seed=seed, device=device)
    data = [to_device(batch, device)
            for batch in hessian_batches(built, settings.blockwise, num_batches=num_batches, seed=seed)]
    spectra = blockwise_slq(built.model, built.loss_fn, data, sampled_blocks(name, built),
                            num_steps=num_steps or settings.blockwise.num_steps,
                            num_probes=num_probes or settings.blockwise.num_probes,
                            seed=probe_seed, batchnorm="train", precision=precision, cache=cache,
                            progress=progress)
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


def heterogeneity_table(names, profile: str = "cpu", *, seed: int = 0, cache=True, progress: bool = True,
                        **kwargs) -> pd.DataFrame:
    """JS⁰ (every variant), block count and scale spread per model, at initialisation.

    Returns:
        A DataFrame indexed by model with columns ``family``, ``blocks``, ``js0_log``,
        ``js0_linear``, ``scale_spread`` and ``paper`` (the recalled Table 1 value or NaN).
    """
    rows = {}
    for name in tqdm(list(names), desc="models", disable=not progress):
        spectra = blockwise_at_init(name, profile, seed=seed, cache=cache, progress=False, **kwargs)
        rows[name] = {"family": family_of(name), "blocks": len(spectra),
                      **{f"js0_{k}": v for k, v in js0_variants(spectra).items()},
                      "scale_spread": scale_spread(spectra), "paper": PAPER_TABLE1.get(name, np.nan)}
    return pd.DataFrame.from_dict(rows, orient="index")


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
        Rows per checked block: ``dim``, ``slq`` and ``exact`` λ_max, ``rel_error``, and
        ``w1_rel`` (Wasserstein-1 distance between the SLQ density and the exact spectrum,
        relative to the exact spectral range).
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
    operator = HessianOperator(built.model, built.loss_fn, data, batchnorm="train")
    exact = exact_block_eigenvalues(operator, small, max_dim=max_dim)
    rows = {}
    for block, eigenvalues in exact.items():
        s = spectra[block]
        span = float(eigenvalues[-1] - eigenvalues[0]) or 1.0
        rows[block] = {"dim": s.dim, "slq": s.lambda_max, "exact": float(eigenvalues[-1]),
                       "rel_error": abs(s.lambda_max - eigenvalues[-1]) / abs(eigenvalues[-1]),
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
