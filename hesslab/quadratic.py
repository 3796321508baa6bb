"""Block-diagonal quadratic problems (Zhang et al. 2024, Figures 8–9) and optimisers on them.

The problem is

    f(w) = ½ wᵀ H w − bᵀ w,    H = diag(H_1, …, H_L),    H_l = Q_l Λ_l Q_lᵀ,

with ``L`` blocks of equal size ``d`` (``n = L d`` parameters), a random orthogonal
``Q_l`` per block and eigenvalues ``Λ_l`` taken from one of four *cases*:

1. heterogeneous, "GPT-2-like": every block has its own spectrum (shape and scale);
2. homogeneous, "CNN-like": the blocks share one spectrum shape and scale;
3. heterogeneous, synthetic: block ``l`` lies in its own narrow interval of ``[1, κ]``;
4. homogeneous, synthetic: every block spans ``[1, κ]`` with the same distribution.

In every case the pooled eigenvalues are shifted and scaled (one affine map for all
blocks, so relative ranges are kept) to ``[1, κ]``: ``κ(H) = κ`` exactly (the paper uses
κ = 5000). A ``heterogeneity`` t ∈ [0, 1] interpolates the block spectra between the
homogeneous (t = 0) and the heterogeneous (t = 1) case of a family (``"model"``: Cases 2
→ 1, ``"synthetic"``: Cases 4 → 3), quantile by quantile on a log axis.

Block spectra for Cases 1 and 2 are read from ``data/quadratic_block_spectra.json``.
The shipped file holds **stand-in** spectra made by :func:`standin_block_spectra` (a
bulk plus a few outliers per block, shaped after the paper's GPT-2 and CNN blocks), not
spectra measured on a model; any file of the same format (e.g. exact block spectra of
the book's small models) can replace it.

Optimisers (each returns a :class:`Run` with the history of ‖∇f‖ per iteration):
:func:`gd` (optimal step 2/(L+μ), a fixed step or the best of a grid), :func:`blockwise_gd`
(step 1/λ_max(H_l) per block), :func:`adam` (bias-corrected PyTorch Adam, or Adam
without bias correction initialised at the first gradient; β₁ = 0, β₂ = 1 without bias
correction is GD preconditioned by diag(|g₀|)⁻¹), :func:`preconditioned_gd` and
:func:`sign_descent`. Learning-rate grids are run side by side (vectorised over the
grid) and stop as soon as one rate reaches the tolerance, so the best rate's iteration
count is exact. :func:`theory_bounds` evaluates the complexity bounds of the paper's
Section 4 (constants unverified) and the exact linear-algebra bounds for this instance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    # problems
    "CASES", "PAPER_KAPPA", "QuadraticProblem", "make_case", "make_problem", "block_quadratic",
    "case_spectra", "synthetic_block_spectra", "model_block_spectra", "interpolate_spectra",
    "scale_to_condition_number", "random_orthogonal",
    # block spectra files
    "SPECTRA_FILE", "load_block_spectra", "save_block_spectra", "standin_block_spectra",
    "write_spectra_file",
    # optimisers
    "Run", "gd", "heavy_ball", "blockwise_gd", "preconditioned_gd", "adam", "sign_descent", "compare",
    "DEFAULT_TOL", "GD_FACTORS", "MOMENTUM_FACTORS", "ADAM_LRS", "SIGN_LRS",
    # theory and the measured claim
    "theory_bounds", "iteration_ratio", "measured_ratios", "format_ratio", "heterogeneity_sweep",
    "interactive_runs",
]

#: The paper's condition number for every case.
PAPER_KAPPA = 5000.0

#: Default relative tolerance: iterations until ‖∇f(w_k)‖ ≤ tol · ‖∇f(w_0)‖.
DEFAULT_TOL = 1e-6

#: Shipped block spectra (stand-ins until measured spectra replace them).
SPECTRA_FILE = Path(__file__).resolve().parent.parent / "data" / "quadratic_block_spectra.json"

CASES = {
    1: ("model", 1.0, "Case 1: heterogeneous (GPT-2-like blocks)"),
    2: ("model", 0.0, "Case 2: homogeneous (CNN-like blocks)"),
    3: ("synthetic", 1.0, "Case 3: heterogeneous (synthetic)"),
    4: ("synthetic", 0.0, "Case 4: homogeneous (synthetic)"),
}
"""case number -> (family, heterogeneity, title)."""

#: Learning-rate grids searched by :func:`compare` (log-spaced; see the chapter).
#: GD: multiples 0.05, 0.1, …, 1 of 2/(λ_max + λ_min) (a step ≥ 2/λ_max diverges, so larger
#: multiples are pointless; each grid point costs one bisection in closed form).
GD_FACTORS = tuple(round(0.05 * k, 2) for k in range(1, 21))
#: Heavy ball (β = 0.9): multiples of 1/λ_max (stable below 2(1 + β)/λ_max = 3.8/λ_max).
MOMENTUM_FACTORS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 3.5)
#: Adam (all variants): half-decades from 1e-3 to 10^0.5.
ADAM_LRS = tuple(float(x) for x in np.logspace(-3, 0.5, 8))
#: Scaled sign descent: half-decades from 1e-4 to 1e-1.
SIGN_LRS = tuple(float(x) for x in np.logspace(-4, -1, 7))


# --------------------------------------------------------------------------- spectra
def scale_to_condition_number(eigenvalues, kappa: float = PAPER_KAPPA) -> np.ndarray:
    """Shift and scale eigenvalues (one affine map for all) onto ``[1, kappa]``.

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
    sampling are unverified; these follow the SPEC's description (narrow own interval
    vs one shared wide distribution).

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


