"""Spectral densities from stochastic Lanczos quadrature (the density layer).

A :class:`SpectralDensity` stores Ritz nodes and Gauss weights per probe, so a new
smoothing width, grid or normalisation never reruns Lanczos. The estimated density is

    φ(t) = (1/n_v) Σ_l Σ_i τ_i^(l) g_σ(t − θ_i^(l)),

with ``g_σ`` the Gaussian pdf; it integrates to 1 (each probe's weights sum to 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import wasserstein_distance


@dataclass(frozen=True)
class SpectralDensity:
    """Quadrature approximation of a symmetric matrix's eigenvalue distribution.

    Attributes:
        nodes: ``[k, m]`` Ritz values per probe (``nan`` past a probe's steps).
        weights: ``[k, m]`` Gauss weights per probe (0 past its steps; rows sum to 1).
        dim: dimension ``n`` of the matrix (for trace estimates).
        scale: the factor the nodes were divided by (1 for raw eigenvalues).
        info: free-form provenance (steps, breakdowns, timings, ...).
    """

    nodes: np.ndarray
    weights: np.ndarray
    dim: int
    scale: float = 1.0
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        nodes = np.atleast_2d(np.asarray(self.nodes, dtype=np.float64))
        weights = np.atleast_2d(np.asarray(self.weights, dtype=np.float64))
        if nodes.shape != weights.shape:
            raise ValueError(f"nodes {nodes.shape} and weights {weights.shape} differ in shape")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "weights", weights)

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_eigenvalues(cls, eigenvalues, **info) -> SpectralDensity:
        """The exact spectral measure: every eigenvalue with weight ``1/n`` (one "probe")."""
        ev = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())
        return cls(ev[None], np.full((1, ev.size), 1.0 / ev.size), dim=ev.size, info=info)

    # ------------------------------------------------------------ properties
    @property
    def num_probes(self) -> int:
        """Number of probe vectors ``k``."""
        return self.nodes.shape[0]

    def _flat(self) -> tuple[np.ndarray, np.ndarray]:
        """Valid nodes and weights pooled over probes (weights sum to 1)."""
        mask = self.weights > 0
        return self.nodes[mask], self.weights[mask] / self.num_probes

    @property
    def lambda_max(self) -> float:
        """Largest Ritz value over all probes."""
        return float(np.nanmax(self.nodes))

    @property
    def lambda_min(self) -> float:
        """Smallest Ritz value over all probes."""
        return float(np.nanmin(self.nodes))

    def kth_largest(self, k: int = 10) -> float:
        """Estimate of the k-th largest eigenvalue, counted with multiplicity, from the quadrature weights.

        A Gauss weight ``τ`` estimates the fraction of eigenvalues a Ritz node stands for
        (its expectation over Gaussian probes is exactly that fraction), so
        ``N(t) = n · mean_l Σ_{θ_i^(l) ≥ t} τ_i^(l)`` estimates how many eigenvalues are
        ``≥ t``, repeated ones included. λ_k is the largest node with ``N ≥ k − ½``;
        zero-weight nodes count for nothing. Exact for :meth:`from_eigenvalues`; for SLQ
        the count is noisy (relative error about ``√(2 / (k · n_v))`` when the top Ritz
        values have converged). For an accurate λ_k use
        :func:`hesslab.top_eigenvalues`, which the book's normalisations do.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > self.dim:
            raise ValueError(f"k={k} exceeds the dimension {self.dim}")
        nodes, weights = self._flat()
        order = np.argsort(nodes)[::-1]
        counts = self.dim * np.cumsum(weights[order])
        reached = np.flatnonzero(counts >= k - 0.5)
        if reached.size == 0:  # only by round-off: the weights sum to 1
            return float(nodes[order][-1])
        return float(nodes[order][reached[0]])

    def trace(self) -> float:
        """SLQ estimate of ``tr(H) = n · mean_l Σ_i τ_i θ_i`` (Hutchinson with Gaussian probes)."""
        nodes, weights = self._flat()
        return float(self.dim * np.sum(weights * nodes))

    # --------------------------------------------------------- transformations
    def normalized(self, k: int = 10, by: float | None = None) -> SpectralDensity:
        """Nodes divided by the k-th largest eigenvalue (or by ``by``), as in Figures 1 and 3.

        Normalise *before* smoothing and choose ``sigma`` on the normalised axis. The
        default uses :meth:`kth_largest`, an estimate; pass ``by=`` an eigenvalue from
        :func:`hesslab.top_eigenvalues` for the exact λ_k.
        """
        scale = float(by) if by is not None else self.kth_largest(k)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(
                f"cannot normalise by {scale:g}: the k-th largest eigenvalue must be "
                "positive; choose a smaller k or pass by=..."
            )
        return SpectralDensity(self.nodes / scale, self.weights, self.dim, self.scale * scale,
                               dict(self.info, normalized_by=f"lambda_{k}" if by is None else "given"))

    # ------------------------------------------------------------- densities
    def grid(self, num: int = 2000, pad: float = 0.05) -> np.ndarray:
        """An even grid over ``[λ_min − pad·r, λ_max + pad·r]`` (``r`` the range), ``[num]``."""
        lo, hi = self.lambda_min, self.lambda_max
        r = max(hi - lo, abs(hi), 1e-12)
        return np.linspace(lo - pad * r, hi + pad * r, num)

    def density(self, grid: np.ndarray, sigma: float, *, renormalize: bool = False) -> np.ndarray:
        """Gaussian-broadened density φ on ``grid`` (``[num]`` -> ``[num]``).

        Args:
            grid: evaluation points, in the units of the (possibly normalised) nodes.
            sigma: standard deviation of the Gaussian kernel, same units.
            renormalize: rescale so the Riemann sum over the (even) grid is 1, as the
                paper's code does; the raw φ integrates to 1 over the real line.
        """
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        grid = np.asarray(grid, dtype=np.float64)
        nodes, weights = self._flat()
        out = np.zeros_like(grid)
        step = max(1, 4_000_000 // max(grid.size, 1))
        for s in range(0, nodes.size, step):
            z = (grid[:, None] - nodes[None, s : s + step]) / sigma
            out += np.exp(-0.5 * z * z) @ weights[s : s + step]
        out /= sigma * np.sqrt(2 * np.pi)
        if renormalize:
            dx = grid[1] - grid[0]
            out /= out.sum() * dx
        return out

    def log_density(self, grid: np.ndarray, sigma: float, floor: float = 1e-10) -> np.ndarray:
        """``density`` clipped below at ``floor`` for log-scale plots (the paper uses 1e-10)."""
        return np.maximum(self.density(grid, sigma), floor)

    def wasserstein1(self, eigenvalues) -> float:
        """Wasserstein-1 distance between the quadrature measure and exact ``eigenvalues``."""
        nodes, weights = self._flat()
        return float(wasserstein_distance(nodes, np.asarray(eigenvalues).ravel(), weights, None))

    # --------------------------------------------------------------- storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for :mod:`hesslab.storage.cache` (inverse: :meth:`from_arrays`)."""
        return {"nodes": self.nodes, "weights": self.weights,
                "dim": np.asarray(self.dim), "scale": np.asarray(self.scale)}

    @classmethod
    def from_arrays(cls, arrays, **info) -> SpectralDensity:
        """Rebuild from :meth:`to_arrays` output."""
        return cls(arrays["nodes"], arrays["weights"], int(arrays["dim"]), float(arrays["scale"]), info)
