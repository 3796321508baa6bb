"""Block-diagonal quadratic problems (Zhang et al. 2024, Figures 8–9) and optimisers on them.

The problem is

    f(w) = ½ wᵀ H w − bᵀ w,    H = diag(H_1, …, H_L),    H_l = Q_l Λ_l Q_lᵀ,

with ``L`` blocks of equal size ``d`` (``n = L d`` parameters), a random orthogonal
``Q_l`` per block and eigenvalues ``Λ_l`` taken from one of four *cases*:

1. four blocks of GPT-2 (heterogeneous in the paper), measured;
2. four blocks of ResNet18 (homogeneous in the paper), measured;
3. heterogeneous, synthetic: block ``l`` lies in its own narrow interval of ``[1, κ]``;
4. homogeneous, synthetic: every block spans ``[1, κ]`` with the same distribution.

In every case the pooled eigenvalues are shifted and scaled (one affine map for all
blocks, so relative ranges are kept) to ``[1, κ]``: ``κ(H) = κ`` exactly (the paper uses
κ = 5000). A ``heterogeneity`` t ∈ [0, 1] interpolates the block spectra between the
homogeneous (t = 0) and the heterogeneous (t = 1) case of a family (``"model"``: Cases 2
→ 1, ``"synthetic"``: Cases 4 → 3), quantile by quantile on a log axis.

Block spectra for Cases 1 and 2 are read from ``data/quadratic_block_spectra.json``:
exact eigenvalues of four blocks of the book's smoke-size GPT-2 and ResNet-18 at
initialisation, measured by :func:`measure_block_spectra` (regenerate the file with
``python -m hesslab.experiments.quadratic``). They are indefinite; the common affine map
onto ``[1, κ]`` shifts the most negative eigenvalue to 1.

Optimisers (each returns a :class:`Run` with the history of ‖∇f‖ per iteration):
:func:`gd` (optimal step 2/(L+μ), a fixed step or the best of a grid), :func:`blockwise_gd`
(step 1/λ_max(H_l) per block), :func:`adam` (bias-corrected PyTorch Adam, or Adam
without bias correction initialised at the first gradient; β₁ = 0, β₂ = 1 without bias
correction is GD preconditioned by diag(|g₀|)⁻¹), :func:`preconditioned_gd` and
:func:`sign_descent`. Learning-rate grids are run side by side (vectorised over the
grid) and stop as soon as one rate reaches the tolerance, so the best rate's iteration
count is exact. :func:`theory_bounds` evaluates the complexity bounds of the paper's
Section 4 (constants unverified) and the exact linear-algebra bounds for this instance.
:func:`seed_runs` repeats the comparison over seeds and :func:`case_verdicts` decides, per
case and with margins, whether the paper's GD-vs-Adam claim reproduces.

The book's reproduction notes (``book/reproduction.md``) state, per figure, what the paper
specifies, what is unverified and which choice the book makes.
"""

from hesslab.experiments.quadratic.optimizers import (ADAM_LRS, DEFAULT_TOL, GD_FACTORS, MOMENTUM_FACTORS, SIGN_LRS,
                                                      Run, adam, blockwise_gd, compare, gd, heavy_ball,
                                                      preconditioned_gd, sign_descent)
from hesslab.experiments.quadratic.problems import (CASE_FAMILIES, CASES, PAPER_KAPPA, QuadraticProblem,
                                                    block_quadratic, case_spectra, interpolate_spectra, make_case,
                                                    make_problem, model_block_spectra, model_spectra_table, random_orthogonal,
                                                    scale_to_condition_number, synthetic_block_spectra)
from hesslab.experiments.quadratic.spectra_files import (MODEL_FAMILIES, SPECTRA_FILE, load_block_spectra,
                                                         measure_block_spectra, model_blocks, save_block_spectra,
                                                         write_measured_spectra)
from hesslab.experiments.quadratic.theory import (ADAM_FASTER, CLAIM_TEXT, ON_PAR, PAPER_CLAIMS, CaseVerdict, Verdict,
                                                  case_verdicts, format_ratio, heterogeneity_sweep, interactive_runs,
                                                  iteration_ratio, measured_ratios, ratio_spread, seed_runs,
                                                  sign_descent_summary, theory_bounds, verdict_table)

__all__ = [
    # problems (problems.py)
    "CASES", "CASE_FAMILIES", "PAPER_KAPPA", "QuadraticProblem", "make_case", "make_problem", "block_quadratic",
    "case_spectra", "synthetic_block_spectra", "model_block_spectra", "model_spectra_table", "interpolate_spectra",
    "scale_to_condition_number", "random_orthogonal",
    # block spectra files (spectra_files.py)
    "SPECTRA_FILE", "MODEL_FAMILIES", "load_block_spectra", "save_block_spectra", "measure_block_spectra",
    "model_blocks", "write_measured_spectra",
    # optimisers (optimizers.py)
    "Run", "gd", "heavy_ball", "blockwise_gd", "preconditioned_gd", "adam", "sign_descent", "compare",
    "DEFAULT_TOL", "GD_FACTORS", "MOMENTUM_FACTORS", "ADAM_LRS", "SIGN_LRS",
    # theory and the measured claim (theory.py)
    "theory_bounds", "iteration_ratio", "measured_ratios", "format_ratio", "heterogeneity_sweep",
    "interactive_runs", "seed_runs", "case_verdicts", "verdict_table", "CaseVerdict", "Verdict", "PAPER_CLAIMS",
    "CLAIM_TEXT", "ADAM_FASTER", "ON_PAR", "ratio_spread", "sign_descent_summary",
]
