"""Quadratic problems with block-diagonal Hessians: the four cases and their block spectra.

See :mod:`hesslab.experiments.quadratic` for the problem and the cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hesslab.experiments.quadratic.spectra_files import load_block_spectra

#: The paper's condition number for every case.
PAPER_KAPPA = 5000.0

CASES = {
    1: ("model", 1.0, "Case 1: GPT-2 blocks"),
    2: ("model", 0.0, "Case 2: ResNet-18 blocks"),
    3: ("synthetic", 1.0, "Case 3: heterogeneous (synthetic)"),
    4: ("synthetic", 0.0, "Case 4: homogeneous (synthetic)"),
}
"""case number -> (family, heterogeneity, title). The paper: Cases 1 and 3 heterogeneous, 2 and 4 homogeneous."""

#: Spectra family (in the block-spectra file) of Case 1 and of Case 2.
CASE_FAMILIES = {1: "gpt2", 2: "resnet18"}

# --------------------------------------------------------------------------- spectra
def scale_to_condition_number(eigenvalues, kappa: float = PAPER_KAPPA) -> np.ndarray:
    """Shift and scale eigenvalues (one affine map for all) onto ``[1, kappa]``.

    ``λ ↦ 1 + (λ − λ_min)(κ − 1)/(λ_max − λ_min)`` with the minimum and maximum over
    *all* entries: the paper's "shift and scale" of the pooled block spectra. Negative
    and zero eigenvalues are kept and shifted with the rest (the most negative one
    becomes 1); relative gaps, and hence each block's position and width on a linear
    axis, are preserved.

    Args:
        eigenvalues: ``[L, d]`` (or any shape) real eigenvalues, not all equal.
        kappa: target condition number ``λ_max / λ_min`` (≥ 1).

    Returns:
        Array of the same shape with minimum exactly 1 and maximum exactly ``kappa``.
    """
    ev = np.asarray(eigenvalues, dtype=np.float64)
    _check_kappa(kappa)
    lo, hi = float(ev.min()), float(ev.max())
    if not np.isfinite([lo, hi]).all():
        raise ValueError("eigenvalues must be finite")
    if hi == lo:
        if kappa != 1:
            raise ValueError("all eigenvalues are equal: cannot scale them to kappa > 1")
        return np.ones_like(ev)
    out = 1.0 + (ev - lo) * ((kappa - 1.0) / (hi - lo))
    # pin the extremes, so κ(H) = kappa holds to rounding of the matrix, not of this map
    out[ev == lo] = 1.0
    out[ev == hi] = kappa
    return out


def _check_kappa(kappa: float) -> None:
    if not (np.isfinite(kappa) and kappa >= 1):
        raise ValueError(f"the condition number kappa must be a finite number >= 1, got {kappa!r}")


def _quantiles(values, size: int) -> np.ndarray:
    """``size`` quantiles of ``values`` at 0, 1/(size-1), …, 1 (min and max kept)."""
    return np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0.0, 1.0, size))


def interpolate_spectra(homogeneous, heterogeneous, t: float) -> np.ndarray:
    """Block spectra between two cases: quantile-wise geometric interpolation.

    Block ``l``'s ``i``-th smallest eigenvalue is ``a_li^(1-t) · b_li^t``: on a log axis
    each quantile moves along a straight line (the Wasserstein geodesic of the log
    spectra), so blocks slide from sharing one spectrum (t = 0) to their own (t = 1).

    Args:
        homogeneous: ``[L, d]`` positive eigenvalues at t = 0.
        heterogeneous: ``[L, d]`` positive eigenvalues at t = 1.
        t: degree of heterogeneity in ``[0, 1]``.

    Returns:
        ``[L, d]`` eigenvalues, each row sorted ascending.
    """
    a = np.sort(np.asarray(homogeneous, dtype=np.float64), axis=-1)
    b = np.sort(np.asarray(heterogeneous, dtype=np.float64), axis=-1)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two [L, d] arrays of equal shape, got {a.shape} and {b.shape}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"heterogeneity t must lie in [0, 1], got {t}")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("interpolation is on a log axis: eigenvalues must be positive")
    return np.exp((1.0 - t) * np.log(a) + t * np.log(b))


def synthetic_block_spectra(
    heterogeneous: bool, *, num_blocks: int = 4, block_size: int = 100,
    kappa: float = PAPER_KAPPA, block_kappa: float = 20.0,
) -> np.ndarray:
    """Synthetic spectra of Cases 3 (heterogeneous) and 4 (homogeneous).

    Eigenvalues are evenly spaced on a log axis (deterministic quantiles, no sampling).
    Case 3: block ``l`` spans its own interval ``[c_l, c_l · block_kappa]`` whose
    geometric centres are evenly spaced on ``[1, κ]`` (the first starts at 1, the last
    ends at κ); Case 4: every block spans all of ``[1, κ]``. The paper's intervals and
    sampling are unverified; these follow the paper's description (a narrow interval of
    its own per block vs one shared wide distribution).

    Args:
        heterogeneous: Case 3 if True, Case 4 if False.
        num_blocks: number of blocks ``L`` (≥ 2).
        block_size: eigenvalues per block ``d`` (≥ 2).
        kappa: global condition number.
        block_kappa: condition number of every Case 3 block (``1 ≤ block_kappa ≤ kappa``).

    Returns:
        ``[L, d]`` eigenvalues with minimum 1 and maximum ``kappa``.
    """
    _check_sizes(num_blocks, block_size)
    _check_kappa(kappa)
    q = np.linspace(0.0, 1.0, block_size)
    if not heterogeneous:
        return np.tile(kappa**q, (num_blocks, 1))
    if not 1.0 <= block_kappa <= kappa:
        raise ValueError(f"block_kappa must lie in [1, kappa={kappa}], got {block_kappa}")
    # block l covers log-interval [s_l, s_l + log block_kappa], s_l evenly from 0 to log κ − log block_kappa
    starts = np.linspace(0.0, math.log(kappa) - math.log(block_kappa), num_blocks)
    return np.exp(starts[:, None] + q[None, :] * math.log(block_kappa))


def _check_sizes(num_blocks: int, block_size: int) -> None:
    if int(num_blocks) != num_blocks or num_blocks < 1:
        raise ValueError(f"num_blocks must be a positive integer, got {num_blocks!r}")
    if int(block_size) != block_size or block_size < 2:
        raise ValueError(f"block_size must be an integer >= 2, got {block_size!r}")


def model_block_spectra(
    family: str, *, block_size: int = 100, kappa: float = PAPER_KAPPA, path=None,
) -> tuple[list[str], np.ndarray]:
    """Block spectra of Case 1 (``"gpt2"``) or Case 2 (``"resnet18"``).

    Each stored block spectrum (measured, indefinite) is reduced to ``block_size``
    quantiles (its minimum and maximum kept), then all blocks of the family are shifted
    and scaled together onto ``[1, κ]`` by :func:`scale_to_condition_number`.

    Args:
        family: a family in the spectra file.
        block_size: eigenvalues per block ``d``.
        kappa: global condition number.
        path: spectra file (default :data:`SPECTRA_FILE`).

    Returns:
        ``(block_names, eigenvalues [L, d])``.
    """
    _check_sizes(1, block_size)
    _, families = load_block_spectra(path)
    if family not in families:
        raise ValueError(f"unknown spectra family {family!r}; the file has {sorted(families)}")
    names = list(families[family])
    raw = np.stack([_quantiles(families[family][n], block_size) for n in names])
    return names, scale_to_condition_number(raw, kappa)


def model_spectra_table(*, block_size: int = 100, kappa: float = PAPER_KAPPA, path=None):
    """The measured blocks of Cases 1–2, before and after the common map onto ``[1, κ]``.

    Args:
        block_size: eigenvalues per block ``d`` (quantiles of each measured spectrum).
        kappa: global condition number.
        path: spectra file (default :data:`SPECTRA_FILE`).

    Returns:
        A DataFrame with one row per (case, block): ``case``, ``block``, ``dim`` (measured
        eigenvalues), ``lambda_min``, ``lambda_max``, ``negative`` (share of eigenvalues
        below ``−1e-12 · max|λ|``), ``abs_max`` (largest |λ|), and after the map
        ``scaled_min``, ``scaled_max`` and ``block_kappa``.
    """
    import pandas as pd

    _, families = load_block_spectra(path)
    rows = []
    for case, family in CASE_FAMILIES.items():
        names, scaled = model_block_spectra(family, block_size=block_size, kappa=kappa, path=path)
        for name, ev, sc in zip(names, (families[family][n] for n in names), scaled):
            top = float(np.abs(ev).max())
            rows.append({"case": case, "block": name, "dim": int(ev.size), "lambda_min": float(ev.min()),
                         "lambda_max": float(ev.max()), "negative": float(np.mean(ev < -1e-12 * top)),
                         "abs_max": top, "scaled_min": float(sc.min()), "scaled_max": float(sc.max()),
                         "block_kappa": float(sc.max() / sc.min())})
    return pd.DataFrame(rows)


def case_spectra(
    family: str = "model", heterogeneity: float = 1.0, *, block_size: int = 100,
    kappa: float = PAPER_KAPPA, num_blocks: int = 4, block_kappa: float = 20.0, path=None,
) -> tuple[list[str], np.ndarray]:
    """Block spectra at a degree of heterogeneity between a family's two cases.

    Args:
        family: ``"model"`` (t = 0 is Case 2, t = 1 is Case 1) or ``"synthetic"``
            (t = 0 is Case 4, t = 1 is Case 3).
        heterogeneity: t in ``[0, 1]``.
        block_size: eigenvalues per block ``d``.
        kappa: global condition number (exact in the result).
        num_blocks: number of blocks for ``"synthetic"`` (the model files fix it).
        block_kappa: per-block condition number of Case 3 (capped at ``kappa``).
        path: spectra file for ``"model"``.

    Returns:
        ``(block_names, eigenvalues [L, d])``, minimum 1 and maximum ``kappa``.
    """
    if family == "model":
        names, het = model_block_spectra(CASE_FAMILIES[1], block_size=block_size, kappa=kappa, path=path)
        names0, hom = model_block_spectra(CASE_FAMILIES[2], block_size=block_size, kappa=kappa, path=path)
        if hom.shape != het.shape:
            raise ValueError(f"the two families need equal block counts, got {hom.shape} and {het.shape}")
        if heterogeneity == 1.0:
            return names, het
        if heterogeneity == 0.0:
            return names0, hom
    elif family == "synthetic":
        # a block cannot be worse conditioned than the whole (small κ on a slider)
        het = synthetic_block_spectra(True, num_blocks=num_blocks, block_size=block_size,
                                      kappa=kappa, block_kappa=min(block_kappa, kappa))
        hom = synthetic_block_spectra(False, num_blocks=num_blocks, block_size=block_size, kappa=kappa)
        names = [f"block {i + 1}" for i in range(num_blocks)]
    else:
        raise ValueError(f"family must be 'model' or 'synthetic', got {family!r}")
    return names, scale_to_condition_number(interpolate_spectra(hom, het, heterogeneity), kappa)


# --------------------------------------------------------------------------- problem
def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed ``[d, d]`` orthogonal matrix (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@dataclass(frozen=True)
class QuadraticProblem:
    """``f(w) = ½ wᵀHw − bᵀw`` with block-diagonal ``H``; vectors are flat ``[n]``, ``n = L d``.

    Attributes:
        eigenvalues: ``[L, d]`` eigenvalues of each block, ascending.
        eigenvectors: ``[L, d, d]`` orthogonal ``Q_l`` (columns are eigenvectors).
        b: ``[n]`` linear term.
        w0: ``[n]`` starting point of every optimiser.
        block_names: ``L`` names.
        title: a label for plots.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    b: np.ndarray
    w0: np.ndarray
    block_names: tuple[str, ...]
    title: str = ""
    blocks: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        """Check shapes and build the dense blocks ``H_l = Q_l Λ_l Q_lᵀ`` (symmetrised)."""
        L, d = self.eigenvalues.shape
        if self.eigenvectors.shape != (L, d, d) or self.b.shape != (L * d,) or self.w0.shape != (L * d,):
            raise ValueError(
                f"inconsistent shapes: eigenvalues {self.eigenvalues.shape}, eigenvectors "
                f"{self.eigenvectors.shape}, b {self.b.shape}, w0 {self.w0.shape}"
            )
        q, lam = self.eigenvectors, self.eigenvalues
        blocks = np.einsum("lij,lj,lkj->lik", q, lam, q)
        object.__setattr__(self, "blocks", 0.5 * (blocks + blocks.transpose(0, 2, 1)))

    @property
    def num_blocks(self) -> int:
        """Number of blocks ``L``."""
        return self.eigenvalues.shape[0]

    @property
    def block_size(self) -> int:
        """Size ``d`` of every block."""
        return self.eigenvalues.shape[1]

    @property
    def dim(self) -> int:
        """Number of parameters ``n = L d``."""
        return self.eigenvalues.size

    @property
    def kappa(self) -> float:
        """Global condition number ``λ_max(H) / λ_min(H)``."""
        return float(self.eigenvalues.max() / self.eigenvalues.min())

    @property
    def block_kappas(self) -> np.ndarray:
        """``[L]`` condition numbers of the blocks."""
        return self.eigenvalues.max(axis=1) / self.eigenvalues.min(axis=1)

    def hessian(self) -> np.ndarray:
        """The dense ``[n, n]`` Hessian (for checks; the optimisers use the blocks)."""
        from scipy.linalg import block_diag

        return block_diag(*self.blocks)

    def grad(self, w) -> np.ndarray:
        """``∇f(w) = Hw − b``.

        Args:
            w: ``[n]`` or ``[k, n]``.

        Returns:
            Same shape as ``w``.
        """
        w = np.asarray(w, dtype=np.float64)
        if w.shape[-1] != self.dim or w.ndim > 2:
            raise ValueError(f"w must be [n] or [k, n] with n = {self.dim}, got {w.shape}")
        wb = w.reshape(-1, self.num_blocks, self.block_size)
        g = np.einsum("lij,klj->kli", self.blocks, wb).reshape(-1, self.dim) - self.b
        return g.reshape(w.shape)

    def solution(self) -> np.ndarray:
        """The minimiser ``w* = H⁻¹b``, ``[n]``."""
        bb = self.b.reshape(self.num_blocks, self.block_size)
        coef = np.einsum("lji,lj->li", self.eigenvectors, bb) / self.eigenvalues
        return np.einsum("lij,lj->li", self.eigenvectors, coef).reshape(-1)


