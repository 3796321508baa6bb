"""What a Hessian operator refuses, and why: the exceptions of :mod:`hesslab.hvp`."""

from __future__ import annotations

import re

#: what to do when an operation has neither double backward nor forward-mode AD
ATTENTION_FIX = (
    "hesslab already routes torch's scaled_dot_product_attention through its math kernel; "
    "this operation is another fused kernel (e.g. a flash-attention package or a custom "
    'CUDA extension). Build the model with its plain PyTorch implementation (for Hugging '
    'Face models attn_implementation="eager" or "sdpa").'
)

#: autograd messages that mean "this operation cannot be differentiated this way"
UNSUPPORTED = re.compile(
    r"(not implemented|does not support|doesn't support|not supported|"
    r"no forward AD|forward AD|double backward|differentiate twice|"
    r"once_differentiable|batching rule|vmap)",
    re.IGNORECASE,
)


class UnsupportedAutogradError(RuntimeError):
    """An operation in the model supports neither double backward nor forward-mode AD."""


class NonFiniteError(FloatingPointError):
    """The loss or a Hessian-vector product is NaN or infinite."""


class DataChangedError(ValueError):
    """The data yielded other batches (order, count or content) than on the operator's first pass."""


class ModelChangedError(RuntimeError):
    """A selected parameter was replaced, converted or moved after the operator was built."""


__all__ = ["UnsupportedAutogradError", "NonFiniteError", "DataChangedError", "ModelChangedError",
           "UNSUPPORTED", "ATTENTION_FIX"]
