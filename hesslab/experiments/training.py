"""Adam(W) vs SGD under the same budget: training runs, learning-rate search, the gap.

A run trains a freshly built model for ``steps`` steps on a deterministic sequence of
batches (``batches[step % len(batches)]``), records the training loss per step, and
keeps the model's state at chosen fractions of training (for spectra over training).
Runs are cached by :mod:`hesslab.storage.cache` and checkpointed every ``checkpoint_every``
steps, so an interrupted run resumes and gives the same result as an uninterrupted one.
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hesslab.storage.cache import CacheFormatError, open_cache
from hesslab.experiments.data import to_device
from hesslab.storage.fingerprint import computation_key
from hesslab.batching import call_model

OPTIMIZERS = ("adamw", "adam-nobc", "sgd", "sgd-plain", "signsgd", "signum")


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


class SignDescent(torch.optim.Optimizer):
    """Sign descent: SignSGD (``momentum=0``: ``w -= lr · sign(g)``) or Signum (Bernstein et al. 2018).

    Signum keeps an exponential moving average ``m ← β m + (1 − β) g`` (``β = momentum``) and
    steps ``w -= lr · sign(m)``; ``m`` starts at 0, so the first step is ``−lr · sign(g)``.
    ``sign(0) = 0``. Weight decay is decoupled: ``w ← (1 − lr · weight_decay) w`` first.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient."""
        for group in self.param_groups:
            beta = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                direction = p.grad
                if beta:
                    state = self.state[p]
                    if not state:
                        state["m"] = torch.zeros_like(p)
                    direction = state["m"].mul_(beta).add_(p.grad, alpha=1 - beta)
                p.add_(torch.sign(direction), alpha=-group["lr"])


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (and its cache key).

    Attributes:
        optimizer: ``"adamw"``, ``"adam-nobc"`` (Adam without bias correction), ``"sgd"`` (with
            momentum), ``"sgd-plain"`` (no momentum), ``"signsgd"`` or ``"signum"`` (:class:`SignDescent`).
        lr: peak learning rate.
        steps: number of updates.
        momentum: SGD momentum (the paper: 0.9); Signum's moving-average coefficient β.
        betas: Adam's (β₁, β₂).
        weight_decay: decoupled for AdamW, L2 for SGD.
        schedule: ``"constant"`` or ``"cosine"`` (decay to 0 after ``warmup`` linear steps).
        warmup: linear warm-up steps.
        clip: gradient-norm clipping (None: off).
        checkpoints: fractions of training at which the model state is kept (0 = initialisation).
        seed: model initialisation seed.
        block_scales: ``((block_name, factor), ...)``: each block's gradient is multiplied by its
            factor after clipping, before the optimiser's step. For SGD with momentum and no
            weight decay this is exactly a learning rate per block (``lr * factor``); with
            weight decay the decay term is not scaled. Empty: every factor 1.
        scale_blocks: the block partition ``block_scales`` names: a preset name of
            :func:`hesslab.resolve_blocks` (e.g. ``"gpt2-qkv"``) or None, one block per parameter tensor.
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
    block_scales: tuple = ()
    scale_blocks: object = None

    def key(self) -> dict:
        """The config as the cache key sees it.

        Block scaling appears only when it is used, so plain runs keep the keys they had before it existed.
        """
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if not self.block_scales:
            del fields["block_scales"], fields["scale_blocks"]
        return fields


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
    if config.optimizer == "sgd-plain":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.0, weight_decay=config.weight_decay)
    if config.optimizer in ("signsgd", "signum"):
        momentum = config.momentum if config.optimizer == "signum" else 0.0
        return SignDescent(params, lr=config.lr, momentum=momentum, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")


def gradient_scales(model: nn.Module, config: TrainConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(parameter, factors)]``: the per-entry gradient factors of ``config.block_scales`` (shape of the parameter).

    Raises:
        ValueError: a named block is not in ``config.scale_blocks`` of ``model``, or a factor is not positive and finite.
    """
    if not config.block_scales:
        return []
    from hesslab.blocks import resolve_blocks

    blocks = {b.name: b for b in resolve_blocks(model, config.scale_blocks)}
    params = dict(model.named_parameters())
    factors: dict[str, torch.Tensor] = {}
    for name, factor in config.block_scales:
        if name not in blocks:
            raise ValueError(f"block_scales names {name!r}, which is not a block of {config.scale_blocks!r}; "
                             f"blocks: {sorted(blocks)[:8]} ...")
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"the gradient factor of block {name!r} must be positive and finite, got {factor!r}")
        for part in blocks[name].parts:
            scale = factors.setdefault(part.param, torch.ones_like(params[part.param], requires_grad=False))
            scale[part.index if part.index is not None else ...] = factor
    return [(params[n], f.detach()) for n, f in factors.items()]


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


