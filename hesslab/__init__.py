"""hesslab: Hessian spectra, block heterogeneity and optimiser comparisons.

The package behind the executable book of Zhang et al., "Why Transformers Need
Adam: A Hessian Perspective" (NeurIPS 2024).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
