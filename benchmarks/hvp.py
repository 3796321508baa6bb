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

import pandas as pd
import torch
from torch import nn

from hesslab.experiments.hvp_costs import benchmark_problems, blockwise_step_costs, hvp_costs, paper_order_agreement
from hesslab.experiments.models import lm_loss


class LogitsOnly(nn.Module):
    """A causal LM returning token logits ``[B*T, V]`` (curvlinops wants a module giving a tensor)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, x):
        return self.lm(x).logits.flatten(0, -2)


def curvlinops_methods(model, loss_fn, data) -> dict:
    """curvlinops' HessianLinearOperator as an extra method, if installed (``make bench``)."""
    try:
        from curvlinops import HessianLinearOperator
    except ImportError:
        return {}
    is_lm = loss_fn is lm_loss
    params = [p for p in model.parameters() if p.requires_grad]
    op = HessianLinearOperator(LogitsOnly(model) if is_lm else model, nn.CrossEntropyLoss(), params,
                               [(x, y.flatten()) for x, y in data] if is_lm else data,
                               check_deterministic=False,
                               batch_size_fn=(lambda x: x.numel()) if is_lm else None)
    return {"curvlinops HessianLinearOperator": (lambda v: op @ v, lambda V: op @ V.T.contiguous())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probes", type=int, default=1, help="probes per block in the Lanczos step")
    parser.add_argument("--steps", type=int, default=5, help="Lanczos steps for the agreement check")
    parser.add_argument("--quick", action="store_true", help="a 2-layer, 64-wide GPT-2 (for a fast look)")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"# hesslab HVP benchmark\nmachine: {platform.machine()} {platform.processor() or ''}, "
          f"{platform.system()}; device {device} ({gpu}); torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; float32; TF32 off; fastest of {args.repeats} runs")
    pd.set_option("display.width", 160)
    layers, width = (2, 64) if args.quick else (4, 128)
    models = [(p.name, p.model, p.loss_fn, p.data) for p in benchmark_problems(layers, width, device=device)]
    for name, model, loss_fn, data in models:
        params = sum(p.numel() for p in model.parameters())
        table = hvp_costs(model, loss_fn, data, repeats=args.repeats,
                          extra=curvlinops_methods(model, loss_fn, data))
        print(f"\n## {name}: {params:,} parameters; one gradient {table['gradient ms'].iloc[0]:.1f} ms; "
              "HVP cost in gradients")
        print(table.drop(columns="gradient ms").round(2).to_string())
    name, model, loss_fn, data = models[-1]
    costs = blockwise_step_costs(model, loss_fn, data, probes=args.probes, repeats=args.repeats)
    print(f"\n## One Lanczos step over all {int(costs['blocks'])} blocks of {name}, {args.probes} probe(s), "
          "in gradients")
    for label in ("paper", "shared graph", "retained graph", "zero-padded batch"):
        print(f"{label:<20}{costs[label]:8.1f}x   ({costs['paper'] / costs[label]:.1f}x faster than the paper's order)")
    worst = paper_order_agreement(model, loss_fn, data, num_steps=args.steps)
    print(f"per-block Ritz values after {args.steps} steps, ours vs the paper's order: "
          f"max relative difference {worst:.1e}")


if __name__ == "__main__":
    main()
