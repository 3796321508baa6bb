"""Precision modes: full float32 by default, an opt-in fast mode whose error is bfloat16's."""

import pytest
import torch

from cases import tiny_gpt2, tiny_mlp
from hesslab import HessianOperator
from hesslab.measurement import _precision_knobs, measurement_mode

BF16_UNIT = 2.0**-8  # bfloat16's unit round-off (8 significant bits)


def float32_case(make):
    case = make()
    case.model.float()
    return case.model, case.loss_fn, [(x.float() if x.is_floating_point() else x, y) for x, y in case.data]


@pytest.mark.parametrize("make", [tiny_mlp, tiny_gpt2], ids=["mlp", "gpt2"])
def test_fast_mode_carries_bfloat16_round_off_only(make):
    model, loss_fn, data = float32_case(make)
    exact = HessianOperator(model, loss_fn, data)
    fast = HessianOperator(model, loss_fn, data, precision="fast")
    v = torch.randn(exact.dim, generator=torch.Generator().manual_seed(0))
    error = float((fast @ v - exact @ v).norm() / (exact @ v).norm())
    # autocast really ran in bfloat16 (far above float32's 6e-8), and the error stays within
    # a few bfloat16 units accumulated over the forward, backward and double backward
    assert 0.1 * BF16_UNIT < error < 10 * BF16_UNIT, error


def test_precision_switches_are_restored_and_bad_modes_refused():
    model, loss_fn, data = float32_case(tiny_mlp)
    before = [getattr(obj, attr) for obj, attr in _precision_knobs()]
    with measurement_mode(model, precision="fast"):
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    assert [getattr(obj, attr) for obj, attr in _precision_knobs()] == before
    with pytest.raises(ValueError, match="precision"):
        HessianOperator(model, loss_fn, data, precision="half")
