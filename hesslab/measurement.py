"""The state in which a model's Hessian is measured: dropout off, batch-norm mode, full float32, differentiable attention."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

BATCHNORM_MODES = ("eval", "train")

#: ``"float32"``: full IEEE float32 (the default); ``"fast"``: TF32 matmuls and convolutions on
#: a GPU and bfloat16 autocast of the forward pass (where the model's operations allow it)
PRECISIONS = ("float32", "fast")


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a batch-norm layer: the only modules that ``batchnorm=`` (of :func:`measurement_mode`) affects."""
    return any(_is_batchnorm(m) for m in model.modules())


#: the "new" TF32 API of torch >= 2.9: one ``fp32_precision`` per backend and operation
_FP32_PRECISION_KNOBS = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn",
                         "mkldnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")


def _precision_knobs() -> list[tuple[object, str]]:
    """``(object, attribute)`` of every float32-precision switch this torch has.

    torch >= 2.9 has ``fp32_precision`` per backend (``"ieee"``, ``"tf32"``, ``"bf16"``,
    ``"none"``) and refuses to *read* the legacy ``allow_tf32`` flags once anyone used
    the new API ("mix of the legacy and new APIs"). So with the new API present only
    the new switches are saved, set and restored; older torch gets the legacy ones.
    """
    backends = torch.backends
    knobs = []
    for path in _FP32_PRECISION_KNOBS:
        obj = backends
        for part in filter(None, path.split(".")):
            obj = getattr(obj, part, None)
        if obj is not None and hasattr(obj, "fp32_precision"):
            knobs.append((obj, "fp32_precision"))
    if knobs:
        return knobs
    return [(backends.cuda.matmul, "allow_tf32"), (backends.cudnn, "allow_tf32")]


@contextlib.contextmanager
def fast_precision(device_type: str):
    """TF32 float32 matmuls and convolutions, and bfloat16 autocast on ``device_type``, then restore.

    Faster on GPUs with tensor cores; the products carry bfloat16 round-off (about 3
    significant digits), which the breakdown floor of :func:`~hesslab.operators.operator_noise`
    then measures. The methods chapter reports its effect on λ_max, λ₁₀ and JS⁰.
    """
    knobs = _precision_knobs()
    saved = [getattr(obj, attr) for obj, attr in knobs]
    legacy = knobs[0][1] == "allow_tf32"
    try:
        for obj, attr in knobs:
            if device_type == "cuda":
                setattr(obj, attr, True if legacy else "tf32")
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield
    finally:
        for (obj, attr), value in zip(knobs, saved):
            setattr(obj, attr, value)


@contextlib.contextmanager
def full_float32_precision():
    """Run float32 matmuls and convolutions in full IEEE precision (no TF32, no bf16), then restore.

    Works whichever TF32 API (legacy ``allow_tf32`` / ``set_float32_matmul_precision`` or
    the ``fp32_precision`` switches of torch >= 2.9) the user or a library touched, and
    restores every switch to exactly its previous value.
    """
    knobs = _precision_knobs()
    saved = [getattr(obj, attr) for obj, attr in knobs]
    legacy = knobs[0][1] == "allow_tf32"
    matmul_precision = torch.get_float32_matmul_precision() if legacy else None
    try:
        for obj, attr in knobs:
            setattr(obj, attr, False if legacy else "ieee")
        if legacy:
            torch.set_float32_matmul_precision("highest")
        yield
    finally:
        for (obj, attr), value in zip(knobs, saved):
            setattr(obj, attr, value)
        if legacy:
            torch.set_float32_matmul_precision(matmul_precision)


@contextlib.contextmanager
def differentiable_attention():
    """Scaled-dot-product attention through PyTorch's math kernel, then the user's choice again.

    The fused SDPA kernels (flash, memory-efficient, cuDNN, the CPU flash kernel) have
    no double backward and no forward-mode AD; the math kernel is composed of ordinary
    differentiable operations. This makes ``nn.MultiheadAttention``,
    ``nn.TransformerEncoderLayer`` and Hugging Face models built with
    ``attn_implementation="sdpa"`` measurable as they are.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: no fused kernel selection to override
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


@contextlib.contextmanager
def measurement_mode(model: nn.Module, batchnorm: str = "eval", precision: str = "float32"):
    """Put ``model`` in the state in which its Hessian is measured, then restore it.

    Dropout is off (``eval``). Batch-norm layers use their running statistics
    (``batchnorm="eval"``) or the statistics of each batch (``"train"``); in the
    latter case running statistics are *not* updated. Float32 arithmetic is full
    IEEE precision (:func:`full_float32_precision`: no TF32, no bf16) and attention
    runs through the differentiable math kernel (:func:`differentiable_attention`).
    Every module's ``training`` flag, batch-norm ``track_running_stats``, the
    precision switches and the attention-kernel choice are restored on exit.
    ``precision="fast"`` allows TF32 and bfloat16 autocast instead (:func:`fast_precision`).
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    modes = [(m, m.training) for m in model.modules()]
    tracked = [(m, m.track_running_stats) for m in model.modules() if _is_batchnorm(m)]
    try:
        model.eval()
        if batchnorm == "train":
            for m, _ in tracked:
                # training=True with track_running_stats=False: batch statistics,
                # and F.batch_norm receives no running buffers to update.
                m.train()
                m.track_running_stats = False
        device = next((p.device.type for p in model.parameters()), "cpu")
        arithmetic = full_float32_precision() if precision == "float32" else fast_precision(device)
        with arithmetic, differentiable_attention():
            yield model
    finally:
        for m, flag in modes:
            m.training = flag
        for m, flag in tracked:
            m.track_running_stats = flag


__all__ = ["BATCHNORM_MODES", "PRECISIONS", "measurement_mode", "full_float32_precision", "fast_precision",
           "differentiable_attention"]
