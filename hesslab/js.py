"""Jensen–Shannon divergences between blockwise spectra, and JS⁰ (Table 1 / Figure 4).

The paper's exact JS formula is not public: its Table 1 values exceed
ln 2, impossible for a JS divergence between probability distributions (the book's
reproduction notes, ``book/reproduction.md``, discuss it). Two modes:

* ``mode="probability"`` (default): the two densities are evaluated on one shared
  grid, turned into probability masses ``p_i = φ(t_i)·Δt`` (renormalised to sum 1),
  and ``JS = ½ KL(p‖m) + ½ KL(q‖m)``, ``m = (p+q)/2``, natural log; ``0 ≤ JS ≤ ln 2``
  (``sqrt=True`` gives the JS *distance*, a metric, ``≤ √ln 2``).
* ``mode="density"``: the hypothesis that reproduces the paper's magnitudes — the
  same sums taken over density *values* ``φ(t_i)`` (unit integral) without the grid
  step, i.e. about ``JS_probability / Δt``; unbounded, grid-dependent.

Before comparing, spectra are put on a common axis (``normalize``):

* ``"shared-max"`` (default): every block divided by one scale, the largest
  ``|eigenvalue|`` over all blocks; relative scales between blocks are kept, which is
  part of what "heterogeneity" means.
* ``"per-block-max"``: each block by its own largest ``|eigenvalue|`` (shapes only).
* ``"per-block-lambda10"``: each block by its own 10th largest eigenvalue, as the paper's
  Figures 1 and 3 plot them (:meth:`~hesslab.SpectralDensity.kth_largest`, an estimate
  from the quadrature weights; a block whose λ₁₀ is not positive falls back to its
  largest ``|eigenvalue|``). Shapes only, like ``"per-block-max"``, but robust to a
  single outlier.
* ``None``: raw eigenvalues (as the paper's code); give ``sigma`` in those units.

Then the densities are compared on a linear or a logarithmic eigenvalue axis (``axis``):

* ``"linear"`` (default, as the paper's plots): Gaussian smoothing of the normalised
  nodes, ``sigma`` relative to the shared range. Block spectra at initialisation are
  dominated by a spike of near-zero eigenvalues, and a block whose whole spectrum lies
  below about ``sigma`` of the largest block is indistinguishable from that spike.
* ``"log"`` (this book's addition, not the paper's): every normalised node ``λ`` is
  mapped to ``sign(λ)·max(log10|λ| + decades, 0)`` before smoothing, so blocks whose
  curvature differs by orders of magnitude land in different places; eigenvalues below
  ``10**-decades`` of the shared scale count as zero.

The book reports orderings and ratios of JS values, and says which mode it used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import rel_entr

from hesslab.spectra import SpectralDensity

MODES = ("probability", "density")
NORMALIZATIONS = ("shared-max", "per-block-max", "per-block-lambda10", None)

#: the k of the ``"per-block-lambda10"`` normalisation
LAMBDA_K = 10
AXES = ("linear", "log")


def js_divergence(p: np.ndarray, q: np.ndarray, dx: float = 1.0, mode: str = "probability") -> float:
    """JS between two nonnegative densities sampled on the same even grid.

    Args:
        p, q: density values ``[num]`` on the grid.
        dx: grid step.
        mode: ``"probability"`` (masses ``p·dx``, renormalised; ≤ ln 2) or
            ``"density"`` (values summed without ``dx``).

    Returns:
        The divergence (natural log).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"p and q must be 1-D and of equal shape, got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("densities must be finite and nonnegative")
    if mode == "probability":
        p, q = p * dx, q * dx
        if p.sum() <= 0 or q.sum() <= 0:
            raise ValueError("a density has no mass on the grid; widen the grid")
        p, q = p / p.sum(), q / q.sum()
    # drop subnormal values: (p + q)/2 can round to 0 there and give p·log(p/0) = inf
    p, q = np.where(p < 1e-300, 0.0, p), np.where(q < 1e-300, 0.0, q)
    m = 0.5 * (p + q)
    return float(0.5 * rel_entr(p, m).sum() + 0.5 * rel_entr(q, m).sum())


def _scales(spectra: Sequence[SpectralDensity], normalize) -> list[float]:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    peaks = [max(abs(s.lambda_min), abs(s.lambda_max)) for s in spectra]
    if normalize is None:
        return [1.0] * len(spectra)
    if normalize == "shared-max":
        top = max(peaks)
        return [top if top > 0 else 1.0] * len(spectra)
    if normalize == "per-block-lambda10":
        tenth = [s.kth_largest(min(LAMBDA_K, s.dim)) for s in spectra]
        return [t if np.isfinite(t) and t > 0 else (p if p > 0 else 1.0) for t, p in zip(tenth, peaks)]
    return [p if p > 0 else 1.0 for p in peaks]


