"""Bad input gets a clear error that says what to do."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cases import exact_hessian, tiny_mlp
from hesslab import HessianOperator, NonFiniteError, UnsupportedAutogradError


@pytest.fixture
def op():
    case = tiny_mlp()
    return HessianOperator(case.model, case.loss_fn, case.data)


def test_wrong_vector_shape(op):
    with pytest.raises(ValueError, match=rf"shape \[{op.dim}\] or \[k, {op.dim}\], got \(3,\)"):
        op @ torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="got"):
        op @ torch.zeros(2, 2, op.dim, dtype=torch.float64)


def test_wrong_vector_dtype(op):
    with pytest.raises(TypeError, match=r"dtype torch.float32 differs .* use v.to\(torch.float64\)"):
        op @ torch.zeros(op.dim)


def test_wrong_vector_device(op):
    with pytest.raises(ValueError, match="is on meta but the parameters are on cpu"):
        op @ torch.zeros(op.dim, dtype=torch.float64, device="meta")


def test_parameters_not_in_the_model():
    case = tiny_mlp()
    with pytest.raises(KeyError, match="'fc9.weight' is not a parameter of the model"):
        HessianOperator(case.model, case.loss_fn, case.data, params=["fc9.weight"])
    stranger = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="not a parameter of the model"):
        HessianOperator(case.model, case.loss_fn, case.data, params=[stranger])
    case.model[0].bias.requires_grad_(False)
    with pytest.raises(ValueError, match="do not require grad"):
        HessianOperator(case.model, case.loss_fn, case.data, params=["0.bias"])


def test_non_finite_loss():
    case = tiny_mlp()
    case.data[1] = (case.data[1][0] * float("nan"), case.data[1][1])
    op = HessianOperator(case.model, case.loss_fn, case.data)
    with pytest.raises(NonFiniteError, match="loss of batch 1 is nan"):
        op @ torch.ones(op.dim, dtype=torch.float64)


def test_non_finite_hvp():
    class SqrtNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3, dtype=torch.float64))

        def forward(self, x):
            return x.sum() * 0 + (self.w ** 2).sum().sqrt()  # |w|: Hessian undefined at w = 0

    op = HessianOperator(SqrtNorm(), lambda out, y: out, [(torch.ones(2, 3), torch.ones(2))])
    with pytest.raises(NonFiniteError, match="not finite"):
        op @ torch.ones(3, dtype=torch.float64)


def test_empty_and_one_shot_data():
    case = tiny_mlp()
    op = HessianOperator(case.model, case.loss_fn, [])
    with pytest.raises(ValueError, match="data is empty"):
        op @ torch.ones(op.dim, dtype=torch.float64)
    with pytest.raises(TypeError, match="re-iterable"):
        HessianOperator(case.model, case.loss_fn, (b for b in case.data))
    with pytest.raises(TypeError, match=r"\(inputs, targets\) pair"):
        HessianOperator(case.model, case.loss_fn, [case.data[0][0]]) @ torch.ones(op.dim, dtype=torch.float64)


def test_loss_must_be_a_scalar():
    case = tiny_mlp()
    op = HessianOperator(case.model, lambda out, y: F.cross_entropy(out, y, reduction="none"), case.data)
    with pytest.raises(ValueError, match="scalar"):
        op @ torch.ones(op.dim, dtype=torch.float64)


class _KernelBackward(torch.autograd.Function):
    """A fused kernel's backward that has no derivative itself, like SDPA's efficient kernel on CUDA."""

    @staticmethod
    def forward(ctx, grad, x):
        return grad * (1 - x.tanh() ** 2)

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError("derivative for aten::_efficient_attention_backward is not implemented")


class _FusedAttentionLike(torch.autograd.Function):
    """Stands in for a fused attention kernel: first derivative only, no forward AD."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.tanh()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _KernelBackward.apply(grad, x)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x):
        return _FusedAttentionLike.apply(self.lin(x))


def test_operations_without_double_backward_name_the_fix():
    data = [(torch.randn(4, 3, dtype=torch.float64), torch.randint(0, 2, (4,)))]
    for method in ("reverse", "auto"):
        op = HessianOperator(_Net(), F.cross_entropy, data, method=method)
        with pytest.raises(UnsupportedAutogradError, match='attn_implementation="eager"'):
            op @ torch.ones(op.dim, dtype=torch.float64)


def test_auto_falls_back_to_forward_mode(monkeypatch):
    case = tiny_mlp()
    H = exact_hessian(case)
    op = HessianOperator(case.model, case.loss_fn, case.data)
    real_run = op._run

    def reverse_unsupported(requests, method):
        if method == "reverse":
            raise RuntimeError("derivative for aten::_fused_attention_backward is not implemented")
        return real_run(requests, method)

    monkeypatch.setattr(op, "_run", reverse_unsupported)
    v = torch.randn(op.dim, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="using forward-over-reverse"):
        hv = op @ v
    assert op.resolved_method == "forward"
    assert torch.allclose(hv, H @ v, rtol=1e-10, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op @ v  # decided once: no second warning


class _CubeOnce(torch.autograd.Function):
    """x³ with a first-order-only backward: double backward through it is silently zero in torch."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x * x * grad


class _CubeTwice(_CubeOnce):
    """x³ with a differentiable backward."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x * x * grad


class _CubeNet(nn.Module):
    def __init__(self, cube=None):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.cube = nn.Linear(4, 3).double(), nn.Linear(3, 2).double(), cube

    def forward(self, x):
        h = self.a(x)
        return self.b(h ** 3 if self.cube is None else self.cube.apply(h))


def _cube_data():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (6,), generator=g))]


def test_once_differentiable_functions_are_refused_not_silently_dropped():
    """Double backward and forward-mode AD of the backward both see a @once_differentiable backward
    as a constant: torch raises nothing, so the operator must."""
    data = _cube_data()
    for method in ("reverse", "forward", "auto"):
        op = HessianOperator(_CubeNet(_CubeOnce), F.cross_entropy, data, method=method)
        with pytest.raises(UnsupportedAutogradError, match="_CubeOnce mark their backward @once_differentiable"):
            op @ torch.ones(op.dim, dtype=torch.float64)


def test_custom_functions_with_a_differentiable_backward_give_the_true_hessian():
    data = _cube_data()
    truth = HessianOperator(_CubeNet(), F.cross_entropy, data).dense()
    for method in ("reverse", "auto"):
        dense = HessianOperator(_CubeNet(_CubeTwice), F.cross_entropy, data, method=method).dense()
        assert dense.allclose(truth, rtol=1e-10, atol=1e-12)


def test_bad_options():
    case = tiny_mlp()
    with pytest.raises(ValueError, match="method must be one of"):
        HessianOperator(case.model, case.loss_fn, case.data, method="exact")
    with pytest.raises(ValueError, match="batchnorm must be one of"):
        HessianOperator(case.model, case.loss_fn, case.data, batchnorm="frozen")
