"""Benchmark: Hessian-vector products and one blockwise Lanczos step, as multiples of a gradient.

Run: ``python benchmarks/hvp.py [--device cuda] [--repeats 5] [--quick]`` (or ``make bench``).

Everything is measured in one run, on the same model and batch, and printed as a
ratio to the time of one gradient (forward + backward) of that model:

* ours, per method: ``reverse`` on a retained graph (what Lanczos uses: the graph
  is built once and reused), ``forward`` (``jvp`` of ``grad``), single vector and per
  vector over a batch of k = 8;
* double backward that rebuilds the graph for every product (PyHessian and the
  paper's code);
* curvlinops' ``HessianLinearOperator`` if it is installed (``make bench`` installs it);
* one Lanczos step over all blocks of the tiny GPT-2 (one block per tensor):
  ours (one graph per batch shared by every block and probe) vs the paper's
  per-block method (forward + backward + double backward per block, per probe,
  per batch), and the per-block Ritz values of both after a few steps agreeing.

Models: an MLP, a small CNN with batch-norm (eval mode), and a GPT-2 from
``transformers`` with 4 layers, 128 wide, on 8 x 64 tokens (eager attention).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hesslab import HessianOperator, blockwise_slq, resolve_blocks, slq
from hesslab.slq import _block_seed


def lm_loss(outputs, targets):
    return F.cross_entropy(outputs.logits.flatten(0, -2), targets.flatten())


def build_models(device: torch.device, quick: bool):
    """(name, model, loss_fn, data) for the three model families, float32."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    mlp_data = [(torch.randn(128, 256, generator=g), torch.randint(0, 10, (128,), generator=g))]
    cnn = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    )
    cnn_data = [(torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))]
    from transformers import GPT2Config, GPT2LMHeadModel

    layers, width = (2, 64) if quick else (4, 128)
    config = GPT2Config(vocab_size=96, n_positions=64, n_embd=width, n_layer=layers, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    gpt = GPT2LMHeadModel._from_config(config, attn_implementation="eager")
    tokens = torch.randint(0, 96, (8, 65), generator=g)
    gpt_data = [(tokens[:, :-1], tokens[:, 1:])]
    out = []
    for name, model, loss, data in [("MLP", mlp, F.cross_entropy, mlp_data),
                                    ("CNN+BN", cnn, F.cross_entropy, cnn_data),
                                    (f"GPT-2 {layers}x{width}", gpt, lm_loss, gpt_data)]:
        model.to(device).eval()
        data = [(x.to(device), y.to(device)) for x, y in data]
        out.append((name, model, loss, data))
    return out


def timeit(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` in seconds (one warm-up call, CUDA synchronised)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gradient_fn(model, loss_fn, data):
    params = [p for p in model.parameters() if p.requires_grad]

    def run():
        for x, y in data:
            out = model(x)
            torch.autograd.grad(loss_fn(out, y), params)
    return run


class LogitsOnly(nn.Module):
    """A causal LM returning token logits ``[B*T, V]`` (curvlinops wants a module giving a tensor)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, x):
        return self.lm(x).logits.flatten(0, -2)


def curvlinops_fn(model, loss_fn, data, v):
    """curvlinops' HessianLinearOperator applied to v, or None if not installed."""
    try:
        from curvlinops import HessianLinearOperator
    except ImportError:
        return None
    is_lm = loss_fn is lm_loss
    model_func = LogitsOnly(model) if is_lm else model
    cl_data = [(x, y.flatten()) for x, y in data] if is_lm else data
    params = [p for p in model.parameters() if p.requires_grad]
    op = HessianLinearOperator(model_func, nn.CrossEntropyLoss(), params, cl_data,
                               check_deterministic=False,
                               batch_size_fn=(lambda x: x.shape[0] * x.shape[1]) if is_lm else None)
    return lambda: op @ v


def hvp_table(models, device, repeats, k=8):
    print(f"\n## One Hessian-vector product, in gradients (k = {k} for the per-vector column)")
    print(f"{'model':<16}{'params':>10}{'grad ms':>9}  {'method':<34}{'1 vector':>9}{'per vector':>11}")
    for name, model, loss_fn, data in models:
        t_grad = timeit(gradient_fn(model, loss_fn, data), device, repeats)
        dim = sum(p.numel() for p in model.parameters())
        v = torch.randn(dim, device=device)
        V = torch.randn(k, dim, device=device)
        rows = []
        retained = HessianOperator(model, loss_fn, data, method="reverse")
        rows.append(("ours reverse, retained graph (default)", lambda: retained @ v, lambda: retained @ V))
        forward = HessianOperator(model, loss_fn, data, method="forward")
        rows.append(("ours forward, jvp(grad) + vmap", lambda: forward @ v, lambda: forward @ V))
        rebuilt = HessianOperator(model, loss_fn, data, method="reverse", graph_memory_budget=0)
        rows.append(("double backward, graph rebuilt", lambda: rebuilt @ v, lambda: [rebuilt @ u for u in V]))
        cl = curvlinops_fn(model, loss_fn, data, v)
        if cl is not None:
            cl_batched = curvlinops_fn(model, loss_fn, data, V.T.contiguous())
            rows.append(("curvlinops HessianLinearOperator", cl, cl_batched))
            err = ((cl().flatten() - retained @ v).norm() / (retained @ v).norm()).item()
        for j, (label, one, many) in enumerate(rows):
            t1 = timeit(one, device, repeats) / t_grad
            tk = timeit(many, device, repeats) / t_grad / k
            head = f"{name:<16}{dim:>10,}{t_grad * 1e3:>9.1f}" if j == 0 else " " * 35
            print(f"{head}  {label:<34}{t1:>8.2f}x{tk:>10.2f}x")
        if cl is not None:
            print(" " * 37 + f"(curvlinops vs ours: relative difference {err:.1e})")


def paper_block_step(model, loss_fn, data, blocks, vectors):
    """The paper's loop order: per block and probe, a fresh forward, backward and double backward."""
    out = []
    for block, V in zip(blocks, vectors):
        op = HessianOperator(model, loss_fn, data, params=list(block.params), method="reverse",
                             graph_memory_budget=0).restrict(block)
        out.append(torch.stack([op @ v for v in V]))
    return out


def blockwise_table(models, device, repeats, probes, steps):
    name, model, loss_fn, data = models[-1]
    blocks = resolve_blocks(model, None)
    op = HessianOperator(model, loss_fn, data, method="reverse")
    vectors = [torch.randn(probes, op.block_dim(b), device=device) for b in blocks]
    requests = list(zip(blocks, vectors))
    t_grad = timeit(gradient_fn(model, loss_fn, data), device, repeats)
    cold = HessianOperator(model, loss_fn, data, method="reverse", graph_memory_budget=0)
    t_paper = timeit(lambda: paper_block_step(model, loss_fn, data, blocks, vectors), device, max(1, repeats // 2))
    t_cold = timeit(lambda: cold.block_products(requests), device, repeats)
    t_warm = timeit(lambda: op.block_products(requests), device, repeats)
    print(f"\n## One Lanczos step over all {len(blocks)} blocks of {name}, {probes} probes, in gradients")
    print(f"paper's per-block method (fresh graph per block/probe): {t_paper / t_grad:8.1f}x")
    print(f"ours, one graph built for the step, shared:             {t_cold / t_grad:8.1f}x  "
          f"({t_paper / t_cold:.1f}x faster)")
    print(f"ours, graph retained across steps (Lanczos default):    {t_warm / t_grad:8.1f}x  "
          f"({t_paper / t_warm:.1f}x faster)")
    # The two loop orders compute the same spectra: compare Ritz values after a few steps.
    ours = blockwise_slq(model, loss_fn, data, None, num_steps=steps, num_probes=1, seed=0, progress=False)
    worst = 0.0
    for i, b in enumerate(blocks):
        op_b = HessianOperator(model, loss_fn, data, params=list(b.params), method="reverse",
                               graph_memory_budget=0).restrict(b)
        paper = slq(op_b, num_steps=steps, num_probes=1, seed=_block_seed(0, i), progress=False)
        a, c = ours[b.name].nodes[0], paper.nodes[0]
        scale = max(np.nanmax(np.abs(c)), 1e-30)
        worst = max(worst, float(np.nanmax(np.abs(np.sort(a) - np.sort(c))) / scale))
    print(f"per-block Ritz values after {steps} steps, ours vs paper order: max relative difference {worst:.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probes", type=int, default=1, help="probes per block in the Lanczos step")
    parser.add_argument("--steps", type=int, default=5, help="Lanczos steps for the agreement check")
    parser.add_argument("--quick", action="store_true", help="a 2-layer, 64-wide GPT-2 (for a fast look)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"# hesslab HVP benchmark\nmachine: {platform.machine()} {platform.processor() or ''}, "
          f"{platform.system()}; device {device} ({gpu}); torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; float32; median of {args.repeats}")
    models = build_models(device, args.quick)
    hvp_table(models, device, args.repeats)
    blockwise_table(models, device, args.repeats, args.probes, args.steps)


if __name__ == "__main__":
    main()
