"""Tiny float64 models shared by the numerical tests, and the dense reference Hessian."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from hesslab.hvp import call_model, measurement_mode

torch.set_default_dtype(torch.float32)


@dataclass
class Case:
    """A model, its loss and a few batches: everything a HessianOperator needs."""

    name: str
    model: nn.Module
    loss_fn: object
    data: list
    batchnorm: str = "eval"


def lm_loss(outputs, targets):
    """Mean next-token cross-entropy of a Hugging Face causal LM output."""
    logits = outputs.logits
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten())


def make_mlp(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    data = [(torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (7,), generator=g))
            for _ in range(3)]
    return Case("mlp", model, F.cross_entropy, data)


def make_cnn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 3),
        nn.Flatten(), nn.Linear(2 * 2 * 2, 3),
    ).double()
    # non-trivial running statistics, so eval-mode batch-norm is not the identity
    bn = model[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g))
            for _ in range(2)]
    return Case("cnn-bn", model, F.cross_entropy, data)


def make_gpt2(seed=0, n_layer=1, n_embd=8, n_head=2, vocab=11, seq=5):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=8, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="eager").double()
    g = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(2):
        tokens = torch.randint(0, vocab, (3, seq + 1), generator=g)
        data.append((tokens[:, :-1], tokens[:, 1:]))
    return Case("gpt2", model, lm_loss, data)


CASES = {"mlp": make_mlp, "cnn-bn": make_cnn, "gpt2": make_gpt2}


@pytest.fixture(params=list(CASES))
def case(request) -> Case:
    """Each tiny model family in turn."""
    return CASES[request.param]()


def dense_hessian(case: Case, names=None) -> torch.Tensor:
    """Exact Hessian of the batch-size-weighted mean loss via torch.autograd.functional.hessian."""
    model = case.model
    named = dict(model.named_parameters())
    names = names or [n for n, p in named.items() if p.requires_grad]
    flat0 = torch.cat([named[n].detach().reshape(-1) for n in names])
    sizes = [named[n].numel() for n in names]

    def total_loss(flat):
        chunks = flat.split(sizes)
        params = {n: c.reshape(named[n].shape) for n, c in zip(names, chunks)}
        loss, count = 0.0, 0
        for inputs, targets in case.data:
            b = targets.shape[0]
            out = functional_call(model, params, (inputs,))
            loss = loss + b * case.loss_fn(out, targets)
            count += b
        return loss / count

    with measurement_mode(model, case.batchnorm):
        return torch.autograd.functional.hessian(total_loss, flat0, vectorize=True)
