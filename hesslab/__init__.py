"""hesslab: Hessian spectra, block heterogeneity and optimiser comparisons.

The package behind the executable book of Zhang et al., "Why Transformers Need
Adam: A Hessian Perspective" (NeurIPS 2024). Submodules not imported here:
``hesslab.quadratic``, ``hesslab.models``, ``hesslab.data``, ``hesslab.train``,
``hesslab.cache``, ``hesslab.plotting``, ``hesslab.book``.
"""

from .blocks import Block, BlockPart, resolve_blocks
from .cache import CachedResult, CacheWarning, ResultCache, provenance
from .fingerprint import UncacheableError, computation_key, data_fingerprint, model_fingerprint
from .hvp import (
    BlockHessianOperator,
    DataChangedError,
    HessianOperator,
    ModelChangedError,
    NonFiniteError,
    UnsupportedAutogradError,
    dense_matrix,
    measurement_mode,
)
from .js import js0, js_distance, js_divergence, js_matrix
from .lanczos import LanczosProcess, LanczosResult, run_lanczos
from .slq import (
    MatrixOperator,
    blockwise_slq,
    exact_block_eigenvalues,
    hutchinson_trace,
    operator_noise,
    slq,
)
from .spectra import SpectralDensity
from .topk import TopEigenvalues, top_eigenvalues

__version__ = "0.1.0"

__all__ = [
    # Hessian operators
    "HessianOperator",
    "BlockHessianOperator",
    "MatrixOperator",
    "measurement_mode",
    "dense_matrix",
    "UnsupportedAutogradError",
    "NonFiniteError",
    "DataChangedError",
    "ModelChangedError",
    # blocks
    "Block",
    "BlockPart",
    "resolve_blocks",
    # Lanczos and spectra
    "run_lanczos",
    "LanczosProcess",
    "LanczosResult",
    "slq",
    "blockwise_slq",
    "exact_block_eigenvalues",
    "top_eigenvalues",
    "TopEigenvalues",
    "operator_noise",
    "hutchinson_trace",
    "SpectralDensity",
    # results on disk
    "ResultCache",
    "CachedResult",
    "CacheWarning",
    "provenance",
    "model_fingerprint",
    "data_fingerprint",
    "computation_key",
    "UncacheableError",
    # heterogeneity
    "js_divergence",
    "js_distance",
    "js_matrix",
    "js0",
    "__version__",
]
