"""Costs of Hessian-vector products and blockwise Lanczos steps, as multiples of a gradient.

Used by ``benchmarks/hvp.py`` (the full benchmark) and by the methods chapter (at
its profile's size). Every figure is a ratio to the time of one gradient (forward
+ backward) of the same model on the same data, measured in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from hesslab.blocks import resolve_blocks
from hesslab.batching import call_model
from hesslab.hvp import HessianOperator
from hesslab.slq import block_seed, blockwise_slq, slq
from hesslab.experiments.models import lm_loss
from hesslab.experiments.tiny_problems import Problem


def benchmark_problems(gpt2_layers: int = 4, gpt2_width: int = 128, *, seq: int = 64, batch: int = 8,
                       device: torch.device | str = "cpu", seed: int = 0) -> list[Problem]:
    """The benchmark's three float32 models on random data, in eval mode.

    An MLP (256-512-512-10, batch 128), a CNN with batch-norm (3 conv layers,
    32×32 images, batch 64) and a Hugging Face GPT-2 (``gpt2_layers`` × ``gpt2_width``,
    4 heads, eager attention, ``batch`` × ``seq`` tokens, vocabulary 96).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    cnn = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    )
    config = GPT2Config(vocab_size=96, n_positions=seq, n_embd=gpt2_width, n_layer=gpt2_layers, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    gpt = GPT2LMHeadModel._from_config(config, attn_implementation="eager")
    tokens = torch.randint(0, 96, (batch, seq + 1), generator=g)
    problems = [
        Problem("MLP", mlp, F.cross_entropy,
                [(torch.randn(128, 256, generator=g), torch.randint(0, 10, (128,), generator=g))]),
        Problem("CNN+BN", cnn, F.cross_entropy,
                [(torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))]),
        Problem(f"GPT-2 {gpt2_layers}x{gpt2_width}", gpt, lm_loss, [(tokens[:, :-1], tokens[:, 1:])]),
    ]
    for p in problems:
        p.model.to(device).eval()
        p.data = [(x.to(device), y.to(device)) for x, y in p.data]
    return problems