# Stand-in block spectra for Cases 1 and 2: a bulk (log-normal quantiles) plus a few
# outliers, on a raw eigenvalue scale. Parameters: (log10 median of the bulk, log10
# spread of the bulk, number of outliers, log10 of the largest outlier). GPT-2-like
# blocks differ by orders of magnitude in scale and in shape (embedding: tiny bulk with
# a few large outliers; Q/K: narrow and small; V/MLP: wider and larger), as in the
# paper's Figures 3 and 9; CNN-like blocks share one wide shape, as for ResNet18.
_STANDIN_SHAPES = {
    "gpt2-like": {
        "wte": (-3.0, 0.25, 6, -2.0),
        "h.0.attn.wq": (-1.8, 0.15, 3, -1.3),
        "h.0.attn.wv": (-0.9, 0.2, 4, -0.3),
        "h.0.mlp.c_fc": (0.3, 0.12, 2, 0.7),
    },
    "cnn-like": {
        "conv1.weight": (-1.2, 0.9, 5, 0.7),
        "layer1.0.conv1.weight": (-1.25, 0.85, 5, 0.65),
        "layer2.0.conv1.weight": (-1.15, 0.9, 4, 0.7),
        "fc.weight": (-1.2, 0.95, 5, 0.6),
    },
}


