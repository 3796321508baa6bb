"""Tiny float64 problems whose Hessians are known exactly.

An MLP, a CNN with batch-norm and a GPT-2, each with a few batches, and
:func:`exact_hessian`, the dense Hessian by ``torch.autograd.functional.hessian``
(independent of :class:`~hesslab.HessianOperator`). The methods chapter shows the
operator's errors on them, Figure 2 uses :func:`exact_hessian`, and the tests check
the core against them (``tests/cases.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from hesslab.experiments.models import lm_loss
from hesslab.measurement import measurement_mode


@dataclass
class Problem:
    """A model, its loss and a few batches: everything a HessianOperator needs."""

    name: str
    model: nn.Module
    loss_fn: object
    data: list
    batchnorm: str = "eval"


def tiny_mlp(seed: int = 0) -> Problem:
    """5 → 6 (tanh) → 3 MLP, 57 parameters, 3 batches of 7 (float64)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    data = [(torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (7,), generator=g))
            for _ in range(3)]
    return Problem("MLP", model, F.cross_entropy, data)


def tiny_cnn(seed: int = 0) -> Problem:
    """Two-convolution CNN with batch-norm (eval mode, non-trivial running statistics), 119 parameters."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 3),
        nn.Flatten(), nn.Linear(2 * 2 * 2, 3),
    ).double()
    with torch.no_grad():  # so that eval-mode batch-norm is not the identity
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g))
            for _ in range(2)]
    return Problem("CNN+BN", model, F.cross_entropy, data)


def tiny_gpt2(seed: int = 0, n_layer: int = 1, n_embd: int = 8, n_head: int = 2, vocab: int = 11,
              seq: int = 5) -> Problem:
    """A Hugging Face GPT-2 (eager attention, no dropout), about 1k parameters, 2 batches of 3×5 tokens."""
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
    return Problem("GPT-2", model, lm_loss, data)


def tiny_problems(seed: int = 0) -> list[Problem]:
    """The three model families of the validation: MLP, CNN with batch-norm, GPT-2."""
    return [tiny_mlp(seed), tiny_cnn(seed), tiny_gpt2(seed)]


def exact_hessian(problem: Problem, names: Sequence[str] | None = None) -> torch.Tensor:
    """The dense Hessian of the batch-size-weighted mean loss, by ``torch.autograd.functional.hessian``.

    Independent of :class:`~hesslab.HessianOperator`: a function of the flat
    parameter vector through ``functional_call``, differentiated twice.

    Returns:
        ``[n, n]`` float64 tensor in ``named_parameters()`` order (restricted to ``names``).
    """
    model = problem.model
    named = dict(model.named_parameters())
    names = list(names) if names else [n for n, p in named.items() if p.requires_grad]
    flat0 = torch.cat([named[n].detach().reshape(-1) for n in names])
    sizes = [named[n].numel() for n in names]

    def total_loss(flat):
        params = {n: c.reshape(named[n].shape) for n, c in zip(names, flat.split(sizes))}
        loss, count = 0.0, 0
        for inputs, targets in problem.data:
            b = targets.shape[0]
            loss = loss + b * problem.loss_fn(functional_call(model, params, (inputs,)), targets)
            count += b
        return loss / count

    with measurement_mode(model, problem.batchnorm):
        return torch.autograd.functional.hessian(total_loss, flat0, vectorize=True)
