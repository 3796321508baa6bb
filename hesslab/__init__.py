"""hesslab: Hessian spectra, block heterogeneity and their numerics, for any PyTorch model.

The numerical core of the executable book of Zhang et al., "Why Transformers Need Adam: A
Hessian Perspective" (NeurIPS 2024). It needs torch, numpy, scipy, pandas and tqdm only.

Three wings:

- this package's top level, the core: Hessian operators, blocks, Lanczos, SLQ, top
  eigenvalues, traces, spectral densities, Jensen–Shannon heterogeneity, and the block
  entries a model's data never reach (:func:`zero_gradient_fractions`), per-block gradient
  norms (:func:`block_gradient_norms`); data-parallel products and spectra over
  ``torch.distributed`` (:mod:`hesslab.distributed`: every operator reduces over an
  initialised process group);
- :mod:`hesslab.storage`: results on disk keyed by model, loss, data and arguments
  (:mod:`hesslab.storage.cached` stores and resumes the core's long computations);
- :mod:`hesslab.experiments`: the paper's models, data, training runs and figures, and
  :mod:`hesslab.book`: the chapter runner, plots and widgets (extras ``[experiments]``,
  ``[book]``). Neither is imported here.
"""

from hesslab.blocks import Block, BlockPart, resolve_blocks
from hesslab.checkpoint import Checkpoint, MemoryCheckpoint
from hesslab.diagnostics import zero_gradient_fractions
from hesslab.distributed import DistributedCheckpoint, DistributedError, shard
from hesslab.gradients import block_gradient_norms, gradient_heterogeneity
from hesslab.hvp import (
    BlockHessianOperator,
    DataChangedError,
    HessianOperator,
    ModelChangedError,
    NonFiniteError,
    UnsupportedAutogradError,
    dense_matrix,
    measurement_mode,
)
from hesslab.js import js0, js_distance, js_divergence, js_matrix, spectra_js
from hesslab.lanczos import LanczosProcess, LanczosResult, run_lanczos
from hesslab.memory import BasisMemoryError, BasisPlan, plan_basis
from hesslab.operators import MatrixOperator, operator_noise
from hesslab.plan import Calibration, CostPlan, calibrate, plan
from hesslab.slq import blockwise_slq, exact_block_eigenvalues, slq
from hesslab.spectra import SpectralDensity
from hesslab.topk import TopEigenvalues, top_eigenvalues
from hesslab.trace import hutchinson_trace

__version__ = "0.1.0"

__all__ = [
    # Hessian operators and what they refuse
    "HessianOperator",
    "BlockHessianOperator",
    "MatrixOperator",
    "measurement_mode",
    "dense_matrix",
    "operator_noise",
    "UnsupportedAutogradError",
    "NonFiniteError",
    "DataChangedError",
    "ModelChangedError",
    # parameter blocks
    "Block",
    "BlockPart",
    "resolve_blocks",
    "zero_gradient_fractions",
    # spectra: Lanczos, SLQ, top eigenvalues, trace
    "run_lanczos",
    "LanczosProcess",
    "LanczosResult",
    "slq",
    "blockwise_slq",
    "exact_block_eigenvalues",
    "top_eigenvalues",
    "TopEigenvalues",
    "hutchinson_trace",
    "SpectralDensity",
    # memory and cost, before running
    "plan_basis",
    "BasisPlan",
    "BasisMemoryError",
    "plan",
    "calibrate",
    "CostPlan",
    "Calibration",
    # resuming long runs
    "Checkpoint",
    "MemoryCheckpoint",
    # heterogeneity between blocks
    "js_divergence",
    "spectra_js",
    "js_distance",
    "js_matrix",
    "js0",
    # gradient norms per block and their disparity
    "block_gradient_norms",
    "gradient_heterogeneity",
    # data-parallel over torch.distributed
    "shard",
    "DistributedError",
    "DistributedCheckpoint",
    "__version__",
]