# ---------------------------------------------------------------- states on disk
# Model and optimiser states are stored as plain arrays (``t0``, ``t1``, ... in the
# cache's .npz, which numpy reads with allow_pickle=False) and one JSON text
# (``structure``, stored as uint8) that nests them in dicts, lists and scalars.
# Nothing read back can run code: no pickle, no torch.load.

STATE_FORMAT = 1
_TAGS = ("tensor", "dict", "list", "tuple", "float")


def _encode_states(obj) -> dict[str, np.ndarray]:
    """``obj`` (nested dicts/lists/tuples of tensors and scalars) as arrays for the cache."""
    arrays: dict[str, np.ndarray] = {}

    def enc(x, where: str):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().resolve_conj().resolve_neg().contiguous()
            name = f"t{len(arrays)}"
            try:
                arrays[name] = t.numpy()
                raw = False
            except TypeError:  # bfloat16 and friends: their bytes, retyped on load
                arrays[name] = t.reshape(-1).view(torch.uint8).numpy()
                raw = True
            return {"tensor": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "raw": raw}
        if x is None or isinstance(x, (bool, str)) or type(x) is int:
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {"float": repr(x)}
        if isinstance(x, (list, tuple)):
            tag = "tuple" if isinstance(x, tuple) else "list"
            return {tag: [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, dict):
            for k in x:
                if not (k is None or isinstance(k, (bool, str, float)) or type(k) is int):
                    raise TypeError(f"cannot store {where}: key {k!r} of type {type(k).__name__}")
            out = {"dict": [[enc(k, where), enc(v, f"{where}[{k!r}]")] for k, v in x.items()]}
            if getattr(x, "_metadata", None) is not None:  # a model state_dict's module versions
                out["metadata"] = enc(dict(x._metadata), f"{where}._metadata")
            return out
        raise TypeError(f"cannot store {where} of type {type(x).__name__} in a training checkpoint")

    structure = {"format": STATE_FORMAT, "root": enc(obj, "state")}
    text = json.dumps(structure, allow_nan=False, separators=(",", ":"))
    return {"structure": np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **arrays}


def _decode_states(arrays: dict, path):
    """The object :func:`_encode_states` stored; :class:`CacheFormatError` for anything else.

    Only JSON and numeric arrays are read: a file planted by someone else cannot run code.
    """
    def bad(why: str) -> CacheFormatError:
        return CacheFormatError(
            f"{path} does not hold a training checkpoint in hesslab's format ({why}). hesslab never "
            f"unpickles cached files, since a pickle can run code. Delete {path} and its .json record "
            f"(or the whole cache folder) and the run will be recomputed; if you did not write this "
            f"file yourself, do not trust the folder it came from."
        )

    expected = {"structure"} | {f"t{i}" for i in range(len(arrays) - 1)}
    names = set(arrays) - {"losses"}
    if names != expected:
        raise bad(f"arrays {sorted(names)}, expected 'structure' and t0..t{len(expected) - 2}")
    raw = arrays["structure"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise bad("its 'structure' is not JSON text")
    try:
        structure = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise bad(f"its 'structure' is not JSON text: {err}") from None
    if not isinstance(structure, dict) or structure.get("format") != STATE_FORMAT or "root" not in structure:
        raise bad(f"its structure has no 'root' of format {STATE_FORMAT}")

    def dec(x, depth=0):
        if depth > 64:
            raise bad("its structure nests too deeply")
        if x is None or isinstance(x, (bool, str, int, float)):
            return x
        if isinstance(x, list) or not isinstance(x, dict):
            raise bad(f"untagged value {x!r:.60}")
        tag = next((t for t in _TAGS if t in x), None)
        if tag == "tensor":
            return _decode_tensor(x, arrays, bad)
        if tag == "float":
            if x["float"] not in ("nan", "inf", "-inf"):
                raise bad(f"bad float {x['float']!r:.40}")
            return float(x["float"])
        if tag in ("list", "tuple") and isinstance(x[tag], list):
            items = [dec(v, depth + 1) for v in x[tag]]
            return items if tag == "list" else tuple(items)
        if tag == "dict" and isinstance(x["dict"], list):
            out = collections.OrderedDict() if "metadata" in x else {}
            for pair in x["dict"]:
                if not (isinstance(pair, list) and len(pair) == 2) or isinstance(pair[0], (dict, list)):
                    raise bad("a dict entry is not a [scalar key, value] pair")
                out[pair[0]] = dec(pair[1], depth + 1)
            if "metadata" in x:
                meta = dec(x["metadata"], depth + 1)
                if not isinstance(meta, dict):
                    raise bad("a state dict's metadata is not a dict")
                out._metadata = collections.OrderedDict(meta)
            return out
        raise bad(f"unknown entry {sorted(x)[:5]}")

    return dec(structure["root"])


def _decode_tensor(x: dict, arrays: dict, bad) -> torch.Tensor:
    name, dtype_name, shape = x.get("tensor"), x.get("dtype"), x.get("shape")
    if not isinstance(name, str) or name == "structure" or name not in arrays:
        raise bad(f"a tensor refers to a missing array {name!r:.40}")
    dtype = getattr(torch, dtype_name, None) if isinstance(dtype_name, str) and dtype_name.isidentifier() else None
    if not isinstance(dtype, torch.dtype):
        raise bad(f"unknown tensor dtype {dtype_name!r:.40}")
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
        raise bad(f"bad tensor shape {shape!r:.60}")
    a = arrays[name]
    try:
        t = torch.from_numpy(a if a.flags.writeable else a.copy())
        if x.get("raw"):
            t = t.view(dtype).reshape(shape)
        if t.dtype != dtype or list(t.shape) != shape:
            raise ValueError(f"array {name} is {t.dtype} {list(t.shape)}, the structure says {dtype} {shape}")
    except (TypeError, ValueError, RuntimeError) as err:
        raise bad(str(err)) from None
    return t


def _load_states(result, checkpoint: bool = False):
    """The states in a cached training result: ``{fraction: state_dict}``, or a checkpoint's snapshot.

    Raises:
        CacheFormatError: the file does not hold what hesslab writes; names the file to delete.
    """
    arrays = {k: v for k, v in result.arrays.items() if k != "losses"}
    states = _decode_states(arrays, result.path)
    losses = result.arrays.get("losses")
    if losses is None or losses.ndim != 1 or losses.dtype.kind != "f":
        states = None
    elif checkpoint:
        ok = (isinstance(states, dict) and set(states) == {"model", "optimizer", "states", "step"}
              and type(states["step"]) is int and isinstance(states["states"], dict))
        states = states if ok else None
    elif not isinstance(states, dict):
        states = None
    if states is None:
        raise CacheFormatError(
            f"{result.path} does not hold a training {'checkpoint' if checkpoint else 'run'} in hesslab's "
            f"layout (losses, states). Delete {result.path} and its .json record (or the whole cache "
            "folder) and the run will be recomputed."
        )
    return states


def _built_and_stored(build_model, loss_fn, batches, config: TrainConfig, store, cache_key):
    """``(model, key, stored result or None)``: the freshly built model and the run's cache entry."""
    torch.manual_seed(config.seed)
    model = build_model()
    if store is None:
        return model, None, None
    # the built model's initial values and structure are part of the key: a changed
    # initialisation or architecture is a new run
    key = computation_key("train", model=model, loss_fn=loss_fn, data=batches, cache_key=cache_key,
                          config=config.key())
    hit = store.load("train", key)
    return model, key, None if hit is None else TrainResult(config, hit["losses"], _load_states(hit))


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
        cache: ``None``, ``True``, a folder or a :class:`~hesslab.storage.cache.ResultCache`. The run
            is keyed by :func:`hesslab.storage.fingerprint.computation_key`: the freshly built
            model's initial parameter and buffer values and its structure (module
            classes, their source, configuration attributes, a Hugging Face config),
            the loss function's identity (a module-level function by name and source,
            an ``nn.Module`` loss by structure), a hash of ``batches``, every field of
            ``config``, ``cache_key`` and hesslab's version of training. States are
            stored as plain arrays and JSON (never pickled), so a cache folder cannot
            run code when loaded.
        cache_key: optional str-keyed dict added to the key (e.g. the model's name and
            size); required, describing it, for a loss that cannot be identified (a
            lambda, partial, closure, bound method or callable object), else
            :class:`~hesslab.storage.fingerprint.UncacheableError`. ``build_model`` itself
            needs no identity: the model it builds is fingerprinted.
        checkpoint_every: steps between resumable checkpoints (with a cache).
        progress: progress bar.
        device: where to train (default: CPU); checkpoint states are kept on the CPU.

    Returns:
        The :class:`TrainResult`; a diverged run has non-finite losses from the step it diverged.
    """
    if not batches:
        raise ValueError("no batches to train on")
    store = open_cache(cache)
    model, key, hit = _built_and_stored(build_model, loss_fn, batches, config, store, cache_key)
    if hit is not None:
        return hit
    device = torch.device(device or "cpu")
    model = model.to(device).train()
    opt = make_optimizer(config, model.parameters())
    scales = gradient_scales(model, config)
    losses = np.full(config.steps, np.nan)
    states: dict = {}
    marks = {round(f * config.steps): f for f in config.checkpoints}
    start = 0
    if store is not None and (part := store.load_partial("train", key)) is not None:
        saved = _load_states(part, checkpoint=True)
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
        for param, scale in scales:
            if param.grad is not None:
                param.grad.mul_(scale)
        opt.step()
        if store is not None and (step + 1) % checkpoint_every == 0 and step + 1 < config.steps:
            snapshot = {"model": model.state_dict(), "optimizer": opt.state_dict(), "states": states, "step": step + 1}
            store.save_partial("train", key, {"losses": losses, **_encode_states(snapshot)})
    if config.steps in marks:
        states[marks[config.steps]] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    result = TrainResult(config, losses, states)
    if store is not None:
        store.save("train", key, {"losses": losses, **_encode_states(states)})
    return result


#: below this much work (training steps, or Lanczos products, per task) a worker process
#: costs more to start (a fresh interpreter importing torch) than it saves
PARALLEL_MIN_WORK = 200


def default_workers(device=None, work: int | None = None) -> int:
    """Processes for independent CPU tasks: one per core (at most 4); 1 on a GPU or for small ``work``."""
    import os

    if torch.device(device or "cpu").type != "cpu" or (work is not None and work < PARALLEL_MIN_WORK):
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _train_in_worker(threads: int, args: tuple, kwargs: dict) -> tuple:
    """One :func:`train` call in a worker process, with ``threads`` intra-op threads.

    Returns ``(losses, encoded states)``, plain numpy arrays: torch tensors sent back through a
    process pool travel as shared-memory file descriptors, which the parent must fetch from the
    worker's resource sharer, and under load that hand-over can fail (``ConnectionRefusedError``).
    """
    torch.set_num_threads(threads)
    result = train(*args, **kwargs)
    return result.losses, _encode_states(result.states)


def grid_search(build_model, loss_fn, batches, base: TrainConfig, lrs: Sequence[float], *,
                workers: int = 1, **train_kwargs):
    """Train once per learning rate; the best run has the lowest :attr:`TrainResult.final_loss`.

    Args:
        build_model, loss_fn, batches: as for :func:`train`.
        base: the settings shared by every run (its ``lr`` is replaced).
        lrs: the learning rates.
        workers: processes training runs side by side on the CPU (each with
            ``cores // workers`` threads; small models train faster this way than with
            every thread on one run; see :func:`default_workers`). 1 (the default) trains
            in this process. With more, ``build_model`` and ``loss_fn`` must be picklable
            (module-level functions or ``functools.partial`` of them). Runs are seeded and
            cached the same way either way.
        **train_kwargs: ``cache``, ``cache_key``, ``progress``, ``device``, ... of :func:`train`.

    Returns:
        ``(best_result, {lr: result})``.
    """
    configs = {float(lr): TrainConfig(**{**asdict(base), "lr": float(lr)}) for lr in lrs}
    runs: dict = {}
    store = open_cache(train_kwargs.get("cache"))
    if workers > 1 and store is not None:  # stored runs are loaded here, not in a worker
        for lr, c in configs.items():
            hit = _built_and_stored(build_model, loss_fn, batches, c, store, train_kwargs.get("cache_key"))[2]
            if hit is not None:
                runs[lr] = hit
    todo = {lr: c for lr, c in configs.items() if lr not in runs}
    if min(len(todo), workers) <= 1:
        runs |= {lr: train(build_model, loss_fn, batches, c, **train_kwargs) for lr, c in todo.items()}
    else:
        runs |= _parallel_runs(build_model, loss_fn, batches, todo, min(len(todo), workers), train_kwargs)
    runs = {lr: runs[lr] for lr in configs}
    best = min(runs.values(), key=lambda r: r.final_loss)
    if not math.isfinite(best.final_loss):
        raise RuntimeError(f"every learning rate in {list(lrs)} diverged for {base.optimizer}")
    return best, runs


def _parallel_runs(build_model, loss_fn, batches, configs: dict, workers: int, train_kwargs: dict) -> dict:
    """Train ``configs`` in ``workers`` spawned processes (results in learning-rate order)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    store = open_cache(train_kwargs.get("cache"))
    if store is not None:
        train_kwargs = {**train_kwargs, "cache": store.root}  # the resolved folder: the same in every process
    threads = max(1, torch.get_num_threads() // workers)
    progress = train_kwargs.get("progress", True)
    kwargs = {**train_kwargs, "progress": False}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {lr: pool.submit(_train_in_worker, threads, (build_model, loss_fn, batches, c), kwargs)
                   for lr, c in configs.items()}
        bar = tqdm(total=len(futures), desc=f"{next(iter(configs.values())).optimizer} grid ({workers} processes)",
                   disable=not progress, leave=False)
        runs = {}
        for lr, future in futures.items():
            losses, arrays = future.result()
            runs[lr] = TrainResult(configs[lr], losses, _decode_states(arrays, f"the run at lr={lr:g}"))
            bar.update()
        bar.close()
    return runs


def adam_sgd_gap(adam: TrainResult, sgd: TrainResult) -> float:
    """The gap: final training loss of the best SGD run minus that of the best Adam run.

    Positive means SGD is behind. (The paper's Figure 7 y-axis metric is unverified;
    this is the book's definition.)
    """
    return sgd.final_loss - adam.final_loss
