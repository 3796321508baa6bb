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

The book's reproduction notes (``book/reproduction.md``) state, per figure, what the paper
specifies, what is unverified and which choice the book makes.
"""

from hesslab.experiments.quadratic.optimizers import (ADAM_LRS, DEFAULT_TOL, GD_FACTORS, MOMENTUM_FACTORS, SIGN_LRS,
                                                      Run, adam, blockwise_gd, compare, gd, heavy_ball,
                                                      preconditioned_gd, sign_descent)
from hesslab.experiments.quadratic.problems import (CASES, PAPER_KAPPA, QuadraticProblem, block_quadratic, case_spectra,
                                                    interpolate_spectra, make_case, make_problem, model_block_spectra,
                                                    random_orthogonal, scale_to_condition_number,
                                                    synthetic_block_spectra)
from hesslab.experiments.quadratic.spectra_files import (SPECTRA_FILE, load_block_spectra, save_block_spectra,
                                                         standin_block_spectra, write_spectra_file)
from hesslab.experiments.quadratic.theory import (format_ratio, heterogeneity_sweep, interactive_runs, iteration_ratio,
                                                  measured_ratios, theory_bounds)

__all__ = [
    # problems (problems.py)
    "CASES", "PAPER_KAPPA", "QuadraticProblem", "make_case", "make_problem", "block_quadratic",
    "case_spectra", "synthetic_block_spectra", "model_block_spectra", "interpolate_spectra",
    "scale_to_condition_number", "random_orthogonal",
    # block spectra files (spectra_files.py)
    "SPECTRA_FILE", "load_block_spectra", "save_block_spectra", "standin_block_spectra",
    "write_spectra_file",
    # optimisers (optimizers.py)
    "Run", "gd", "heavy_ball", "blockwise_gd", "preconditioned_gd", "adam", "sign_descent", "compare",
    "DEFAULT_TOL", "GD_FACTORS", "MOMENTUM_FACTORS", "ADAM_LRS", "SIGN_LRS",
    # theory and the measured claim (theory.py)
    "theory_bounds", "iteration_ratio", "measured_ratios", "format_ratio", "heterogeneity_sweep",
    "interactive_runs",
]
