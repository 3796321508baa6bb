"""The tiny float64 models every numerical test checks against an exact dense Hessian.

They come from :mod:`hesslab.experiments.tiny_problems`, so the methods chapter shows
the same cases the tests assert on.
"""

from __future__ import annotations

from hesslab.experiments.tiny_problems import Problem, exact_hessian, tiny_cnn, tiny_gpt2, tiny_mlp

#: case id -> constructor (seed keyword, float64 model, its loss and batches)
CASES = {"mlp": tiny_mlp, "cnn-bn": tiny_cnn, "gpt2": tiny_gpt2}

__all__ = ["CASES", "Problem", "exact_hessian", "tiny_cnn", "tiny_gpt2", "tiny_mlp"]
