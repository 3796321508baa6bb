"""Tiny float64 models shared by the numerical tests (from hesslab.validation) and the dense reference."""

from __future__ import annotations

import pytest

from hesslab.validation import Problem as Case
from hesslab.validation import exact_hessian as dense_hessian
from hesslab.validation import lm_loss, tiny_cnn, tiny_gpt2, tiny_mlp

make_mlp, make_cnn, make_gpt2 = tiny_mlp, tiny_cnn, tiny_gpt2

CASES = {"mlp": make_mlp, "cnn-bn": make_cnn, "gpt2": make_gpt2}

__all__ = ["Case", "CASES", "dense_hessian", "lm_loss", "make_cnn", "make_gpt2", "make_mlp"]


@pytest.fixture(params=list(CASES))
def case(request) -> Case:
    """Each tiny model family in turn."""
    return CASES[request.param]()
