"""Tiny float64 problems with exact Hessians, and the checks the methods chapter shows.

The same tiny models back the test suite (``tests/conftest.py``), so what the book
shows is what the tests assert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .hvp import HessianOperator, measurement_mode
from .lanczos import run_lanczos
from .models import lm_loss
from .slq import MatrixOperator, slq
from .spectra import SpectralDensity


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


def hvp_errors(problems: Sequence[Problem], methods=("reverse", "forward", "auto"), num_vectors: int = 3,
               seed: int = 0) -> pd.DataFrame:
    """Relative error ‖Hv − H_exact v‖/‖H_exact v‖ per problem and method (batched products).

    Returns:
        DataFrame: rows problems, columns methods, plus ``dim``.
    """
    rows = {}
    g = torch.Generator().manual_seed(seed)
    for problem in problems:
        H = exact_hessian(problem)
        V = torch.randn(num_vectors, H.shape[0], generator=g, dtype=H.dtype)
        row = {"dim": H.shape[0]}
        for method in methods:
            op = HessianOperator(problem.model, problem.loss_fn, problem.data, method=method,
                                 batchnorm=problem.batchnorm)
            row[method] = float((op @ V - V @ H).norm() / (V @ H).norm())
        rows[problem.name] = row
    return pd.DataFrame(rows).T


def matrix_with_spectrum(eigenvalues, seed: int = 0) -> torch.Tensor:
    """``Q diag(eigenvalues) Qᵀ`` with a random orthogonal ``Q`` (float64)."""
    n = len(eigenvalues)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    return q @ torch.diag(torch.as_tensor(np.asarray(eigenvalues), dtype=torch.float64)) @ q.T


def slq_convergence(eigenvalues, steps=(5, 10, 20, 40, 80), num_probes: int = 10, seed: int = 0) -> pd.DataFrame:
    """Wasserstein-1 distance between SLQ and the exact spectrum, against Lanczos steps.

    Returns:
        DataFrame indexed by steps: ``W1`` and ``W1 / range`` (range = λ_max − λ_min).
    """
    ev = np.asarray(eigenvalues, dtype=np.float64)
    A = MatrixOperator(matrix_with_spectrum(ev, seed))
    w1 = [slq(A, num_steps=m, num_probes=num_probes, seed=seed, progress=False).wasserstein1(ev) for m in steps]
    return pd.DataFrame({"W1": w1, "W1 / range": np.array(w1) / (ev.max() - ev.min())},
                        index=pd.Index(list(steps), name="Lanczos steps"))


def ghost_ritz_values(eigenvalues, num_steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Ritz values of one Lanczos run with and without full reorthogonalisation.

    Returns:
        ``{"with reorthogonalisation": [m], "without": [m]}`` ascending.
    """
    ev = np.asarray(eigenvalues, dtype=np.float64)
    A = matrix_with_spectrum(ev, seed)
    v0 = torch.randn(1, len(ev), dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    out = {}
    for label, reo in (("with reorthogonalisation", True), ("without", False)):
        nodes, _ = run_lanczos(lambda q: q @ A, v0, num_steps, reorthogonalize=reo).ritz()
        out[label] = np.sort(nodes[0][~np.isnan(nodes[0])])
    return out


class SummedOperator:
    """The paper's code's Hessian: the *sum* of per-micro-batch Hessians, one operator per batch."""

    def __init__(self, problem: Problem):
        self.parts = [HessianOperator(problem.model, problem.loss_fn, [batch], batchnorm=problem.batchnorm)
                      for batch in problem.data]
        self.dim, self.dtype, self.device = self.parts[0].dim, self.parts[0].dtype, self.parts[0].device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``Σ_b H_b v`` for ``[n]`` or ``[k, n]``."""
        return sum(part.matvec(v) for part in self.parts)


def summed_vs_mean_spectra(problem: Problem, num_steps: int = 30, num_probes: int = 5,
                           seed: int = 0) -> dict[str, SpectralDensity]:
    """The spectrum of the mean-loss Hessian and of the sum over micro-batches (the paper's code).

    Both are measured, with the same probes: the mean through one
    :class:`~hesslab.HessianOperator` over all batches, the sum through
    :class:`SummedOperator`. With equal batch sizes the sum is the number of batches
    times the mean, so every eigenvalue is multiplied by it; with an absolute smoothing
    width and grid (as in the paper's code) this changes the plotted densities and JS values.
    """
    op = HessianOperator(problem.model, problem.loss_fn, problem.data, batchnorm=problem.batchnorm)
    mean = slq(op, num_steps=num_steps, num_probes=num_probes, seed=seed, progress=False)
    summed = slq(SummedOperator(problem), num_steps=num_steps, num_probes=num_probes, seed=seed, progress=False)
    return {"mean (hesslab)": mean, f"sum over {len(problem.data)} batches (paper's code)": summed}