def shared_densities(
    spectra: Sequence[SpectralDensity],
    *,
    normalize="shared-max",
    sigma: float | None = None,
    sigma_rel: float = 0.01,
    grid_size: int = 2000,
    axis: str = "linear",
    decades: float = 8.0,
    pad: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate every spectrum's density on one shared grid after normalisation.

    Args:
        spectra: the spectral densities.
        normalize: see the module docstring.
        sigma: Gaussian width in normalised units; default ``sigma_rel`` times the
            shared range of nodes.
        sigma_rel: relative width used when ``sigma`` is None.
        grid_size: number of grid points.
        axis: ``"linear"`` or ``"log"`` (module docstring).
        decades: with ``axis="log"``, the orders of magnitude kept below the scale.
        pad: the grid extends this far beyond the smallest and largest node, in
            normalised units (default ``5 * sigma``; the paper's code pads by 1).

    Returns:
        ``(grid [grid_size], densities [len(spectra), grid_size])``.
    """
    if len(spectra) == 0:
        raise ValueError("no spectra given")
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    scaled = [s.normalized(by=c) for s, c in zip(spectra, _scales(spectra, normalize))]
    if axis == "log":
        scaled = [_log_magnitude(s, decades) for s in scaled]
    lo = min(s.lambda_min for s in scaled)
    hi = max(s.lambda_max for s in scaled)
    width = sigma if sigma is not None else sigma_rel * max(hi - lo, 1e-12)
    if width <= 0:
        raise ValueError(f"sigma must be positive, got {width}")
    margin = 5 * width if pad is None else pad
    if margin < 0:
        raise ValueError(f"pad must be nonnegative, got {pad}")
    grid = np.linspace(lo - margin, hi + margin, grid_size)
    return grid, np.stack([s.density(grid, width) for s in scaled])


def _log_magnitude(spectrum: SpectralDensity, decades: float) -> SpectralDensity:
    """Nodes mapped to ``sign(λ)·max(log10|λ| + decades, 0)`` (weights unchanged)."""
    if decades <= 0:
        raise ValueError(f"decades must be positive, got {decades}")
    with np.errstate(divide="ignore", invalid="ignore"):
        mapped = np.sign(spectrum.nodes) * np.maximum(np.log10(np.abs(spectrum.nodes)) + decades, 0.0)
    mapped = np.where(np.isnan(spectrum.nodes), np.nan, mapped)
    return SpectralDensity(mapped, spectrum.weights, spectrum.dim, spectrum.scale,
                           dict(spectrum.info, axis=f"log10, {decades:g} decades"))


def spectra_js(p: SpectralDensity, q: SpectralDensity, *, mode: str = "probability",
               sqrt: bool = False, **grid_options) -> float:
    """The JS divergence between two spectra on a shared grid (options as :func:`shared_densities`).

    With ``sqrt=True`` its square root, the JS distance (:func:`js_distance`).
    """
    return float(js_matrix({"p": p, "q": q}, mode=mode, sqrt=sqrt, **grid_options).iloc[0, 1])


def js_distance(p: SpectralDensity, q: SpectralDensity, *, mode: str = "probability", **grid_options) -> float:
    """The JS distance (square root of the divergence, a metric) between two spectra."""
    return spectra_js(p, q, mode=mode, sqrt=True, **grid_options)


def js_matrix(
    spectra: Mapping[str, SpectralDensity],
    *,
    mode: str = "probability",
    sqrt: bool = False,
    **grid_options,
) -> pd.DataFrame:
    """Pairwise JS among blockwise spectra (Figure 4's heatmaps).

    Args:
        spectra: ``{block_name: SpectralDensity}``, e.g. from :func:`hesslab.blockwise_slq`.
        mode: ``"probability"`` or ``"density"`` (module docstring).
        sqrt: return the square root (JS distance) instead of the divergence.
        **grid_options: ``normalize``, ``sigma``, ``sigma_rel``, ``grid_size``, ``axis``, ``decades``, ``pad``.

    Returns:
        A symmetric ``[B, B]`` DataFrame indexed by block name, zero diagonal.
    """
    names = list(spectra)
    grid, dens = shared_densities([spectra[n] for n in names], **grid_options)
    dx = grid[1] - grid[0]
    out = np.zeros((len(names), len(names)))
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            out[a, b] = out[b, a] = js_divergence(dens[a], dens[b], dx, mode)
    if sqrt:
        out = np.sqrt(out)
    return pd.DataFrame(out, index=names, columns=names)


def js0(spectra: Mapping[str, SpectralDensity], **options) -> float:
    """JS⁰: the mean JS over unordered pairs of distinct blocks (Table 1), options as :func:`js_matrix`."""
    if len(spectra) < 2:
        raise ValueError("JS⁰ needs at least two blocks")
    matrix = js_matrix(spectra, **options).to_numpy()
    upper = np.triu_indices(len(matrix), k=1)
    return float(matrix[upper].mean())
