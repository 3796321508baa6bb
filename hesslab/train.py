"""Adam(W) vs SGD under the same budget: training runs, learning-rate search, the gap.

A run trains a freshly built model for ``steps`` steps on a deterministic sequence of
batches (``batches[step % len(batches)]``), records the training loss per step, and
keeps the model's state at chosen fractions of training (for spectra over training).
Runs are cached by :mod:`hesslab.cache` and checkpointed every ``checkpoint_every``
steps, so an interrupted run resumes and gives the same result as an uninterrupted one.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .cache import open_cache
from .data import to_device
from .fingerprint import model_fingerprint
from .hvp import call_model

OPTIMIZERS = ("adamw", "adam-nobc", "sgd")


class AdamNoBiasCorrection(torch.optim.Optimizer):
    """Adam without bias correction (the paper's Algorithm 3): ``w -= lr · m / (√v + eps)``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient."""
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                state["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.addcdiv_(state["m"], state["v"].sqrt().add_(group["eps"]), value=-group["lr"])


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (and its cache key).

    Attributes:
        optimizer: ``"adamw"``, ``"adam-nobc"`` (Adam without bias correction) or ``"sgd"`` (with momentum).
        lr: peak learning rate.
        steps: number of updates.
        momentum: SGD momentum (the paper: 0.9).
        betas: Adam's (β₁, β₂).
        weight_decay: decoupled for AdamW, L2 for SGD.
        schedule: ``"constant"`` or ``"cosine"`` (decay to 0 after ``warmup`` linear steps).
        warmup: linear warm-up steps.
        clip: gradient-norm clipping (None: off).
        checkpoints: fractions of training at which the model state is kept (0 = initialisation).
        seed: model initialisation seed.
    """

    optimizer: str
    lr: float
    steps: int
    momentum: float = 0.9
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    clip: float | None = None
    checkpoints: tuple = ()
    seed: int = 0


@dataclass
class TrainResult:
    """Losses per step and model states at the requested fractions."""

    config: TrainConfig
    losses: np.ndarray
    states: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10 % of steps (inf if the run diverged)."""
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return float(tail.mean()) if np.isfinite(tail).all() else math.inf


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """The optimiser of ``config`` over ``params``."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if config.optimizer == "adam-nobc":
        return AdamNoBiasCorrection(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")


def learning_rate(config: TrainConfig, step: int) -> float:
    """The scheduled learning rate at ``step`` (0-based)."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.5 * config.lr * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {config.schedule!r}; choose 'constant' or 'cosine'")


def _pack(obj) -> np.ndarray:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def _unpack(array: np.ndarray):
    return torch.load(io.BytesIO(array.tobytes()), weights_only=False)


def train(
    build_model: Callable[[], nn.Module],
    loss_fn: Callable,
    batches: Sequence,
    config: TrainConfig,
    *,
    cache=None,
    cache_key: dict | None = None,
    checkpoint_every: int = 100,
    progress: bool = True,
    device=None,
) -> TrainResult:
    """Train a freshly built model with one optimiser.

    Args:
        build_model: returns a new model (called under ``torch.manual_seed(config.seed)``).
        loss_fn: ``loss_fn(outputs, targets)``, a batch mean.
        batches: ``(inputs, targets)`` batches; step ``t`` uses ``batches[t % len(batches)]``.
        config: the run's settings.
        cache: ``None``, ``True``, a folder or a :class:`~hesslab.cache.ResultCache`.
        cache_key: what identifies model and data in the cache (required with ``cache``).
        checkpoint_every: steps between resumable checkpoints (with a cache).
        progress: progress bar.
        device: where to train (default: CPU); checkpoint states are kept on the CPU.

    Returns:
        The :class:`TrainResult`; a diverged run has non-finite losses from the step it diverged.
    """
    if not batches:
        raise ValueError("no batches to train on")
    store = open_cache(cache)
    if store is not None and cache_key is None:
        raise ValueError("pass cache_key={...} describing the model and data when caching a training run")
    torch.manual_seed(config.seed)
    model = build_model()
    # the initial parameters are part of the key: a changed initialisation is a new run
    key = {"run": cache_key, "init": model_fingerprint(model),
           "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}}
    if store is not None and (hit := store.load("train", key)) is not None:
        return TrainResult(config, hit["losses"], _unpack(hit["states"]))
    device = torch.device(device or "cpu")
    model = model.to(device).train()
    opt = make_optimizer(config, model.parameters())
    losses = np.full(config.steps, np.nan)
    states: dict = {}
    marks = {round(f * config.steps): f for f in config.checkpoints}
    start = 0
    if store is not None and (part := store.load_partial("train", key)) is not None:
        saved = _unpack(part["state"])
        model.load_state_dict(saved["model"])  # load_state_dict copies onto the model's device
        opt.load_state_dict(saved["optimizer"])
        states, start = saved["states"], saved["step"]
        losses[:start] = part["losses"][:start]
    for step in tqdm(range(start, config.steps), desc=f"{config.optimizer} lr={config.lr:g}", disable=not progress,
                     leave=False, initial=start, total=config.steps):
        if step in marks:
            states[marks[step]] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        for group in opt.param_groups:
            group["lr"] = learning_rate(config, step)
        inputs, targets = to_device(batches[step % len(batches)], device)
        loss = loss_fn(call_model(model, inputs), targets)
        losses[step] = float(loss.detach())
        if not math.isfinite(losses[step]):
            break  # diverged: the rest stays nan
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        opt.step()
        if store is not None and (step + 1) % checkpoint_every == 0 and step + 1 < config.steps:
            snapshot = {"model": model.state_dict(), "optimizer": opt.state_dict(), "states": states, "step": step + 1}
            store.save_partial("train", key, {"state": _pack(snapshot), "losses": losses})
    if config.steps in marks:
        states[marks[config.steps]] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    result = TrainResult(config, losses, states)
    if store is not None:
        store.save("train", key, {"losses": losses, "states": _pack(states)})
    return result


def grid_search(build_model, loss_fn, batches, base: TrainConfig, lrs: Sequence[float], **train_kwargs):
    """Train once per learning rate; the best run has the lowest :attr:`TrainResult.final_loss`.

    Returns:
        ``(best_result, {lr: result})``.
    """
    runs = {lr: train(build_model, loss_fn, batches, TrainConfig(**{**asdict(base), "lr": float(lr)}),
                      **train_kwargs) for lr in lrs}
    best = min(runs.values(), key=lambda r: r.final_loss)
    if not math.isfinite(best.final_loss):
        raise RuntimeError(f"every learning rate in {list(lrs)} diverged for {base.optimizer}")
    return best, runs


def adam_sgd_gap(adam: TrainResult, sgd: TrainResult) -> float:
    """The gap: final training loss of the best SGD run minus that of the best Adam run.

    Positive means SGD is behind. (The paper's Figure 7 y-axis metric is unverified;
    this is the book's definition.)
    """
    return sgd.final_loss - adam.final_loss