def standin_block_spectra(size: int = 500, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """The stand-in block spectra shipped in ``data/quadratic_block_spectra.json``.

    Each block: ``size − k`` log-normal bulk eigenvalues (random draws) and ``k``
    outliers log-evenly spaced from the bulk's top to the block's largest outlier
    (:data:`_STANDIN_SHAPES`). These are made up to look like the paper's block spectra,
    not measured; the chapter says so.

    Args:
        size: eigenvalues per block.
        seed: seed of the bulk draws.

    Returns:
        ``{"gpt2-like": {block: eigenvalues}, "cnn-like": {...}}``, eigenvalues sorted.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[float]]] = {}
    for family, blocks in _STANDIN_SHAPES.items():
        out[family] = {}
        for name, (mid, spread, k, top) in blocks.items():
            bulk = 10.0 ** (mid + spread * rng.standard_normal(size - k))
            outliers = np.logspace(math.log10(bulk.max()), top, k + 1)[1:]
            out[family][name] = sorted(float(x) for x in np.concatenate([bulk, outliers]))
    return out


def save_block_spectra(families, provenance: dict, path=SPECTRA_FILE) -> Path:
    """Write block spectra in the format :func:`load_block_spectra` reads.

    Use it to replace the stand-ins with measured spectra, e.g. the exact block
    eigenvalues of a small GPT-2 and a small CNN (``hesslab.exact_block_eigenvalues``):
    Case 1 reads family ``"gpt2-like"``, Case 2 family ``"cnn-like"``; both need the same
    number of blocks (the paper uses 4).

    Args:
        families: ``{family: {block name: eigenvalues [m]}}``.
        provenance: how they were made (model, data, stage, code revision, ...).
        path: destination JSON file.

    Returns:
        The path written (atomically: temporary file, then rename).
    """
    path = Path(path)
    payload = {
        "provenance": dict(provenance),
        "families": {fam: {name: sorted(float(x) for x in np.asarray(ev).ravel()) for name, ev in blocks.items()}
                     for fam, blocks in families.items()},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)
    return path


def write_spectra_file(path=SPECTRA_FILE, size: int = 500, seed: int = 0) -> Path:
    """Write the stand-in spectra with their provenance (how to regenerate them).

    Args:
        path: destination JSON file.
        size: eigenvalues per block.
        seed: seed of :func:`standin_block_spectra`.

    Returns:
        The path written.
    """
    provenance = {
        "kind": "stand-in",
        "description": (
            "Made-up block spectra shaped like the paper's GPT-2 blocks (heterogeneous "
            "scales and shapes) and ResNet18 blocks (one shared wide shape); NOT measured "
            "on any model. Replace with measured block spectra in the same format."
        ),
        "generator": f"hesslab.quadratic.write_spectra_file(size={size}, seed={seed})",
        "numpy": np.__version__,
    }
    return save_block_spectra(standin_block_spectra(size=size, seed=seed), provenance, path)


def load_block_spectra(path=None) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Read a block-spectra file.

    Args:
        path: JSON file with ``provenance`` and ``families`` (family → block → eigenvalues);
            default the shipped :data:`SPECTRA_FILE` (regenerated in memory by
            :func:`standin_block_spectra` when an installed copy has no ``data/``).

    Returns:
        ``(provenance, families)`` with eigenvalue arrays.
    """
    if path is None and not SPECTRA_FILE.exists():
        # a non-editable install has no data/ folder: the shipped file is the generator's output
        return ({"kind": "stand-in", "generator": "hesslab.quadratic.standin_block_spectra(size=500, seed=0)",
                 "description": "regenerated in memory (data/quadratic_block_spectra.json not found)"},
                {fam: {n: np.asarray(ev) for n, ev in blocks.items()}
                 for fam, blocks in standin_block_spectra(size=500, seed=0).items()})
    data = json.loads(Path(path or SPECTRA_FILE).read_text())
    families = {
        fam: {name: np.asarray(ev, dtype=np.float64) for name, ev in blocks.items()}
        for fam, blocks in data["families"].items()
    }
    return data.get("provenance", {}), families


def model_block_spectra(
    family: str, *, block_size: int = 100, kappa: float = PAPER_KAPPA, path=None,
) -> tuple[list[str], np.ndarray]:
    """Block spectra of Case 1 (``"gpt2-like"``) or Case 2 (``"cnn-like"``).

    Each stored block spectrum is reduced to ``block_size`` quantiles (its minimum and
    maximum kept), then all blocks are shifted and scaled together to ``[1, κ]``.

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
        names, het = model_block_spectra("gpt2-like", block_size=block_size, kappa=kappa, path=path)
        names0, hom = model_block_spectra("cnn-like", block_size=block_size, kappa=kappa, path=path)
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


# --------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One optimiser run (the best of a grid, if one was searched).

    Attributes:
        name: optimiser label.
        grad_norms: ``[k + 1]`` ‖∇f(w_t)‖ for t = 0 … k (stops at the tolerance).
        lr: the learning rate used (the best of the grid).
        iterations: first t with ‖∇f(w_t)‖ ≤ tol·‖∇f(w_0)‖, or None if not reached.
        tol: the relative tolerance.
        max_iter: the iteration budget.
        search: ``{lr: iterations or None}`` over the grid (empty without a search);
            rates still running when the best one stopped are None.
        w: final iterate ``[n]`` (None for closed-form runs).
    """

    name: str
    grad_norms: np.ndarray
    lr: float
    iterations: int | None
    tol: float
    max_iter: int
    search: dict = field(default_factory=dict)
    w: np.ndarray | None = None

    @property
    def converged(self) -> bool:
        """Whether the tolerance was reached within the budget."""
        return self.iterations is not None

    @property
    def relative_grad_norms(self) -> np.ndarray:
        """``[k + 1]`` ‖∇f(w_t)‖ / ‖∇f(w_0)‖."""
        return self.grad_norms / self.grad_norms[0]


def _as_grid(lr) -> tuple[np.ndarray, bool]:
    grid = np.atleast_1d(np.asarray(lr, dtype=np.float64))
    if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all() or (grid <= 0).any():
        raise ValueError(f"learning rates must be positive finite numbers, got {lr!r}")
    return grid, np.ndim(lr) > 0


def _check_budget(tol: float, max_iter: int) -> None:
    if not 0 < tol < 1:
        raise ValueError(f"tol is relative to ||g_0|| and must lie in (0, 1), got {tol}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")


def _iterate(problem: QuadraticProblem, name: str, lrs, step, tol: float, max_iter: int,
             diverge: float = 1e8, check_every: int = 64) -> Run:
    """Run ``w ← w − step(g, t, lr)`` for every rate of a grid side by side.

    ``step(g, t, lr)`` gets ``g`` ``[L, d, B]`` (B = grid size), the iteration ``t`` (1, 2,
    …) and ``lr`` ``[B]``, and returns the update ``[L, d, B]``. Stops when any rate
    reaches ``tol`` (the best rate's iteration count is then exact), or all diverged
    (‖g‖ > diverge·‖g₀‖, checked every ``check_every`` iterations), or after ``max_iter``.
    """
    _check_budget(tol, max_iter)
    grid, searched = lrs
    L, d, B = problem.num_blocks, problem.block_size, grid.size
    H = problem.blocks
    b = problem.b.reshape(L, d, 1)
    w = np.repeat(problem.w0.reshape(L, d, 1), B, axis=2)
    g = H @ w - b
    sq = np.empty((max_iter + 1, B))
    sq[0] = np.einsum("ldb,ldb->b", g, g)
    target = tol**2 * sq[0]
    hit, t = None, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, max_iter + 1):
            w -= step(g, t, grid)
            np.matmul(H, w, out=g)
            g -= b
            sq[t] = np.einsum("ldb,ldb->b", g, g)
            if (sq[t] <= target).any():
                hit = t
                break
            if t % check_every == 0 and not (sq[t] <= diverge**2 * sq[0]).any():
                break  # every rate diverged (or is NaN)
    hist = np.sqrt(sq[: t + 1])  # [k + 1, B]
    if hit is not None:
        best = int(np.argmin(np.where(sq[t] <= target, sq[t], np.inf)))
    else:
        finite = np.where(np.isfinite(hist), hist, np.inf)
        final = np.where(finite[-1] <= diverge * hist[0], finite.min(axis=0), np.inf)
        best = int(np.argmin(final)) if np.isfinite(final).any() else 0
    search = {float(x): (hit if sq[t, i] <= target[i] else None) for i, x in enumerate(grid)} if searched else {}
    return Run(name, hist[:, best].copy(), float(grid[best]), hit, tol, max_iter, search,
               w[:, :, best].reshape(-1).copy())