def time_call(fn: Callable[[], object], device: torch.device | str = "cpu", repeats: int = 5) -> float:
    """Fastest wall time of ``fn()`` over ``repeats`` runs, in seconds, after one warm-up call.

    The minimum, as :mod:`timeit` recommends: other work on the machine only ever adds
    time, so the fastest run is the best estimate of the cost. CUDA is synchronised.
    """
    device = torch.device(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def gradient_call(model: nn.Module, loss_fn: Callable, data: Sequence) -> Callable[[], None]:
    """A function computing one gradient of the mean loss over ``data`` (the unit of cost)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def run():
        for inputs, targets in data:
            torch.autograd.grad(loss_fn(call_model(model, inputs), targets), params)
    return run


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def hvp_costs(model: nn.Module, loss_fn: Callable, data: Sequence, *, k: int = 8, repeats: int = 5,
              extra: dict[str, tuple[Callable, Callable]] | None = None) -> pd.DataFrame:
    """Cost of one HVP per method, in gradients.

    Args:
        model, loss_fn, data: as for :class:`~hesslab.HessianOperator`.
        k: vectors in the batched measurement.
        repeats: timed repetitions (the fastest counts).
        extra: more methods, ``label -> (one_vector_fn(v), batch_fn(V))``.

    Returns:
        A DataFrame indexed by method with columns ``one vector`` and ``per vector
        (k)`` (ratios to a gradient) and the gradient time in ``gradient ms``.
    """
    device = _device_of(model)
    dtype = next(model.parameters()).dtype
    t_grad = time_call(gradient_call(model, loss_fn, data), device, repeats)
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(dim, generator=g).to(device, dtype)
    V = torch.randn(k, dim, generator=g).to(device, dtype)
    retained = HessianOperator(model, loss_fn, data, method="reverse")
    forward = HessianOperator(model, loss_fn, data, method="forward")
    rebuilt = HessianOperator(model, loss_fn, data, method="reverse", graph_memory_budget=0)
    methods = {
        "reverse, retained graph (ours, default)": (lambda: retained @ v, lambda: retained @ V),
        "forward, jvp(grad) + vmap (ours)": (lambda: forward @ v, lambda: forward @ V),
        "double backward, graph rebuilt (PyHessian, paper)": (lambda: rebuilt @ v, lambda: [rebuilt @ u for u in V]),
    }
    for label, (one, many) in (extra or {}).items():
        methods[label] = (lambda one=one: one(v), lambda many=many: many(V))
    times = {label: (time_call(one, device, repeats), time_call(many, device, repeats))
             for label, (one, many) in methods.items()}
    t_grad = min(t_grad, time_call(gradient_call(model, loss_fn, data), device, repeats))
    rows = {label: {"one vector": t1 / t_grad, f"per vector (k={k})": tk / t_grad / k}
            for label, (t1, tk) in times.items()}
    table = pd.DataFrame(rows).T
    table["gradient ms"] = t_grad * 1e3
    return table


def paper_block_products(model: nn.Module, loss_fn: Callable, data: Sequence, blocks, vectors) -> list:
    """The paper's loop order: per block and per probe, a fresh forward, backward and double backward."""
    out = []
    for block, V in zip(blocks, vectors):
        op = HessianOperator(model, loss_fn, data, params=list(block.params), method="reverse",
                             graph_memory_budget=0).restrict(block)
        out.append(torch.stack([op @ v for v in V]))
    return out


def blockwise_step_costs(model: nn.Module, loss_fn: Callable, data: Sequence, blocks=None, *,
                         probes: int = 1, repeats: int = 3) -> pd.Series:
    """Cost of one Lanczos step over all blocks, in gradients, for each loop order.

    Returns:
        A Series: ``paper`` (graph rebuilt per block and probe), ``shared graph``
        (one graph per batch, built in the step), ``retained graph`` (graphs kept
        across steps, the default inside :func:`~hesslab.blockwise_slq`),
        ``zero-padded batch`` (all blocks in one ``vmap``-ed backward), and
        ``blocks``, ``gradient ms``.
    """
    device = _device_of(model)
    dtype = next(model.parameters()).dtype
    resolved = resolve_blocks(model, blocks)
    retained = HessianOperator(model, loss_fn, data, method="reverse")
    g = torch.Generator().manual_seed(0)
    requests = [(b, torch.randn(probes, retained.block_dim(b), generator=g).to(device, dtype)) for b in resolved]
    shared = HessianOperator(model, loss_fn, data, method="reverse", graph_memory_budget=0)
    padded = HessianOperator(model, loss_fn, data, method="reverse", batch_blocks=True)
    t_grad = time_call(gradient_call(model, loss_fn, data), device, repeats)
    vectors = [v for _, v in requests]
    times = {
        "paper": time_call(lambda: paper_block_products(model, loss_fn, data, resolved, vectors),
                           device, max(1, repeats // 2)),
        "shared graph": time_call(lambda: shared.block_products(requests), device, repeats),
        "retained graph": time_call(lambda: retained.block_products(requests), device, repeats),
        "zero-padded batch": time_call(lambda: padded.block_products(requests), device, repeats),
    }
    t_grad = min(t_grad, time_call(gradient_call(model, loss_fn, data), device, repeats))
    return pd.Series({**{k: t / t_grad for k, t in times.items()}, "blocks": len(resolved),
                      "gradient ms": t_grad * 1e3})


def paper_order_agreement(model: nn.Module, loss_fn: Callable, data: Sequence, blocks=None, *,
                          num_steps: int = 5, seed: int = 0) -> float:
    """Largest relative difference of per-block Ritz values, ours vs the paper's loop order.

    Both use the same probe vectors (each block seeded by ``(seed, block name)``).
    """
    resolved = resolve_blocks(model, blocks)
    ours = blockwise_slq(model, loss_fn, data, resolved, num_steps=num_steps, num_probes=1, seed=seed,
                         progress=False)
    worst = 0.0
    for b in resolved:
        op = HessianOperator(model, loss_fn, data, params=list(b.params), method="reverse",
                             graph_memory_budget=0).restrict(b)
        paper = slq(op, num_steps=num_steps, num_probes=1, seed=block_seed(seed, b.name), progress=False)
        a, c = np.sort(ours[b.name].nodes[0]), np.sort(paper.nodes[0])
        scale = max(float(np.nanmax(np.abs(c))), 1e-30)
        worst = max(worst, float(np.nanmax(np.abs(a - c))) / scale)
    return worst