def block_quadratic(
    eigenvalues, *, seed: int = 0, block_names: Sequence[str] | None = None, title: str = "",
) -> QuadraticProblem:
    """A block-diagonal quadratic with the given block spectra and random rotations.

    ``Q_l`` are Haar-random orthogonal matrices; ``b`` and ``w0`` are standard Gaussian
    (the paper's ``b`` and starting point are unverified). Everything random comes from
    ``seed``.

    Args:
        eigenvalues: ``[L, d]`` positive eigenvalues (block ``l`` is row ``l``).
        seed: seed of the rotations, ``b`` and ``w0``.
        block_names: ``L`` names (default ``block 1`` …).
        title: a label for plots.

    Returns:
        The :class:`QuadraticProblem`.
    """
    ev = np.sort(np.asarray(eigenvalues, dtype=np.float64), axis=-1)
    if ev.ndim != 2:
        raise ValueError(f"eigenvalues must be [L, d] (one row per block), got shape {ev.shape}")
    _check_sizes(ev.shape[0], ev.shape[1])
    if not np.isfinite(ev).all() or (ev <= 0).any():
        raise ValueError("eigenvalues must be finite and positive (H positive definite)")
    L, d = ev.shape
    rng = np.random.default_rng(seed)
    q = np.stack([random_orthogonal(d, rng) for _ in range(L)])
    b = rng.standard_normal(L * d)
    w0 = rng.standard_normal(L * d)
    names = tuple(block_names) if block_names is not None else tuple(f"block {i + 1}" for i in range(L))
    if len(names) != L:
        raise ValueError(f"got {len(names)} block names for {L} blocks")
    return QuadraticProblem(ev, q, b, w0, names, title)