def _eigen_coordinates2(problem: QuadraticProblem) -> np.ndarray:
    """``[n]`` squared coordinates of ∇f(w_0) in the eigenbasis of H (block by block)."""
    L, d = problem.num_blocks, problem.block_size
    g0 = problem.grad(problem.w0).reshape(L, d)
    return np.einsum("lji,lj->li", problem.eigenvectors, g0).reshape(-1) ** 2


def _closed_form_iterations(c2: np.ndarray, log_r: np.ndarray, target2: float, max_iter: int) -> int | None:
    """First t ≤ max_iter with S(t) = Σ c2 r^(2t) ≤ target2 (bisection; S is non-increasing for |r| ≤ 1)."""
    with np.errstate(over="ignore", invalid="ignore"):
        def s(t):
            return float(c2 @ np.exp(2.0 * t * log_r))

        if s(0) <= target2:
            return 0
        if not s(max_iter) <= target2:
            return None
        lo, hi = 0, max_iter
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if s(mid) <= target2 else (mid, hi)
        return hi


def _closed_form(problem: QuadraticProblem, name: str, rates: np.ndarray, lr: float, tol: float,
                 max_iter: int, search=None, chunk: int = 2048, c2=None) -> Run:
    """‖g_t‖ for a linear method that is diagonal in the eigenbasis: ĝ_t = r^t ĝ_0.

    With every |r| ≤ 1 the iteration count comes from a bisection on t and the history
    is evaluated once up to it; otherwise (some component grows) t is scanned in chunks
    until the tolerance, divergence or ``max_iter``.
    """
    _check_budget(tol, max_iter)
    c2 = _eigen_coordinates2(problem) if c2 is None else c2
    log_r = np.log(np.abs(rates.reshape(-1)) + 1e-300)
    target2 = (tol**2) * c2.sum()
    out, t0 = [], 0
    stop = max_iter
    if (log_r <= 0).all():
        hit = _closed_form_iterations(c2, log_r, target2, max_iter)
        stop = max_iter if hit is None else hit
    with np.errstate(over="ignore", invalid="ignore"):
        while t0 <= stop:
            ts = np.arange(t0, min(t0 + chunk, stop + 1))
            sq = np.exp(2.0 * np.outer(ts, log_r)) @ c2
            below = np.nonzero(sq <= target2)[0]
            if below.size:
                out.append(sq[: below[0] + 1])
                break
            out.append(sq)
            if not np.isfinite(sq[-1]) or sq[-1] > 1e16 * c2.sum():
                break  # diverged
            t0 += chunk
    sq = np.concatenate(out)
    iterations = int(sq.size - 1) if sq[-1] <= target2 else None
    return Run(name, np.sqrt(sq), float(lr), iterations, tol, max_iter, search or {})


def gd(problem: QuadraticProblem, lr="optimal", *, tol: float = DEFAULT_TOL, max_iter: int = 100_000,
       method: str = "closed") -> Run:
    """Gradient descent ``w ← w − η ∇f(w)`` with one fixed step for all parameters.

    Args:
        problem: the quadratic.
        lr: ``"optimal"`` (η = 2/(λ_max + λ_min): the worst-case optimal fixed step, rate
            (κ−1)/(κ+1) per iteration for ‖g‖), a step, or a sequence of steps (the one
            needing fewest iterations is kept).
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.
        method: ``"closed"`` (ĝ_t = (1 − ηλ)^t ĝ_0 in the eigenbasis: exact and fast) or
            ``"iterate"`` (the actual recursion).

    Returns:
        The :class:`Run`.
    """
    lam = problem.eigenvalues
    if isinstance(lr, str):
        if lr != "optimal":
            raise ValueError(f"lr must be 'optimal', a number or a sequence, got {lr!r}")
        lr = 2.0 / (lam.max() + lam.min())
    grid, searched = _as_grid(lr)
    if method == "iterate":
        return _iterate(problem, "GD", (grid, searched), lambda g, t, eta: eta * g, tol, max_iter)
    if method != "closed":
        raise ValueError(f"method must be 'closed' or 'iterate', got {method!r}")
    c2 = _eigen_coordinates2(problem)
    target2 = tol**2 * c2.sum()
    counts = []
    for eta in grid:
        r = np.abs(1.0 - eta * lam.reshape(-1))
        counts.append(_closed_form_iterations(c2, np.log(r + 1e-300), target2, max_iter) if (r <= 1).all() else None)
    if any(c is not None for c in counts):
        best = min((c, i) for i, c in enumerate(counts) if c is not None)[1]
    else:  # none converged: keep the rate with the smallest ‖g‖ at max_iter (a stable one if any)
        final = [(np.abs(1.0 - eta * lam) ** (2 * max_iter)).reshape(-1) @ c2 for eta in grid]
        best = int(np.nanargmin(final))
    run = _closed_form(problem, "GD", 1.0 - grid[best] * lam, grid[best], tol, max_iter, c2=c2)
    if searched:
        run.search = {float(eta): c for eta, c in zip(grid, counts)}
    return run


