"""Model families: every one runs a forward, loss, gradient and HVP at smoke size, and
has the paper's parameter count at paper size (counted on the meta device)."""

import pytest
import torch

from hesslab import HessianOperator
from hesslab.experiments.models import NAMES, build, random_batch

# millions of parameters in the paper (Zhang et al. 2024; BERT's configuration is ours)
PAPER_MILLIONS = {"gpt2": 124, "gpt2-nano": 11, "bert": 40, "vit-base": 86, "resnet18": 11.7, "vgg16": 138}


@pytest.mark.parametrize("name", NAMES)
def test_smoke_model_forward_loss_gradient_and_hvp(name):
    built = build(name, "smoke", dtype=torch.float64)
    data = [random_batch(built, 3, seed=s) for s in range(2)]
    inputs, targets = data[0]
    out = built.model(**inputs) if isinstance(inputs, dict) else built.model(inputs)
    loss = built.loss_fn(out, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    grads = torch.autograd.grad(loss, [p for p in built.model.parameters()], allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    op = HessianOperator(built.model, built.loss_fn, data, batchnorm="train" if "bn" in name else "eval")
    u, v = torch.randn(2, op.dim, dtype=torch.float64)
    Hu, Hv = op @ u, op @ v
    # a Hessian is symmetric: v·Hu = u·Hv (holds only if the products are right)
    assert torch.isclose(v @ Hu, u @ Hv, rtol=1e-8, atol=1e-10), (float(v @ Hu), float(u @ Hv))


@pytest.mark.parametrize("name, millions", PAPER_MILLIONS.items())
def test_paper_size_parameter_counts(name, millions):
    count = build(name, "paper", device="meta").num_parameters / 1e6
    assert abs(count - millions) <= 0.1 * millions, f"{name}: {count:.1f}M vs the paper's {millions}M"


def test_heterogeneity_parameter_and_errors():
    plain, steep = build("hetero-mlp", "smoke", c=1.0), build("hetero-mlp", "smoke", c=4.0)
    assert plain.model.multipliers.tolist() == [1.0, 1.0, 1.0]
    assert steep.model.multipliers.tolist() == [1.0, 4.0, 16.0]
    with pytest.raises(ValueError, match="unknown model"):
        build("lenet")
    with pytest.raises(ValueError, match="unknown size"):
        build("gpt2", "huge")
    with pytest.raises(TypeError, match="unexpected options"):
        build("gpt2", "smoke", c=2)