def make_problem(
    family: str = "synthetic", heterogeneity: float = 1.0, *, kappa: float = PAPER_KAPPA,
    block_size: int = 100, num_blocks: int = 4, block_kappa: float = 20.0, seed: int = 0,
    path=None, title: str | None = None,
) -> QuadraticProblem:
    """A quadratic of a family at a degree of heterogeneity (see :func:`case_spectra`).

    Args:
        family: ``"model"`` (Cases 2 → 1) or ``"synthetic"`` (Cases 4 → 3).
        heterogeneity: t in ``[0, 1]``.
        kappa: global condition number (the paper: 5000).
        block_size: ``d``.
        num_blocks: ``L`` for ``"synthetic"``.
        block_kappa: Case 3's per-block condition number.
        seed: seed of rotations, ``b`` and ``w0``.
        path: spectra file for ``"model"``.
        title: plot label (default: family and t).

    Returns:
        The :class:`QuadraticProblem`.
    """
    names, ev = case_spectra(family, heterogeneity, block_size=block_size, kappa=kappa,
                             num_blocks=num_blocks, block_kappa=block_kappa, path=path)
    return block_quadratic(ev, seed=seed, block_names=names,
                           title=title or f"{family}, heterogeneity {heterogeneity:g}")


def make_case(case: int, **kwargs) -> QuadraticProblem:
    """The paper's Case 1, 2, 3 or 4 (keyword arguments as :func:`make_problem`)."""
    if case not in CASES:
        raise ValueError(f"case must be one of {sorted(CASES)}, got {case!r}")
    family, t, title = CASES[case]
    return make_problem(family, t, title=title, **kwargs)