def blockwise_gd(problem: QuadraticProblem, step: str = "max", *, tol: float = DEFAULT_TOL,
                 max_iter: int = 100_000) -> Run:
    """GD with one step per block: η_l = 1/λ_max(H_l) (``"max"``) or 2/(λ_max + λ_min) (``"optimal"``).

    A block-diagonal preconditioner that knows each block's scale: ‖g‖ contracts per
    block by ``1 − 1/κ_l`` (``"max"``), so it needs about ``max_l κ_l · ln(1/tol)``
    iterations whatever the global κ. Computed in closed form (exact).

    Args:
        problem: the quadratic.
        step: ``"max"`` or ``"optimal"``.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.

    Returns:
        The :class:`Run` (``lr`` is NaN: the steps differ per block).
    """
    lam = problem.eigenvalues
    if step == "max":
        eta = 1.0 / lam.max(axis=1, keepdims=True)
    elif step == "optimal":
        eta = 2.0 / (lam.max(axis=1, keepdims=True) + lam.min(axis=1, keepdims=True))
    else:
        raise ValueError(f"step must be 'max' or 'optimal', got {step!r}")
    return _closed_form(problem, "blockwise GD", 1.0 - eta * lam, float("nan"), tol, max_iter)


def heavy_ball(problem: QuadraticProblem, lr, *, momentum: float = 0.9, tol: float = DEFAULT_TOL,
               max_iter: int = 100_000) -> Run:
    """GD with heavy-ball momentum, in PyTorch's SGD form: ``u ← βu + g``, ``w ← w − ηu``.

    The fair baseline for Adam with β₁ = 0.9: on a quadratic, tuned momentum alone
    turns GD's κ into about √κ, whatever the block structure, so it separates what
    Adam gains from momentum from what it gains from per-coordinate step sizes. The
    paper's "SGD" in its training runs is SGD with momentum.

    Args:
        problem: the quadratic.
        lr: a step or a sequence of steps (best kept).
        momentum: β in ``[0, 1)``.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.

    Returns:
        The :class:`Run`.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
    state: dict = {}

    def step(g, t, eta):
        if t == 1:
            state["u"] = np.zeros_like(g)
        u = state["u"]
        u *= momentum
        u += g
        return eta * u

    return _iterate(problem, f"GD + momentum {momentum:g}", _as_grid(lr), step, tol, max_iter)


def preconditioned_gd(problem: QuadraticProblem, diag, lr, *, tol: float = DEFAULT_TOL,
                      max_iter: int = 100_000) -> Run:
    """``w ← w − η D ∇f(w)`` with a fixed diagonal ``D`` (iterated).

    Args:
        problem: the quadratic.
        diag: ``[n]`` positive diagonal of ``D``.
        lr: a step or a sequence of steps (best kept).
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.

    Returns:
        The :class:`Run`.
    """
    D = np.asarray(diag, dtype=np.float64)
    if D.shape != (problem.dim,) or (D <= 0).any():
        raise ValueError(f"diag must be a positive [n] vector with n = {problem.dim}, got shape {D.shape}")
    D = D.reshape(problem.num_blocks, problem.block_size, 1)
    return _iterate(problem, "preconditioned GD", _as_grid(lr), lambda g, t, eta: eta * (D * g), tol, max_iter)


def adam(problem: QuadraticProblem, lr=ADAM_LRS, *, beta1: float = 0.9, beta2: float = 0.999,
         eps: float = 1e-8, bias_correction: bool = True, tol: float = DEFAULT_TOL,
         max_iter: int = 100_000, name: str | None = None) -> Run:
    """Adam with full-batch gradients (the best rate of a grid, if a sequence is given).

    With ``bias_correction=True`` this is PyTorch's ``torch.optim.Adam`` (m₀ = v₀ = 0,
    m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ), update η m̂/(√v̂ + ε)). With ``bias_correction=False``
    the moments start at the first gradient, m₀ = g₀ and v₀ = g₀² (the paper's "Adam
    with no bias correction", Algorithm 3 as recalled, unverified), and are used as they
    are. Then β₁ = 0, β₂ = 1 gives ``w ← w − η g/(|g₀| + ε)``: GD preconditioned by
    ``diag(|g₀|)⁻¹``, the variant the paper's theory analyses.

    Args:
        problem: the quadratic.
        lr: a rate or a sequence of rates.
        beta1: first-moment decay in ``[0, 1)``.
        beta2: second-moment decay in ``[0, 1]``.
        eps: added to √v̂.
        bias_correction: see above.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.
        name: label (default from the settings).

    Returns:
        The :class:`Run`.
    """
    if not (0 <= beta1 < 1 and 0 <= beta2 <= 1):
        raise ValueError(f"need 0 <= beta1 < 1 and 0 <= beta2 <= 1, got {beta1}, {beta2}")
    if beta2 == 1 and bias_correction:
        raise ValueError("beta2 = 1 with bias correction divides by zero; use bias_correction=False")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if name is None:
        name = "Adam" if bias_correction else "Adam (no bias corr.)"
        if (beta1, beta2) != (0.9, 0.999):
            name += f" β=({beta1:g}, {beta2:g})"
    state: dict = {}

    def step(g, t, eta):
        if t == 1 and not bias_correction:
            # the moments start at g₀ (no bias to correct); t = 1 uses them as they are
            state["m"], state["v"] = g.copy(), g * g
        elif t == 1:
            state["m"], state["v"] = (1.0 - beta1) * g, (1.0 - beta2) * (g * g)
        else:
            m, v = state["m"], state["v"]
            m *= beta1
            m += (1.0 - beta1) * g
            if beta2 < 1:
                v *= beta2
                v += (1.0 - beta2) * (g * g)
        # PyTorch's form: η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε), with the scalars folded
        c1, c2 = (1.0 - beta1**t, math.sqrt(1.0 - beta2**t)) if bias_correction else (1.0, 1.0)
        denom = np.sqrt(state["v"])
        denom += eps * c2
        return (eta * (c2 / c1)) * (state["m"] / denom)

    return _iterate(problem, name, _as_grid(lr), step, tol, max_iter)


def sign_descent(problem: QuadraticProblem, lr=SIGN_LRS, *, tol: float = DEFAULT_TOL,
                 max_iter: int = 100_000) -> Run:
    """Sign descent scaled by the mean absolute gradient: ``w ← w − η (‖g‖₁/n) sign(g)``.

    Plain sign descent with a constant step cannot converge (its steps never shrink);
    scaling by ‖g‖₁/n makes it ℓ∞-steepest descent (the step of the ℓ∞-norm dual),
    which converges linearly at a constant η. Our choice; the paper plots Adam, not
    sign descent.

    Args:
        problem: the quadratic.
        lr: a rate or a sequence of rates.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.

    Returns:
        The :class:`Run`.
    """
    n = problem.dim

    def step(g, t, eta):
        return eta * (np.abs(g).sum(axis=(0, 1)) / n) * np.sign(g)

    return _iterate(problem, "sign descent", _as_grid(lr), step, tol, max_iter)


def compare(problem: QuadraticProblem, *, tol: float = DEFAULT_TOL, max_iter: int = 100_000,
            methods: Sequence[str] = ("GD", "GD + momentum", "Adam", "Adam (no bias corr.)",
                                      "Adam β=(0, 1)", "sign descent", "blockwise GD"),
            cap_at_gd: bool = True) -> dict[str, Run]:
    """The book's optimiser set on one problem, learning rates tuned on fixed grids.

    GD: the best of :data:`GD_FACTORS` × 2/(λ_max + λ_min); GD + momentum (β = 0.9): the
    best of :data:`MOMENTUM_FACTORS` × 1/λ_max; the Adam variants: the best of
    :data:`ADAM_LRS`; sign descent: :data:`SIGN_LRS`; blockwise GD: 1/λ_max(H_l).
    "Adam" is bias-corrected Adam (0.9, 0.999); "Adam β=(0, 1)" is Adam without bias
    correction with β₁ = 0, β₂ = 1 (GD preconditioned by diag(|g₀|)⁻¹).

    Args:
        problem: the quadratic.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget per run.
        methods: which of the above to run (GD is always run first when capping).
        cap_at_gd: give the iterated methods a budget of GD's iteration count (when GD
            converged): a method that needs more is slower than GD, which is all the
            comparison needs, and non-converging runs then cost no more than GD's count.

    Returns:
        ``{name: Run}`` in the order of ``methods``.
    """
    lam = problem.eigenvalues
    eta = 2.0 / (lam.max() + lam.min())
    makers = {
        "GD": lambda n: gd(problem, [f * eta for f in GD_FACTORS], tol=tol, max_iter=n),
        "GD + momentum": lambda n: heavy_ball(problem, [f / lam.max() for f in MOMENTUM_FACTORS],
                                              tol=tol, max_iter=n),
        "Adam": lambda n: adam(problem, ADAM_LRS, tol=tol, max_iter=n),
        "Adam (no bias corr.)": lambda n: adam(problem, ADAM_LRS, bias_correction=False, tol=tol,
                                               max_iter=n),
        "Adam β=(0, 1)": lambda n: adam(problem, ADAM_LRS, beta1=0.0, beta2=1.0, bias_correction=False,
                                        eps=0.0, tol=tol, max_iter=n, name="Adam β=(0, 1)"),
        "sign descent": lambda n: sign_descent(problem, SIGN_LRS, tol=tol, max_iter=n),
        "blockwise GD": lambda n: blockwise_gd(problem, tol=tol, max_iter=n),
    }
    unknown = set(methods) - set(makers)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {list(makers)}")
    runs: dict[str, Run] = {}
    budget = max_iter
    if cap_at_gd:
        runs["GD"] = makers["GD"](max_iter)
        if runs["GD"].converged:
            budget = max(1, runs["GD"].iterations)
    for m in methods:
        if m not in runs:
            runs[m] = makers[m](max_iter if m == "blockwise GD" else budget)
    return {m: runs[m] for m in methods}


# --------------------------------------------------------------------------- theory
def _iterations_for_rate(rate: float, tol: float, prefactor: float = 1.0) -> float:
    """Smallest t with prefactor · rate^t ≤ tol (inf if rate ≥ 1)."""
    if rate >= 1:
        return math.inf
    if rate <= 0:
        return 1.0
    return max(0.0, math.ceil(math.log(tol / prefactor) / math.log(rate)))


def theory_bounds(problem: QuadraticProblem, tol: float = DEFAULT_TOL) -> dict:
    """Complexity bounds evaluated on one problem.

    * ``gd``: GD with η = 2/(λ_max+λ_min) has ‖g_t‖ ≤ ((κ−1)/(κ+1))ᵗ ‖g₀‖ exactly
      (g_t = (I − ηH)ᵗ g₀), so t ≥ ln(1/tol)/ln((κ+1)/(κ−1)) ≈ (κ/2) ln(1/tol)
      suffices, and a worst-case g₀ needs it: the paper's Θ(κ log 1/ε).
    * ``blockwise``: GD with η_l = 1/λ_max(H_l) contracts ‖g‖ by max_l (1 − 1/κ_l):
      ≈ max_l κ_l · ln(1/tol). The paper's Adam bound has this max_l κ_l form times an
      initialisation-dependent factor (its constants are unverified here).
    * ``adam_beta2_1``: Adam with β₁=0, β₂=1, no bias correction is GD preconditioned by
      D = diag(|g₀|)⁻¹; with its best fixed step, ‖g_t‖ ≤ √κ(D) ρ_Dᵗ ‖g₀‖ with
      ρ_D = (κ_D−1)/(κ_D+1), κ_D = κ(D^½ H D^½): this instance's exact bound.
    * ``momentum``: ln(1/tol)/ln((√κ+1)/(√κ−1)) ≈ (√κ/2) ln(1/tol), heavy ball's
      asymptotic rate with its optimal (β, η): a rate, not a bound for finite t.
    * ``paper_gd`` = κ ln(1/tol), ``paper_adam`` = max_l κ_l ln(1/tol): the orders of
      the paper's bounds with all constants set to 1 (for comparing the orders only).

    Args:
        problem: the quadratic.
        tol: relative gradient-norm tolerance.

    Returns:
        A dict with ``kappa``, ``block_kappas`` ``[L]``, ``max_block_kappa``,
        ``kappa_adam`` (κ_D) and the iteration bounds above (floats; inf if none).
    """
    _check_budget(tol, 1)
    kappa = problem.kappa
    kl = problem.block_kappas
    g0 = np.abs(problem.grad(problem.w0)).reshape(problem.num_blocks, problem.block_size)
    if (g0 == 0).any():
        kappa_d, cond_d = math.inf, math.inf
    else:
        s = 1.0 / np.sqrt(g0)
        ev = np.linalg.eigvalsh(s[:, :, None] * problem.blocks * s[:, None, :])
        kappa_d = float(ev.max() / ev.min())
        cond_d = float(g0.max() / g0.min())
    log_inv = math.log(1.0 / tol)
    return {
        "kappa": kappa,
        "block_kappas": kl,
        "max_block_kappa": float(kl.max()),
        "kappa_adam": kappa_d,
        "gd": _iterations_for_rate((kappa - 1) / (kappa + 1), tol),
        "blockwise": max(_iterations_for_rate(1 - 1 / k, tol) for k in kl),
        "momentum": _iterations_for_rate((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1), tol),
        "adam_beta2_1": _iterations_for_rate((kappa_d - 1) / (kappa_d + 1), tol, math.sqrt(cond_d)),
        "paper_gd": kappa * log_inv,
        "paper_adam": float(kl.max()) * log_inv,
    }


def iteration_ratio(slow: Run, fast: Run) -> tuple[float, str]:
    """``slow.iterations / fast.iterations`` and how to read it.

    Returns:
        ``(ratio, kind)``: kind ``"="`` when both converged; ``">="`` when only ``fast``
        did (ratio uses ``slow.max_iter``); ``"<="`` when only ``slow`` did (uses
        ``fast.max_iter``); ``"?"`` (NaN) when neither did.
    """
    if slow.converged and fast.converged:
        return slow.iterations / max(fast.iterations, 1), "="
    if fast.converged:
        return slow.max_iter / max(fast.iterations, 1), ">="
    if slow.converged:
        return slow.iterations / fast.max_iter, "<="
    return float("nan"), "?"


def measured_ratios(runs: dict[str, Run]) -> dict[str, tuple[float, str]]:
    """The chapter's measured claim on one problem: iteration ratios of :func:`compare` runs.

    Args:
        runs: ``{name: Run}`` with at least "GD" and "Adam" (others optional).

    Returns:
        ``{"GD/Adam": (ratio, kind), "GD+momentum/Adam": …, "GD/blockwise GD": …}`` for the
        pairs present (kind as in :func:`iteration_ratio`).
    """
    pairs = {"GD/Adam": ("GD", "Adam"), "GD+momentum/Adam": ("GD + momentum", "Adam"),
             "GD/blockwise GD": ("GD", "blockwise GD")}
    return {k: iteration_ratio(runs[a], runs[b]) for k, (a, b) in pairs.items() if a in runs and b in runs}


def format_ratio(ratio: tuple[float, str]) -> str:
    """``(62.3, "=")`` → ``"= 62"``, ``(3.1, ">=")`` → ``"≥ 3.1"``, ``(nan, "?")`` → ``"n/a"``."""
    value, kind = ratio
    if kind == "?":
        return "n/a"
    text = f"{value:.2g}" if value < 10 else f"{value:.0f}"
    return {"=": "= ", ">=": "≥ ", "<=": "≤ "}[kind] + text


def interactive_runs(kappa: float = PAPER_KAPPA, heterogeneity: float = 1.0, beta2: float = 0.999,
                     lr: float = 0.3, *, family: str = "model", block_size: int = 50,
                     tol: float = DEFAULT_TOL, max_iter: int = 3000, seed: int = 0) -> dict[str, Run]:
    """The slider view: GD (optimal step), blockwise GD and Adam at one (β₂, lr).

    Cheap enough to rerun on every slider move (closed-form GD, one Adam run).

    Args:
        kappa: global condition number.
        heterogeneity: t in ``[0, 1]`` (see :func:`case_spectra`).
        beta2: Adam's β₂ (β₁ = 0.9, bias-corrected; β₂ = 1 switches to Adam without
            bias correction, which allows it).
        lr: Adam's learning rate.
        family: ``"model"`` or ``"synthetic"``.
        block_size: ``d``.
        tol: relative gradient-norm tolerance.
        max_iter: iterations shown.
        seed: seed of the problem.

    Returns:
        ``{"GD": Run, "blockwise GD": Run, "Adam": Run}``.
    """
    problem = make_problem(family, heterogeneity, kappa=kappa, block_size=block_size, seed=seed)
    return {
        "GD": gd(problem, "optimal", tol=tol, max_iter=max_iter),
        "blockwise GD": blockwise_gd(problem, tol=tol, max_iter=max_iter),
        "Adam": adam(problem, lr, beta2=beta2, bias_correction=beta2 < 1, tol=tol, max_iter=max_iter,
                     name="Adam"),
    }


def heterogeneity_sweep(family: str = "model", ts: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), *,
                        kappa: float = PAPER_KAPPA, block_size: int = 50, tol: float = DEFAULT_TOL,
                        max_iter: int = 100_000, seed: int = 0,
                        methods: Sequence[str] = ("GD", "GD + momentum", "Adam", "blockwise GD"),
                        ) -> dict[str, np.ndarray]:
    """Iterations to the tolerance as the block spectra move from homogeneous to heterogeneous.

    Args:
        family: ``"model"`` (Case 2 → 1) or ``"synthetic"`` (Case 4 → 3).
        ts: degrees of heterogeneity.
        kappa: global condition number.
        block_size: ``d``.
        tol: relative gradient-norm tolerance.
        max_iter: iteration budget.
        seed: seed of the problems.
        methods: passed to :func:`compare`.

    Returns:
        ``{"t": [T], "max_block_kappa": [T], method: [T] iterations (NaN if not reached)}``.
    """
    out: dict[str, list] = {"t": [], "max_block_kappa": []} | {m: [] for m in methods}
    for t in ts:
        problem = make_problem(family, t, kappa=kappa, block_size=block_size, seed=seed)
        runs = compare(problem, tol=tol, max_iter=max_iter, methods=methods)
        out["t"].append(t)
        out["max_block_kappa"].append(float(problem.block_kappas.max()))
        for m in methods:
            out[m].append(np.nan if runs[m].iterations is None else runs[m].iterations)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
