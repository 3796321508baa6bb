"""The book's pretrained GPT-2: Table 1's "GPT2 (pretrained)" without a download.

The paper measures a GPT-2 pretrained on OpenWebText. The book has no network at run
time, so it pretrains its own GPT-2 (the ``gpt2`` of :mod:`hesslab.experiments.models`, at
the profile's size) with AdamW on the **first half** of its offline text
(:data:`PRETRAINING_TEXT`), and measures the resulting model, registered as
``"gpt2-pretrained"``, on the **second half** (its Hessian batches and its training data
come from there). Pretraining is an ordinary cached training run
(:func:`hesslab.experiments.training.train`): keyed by the fresh model's values and
structure, the batches and every setting, and stored with that provenance in the
results cache (``data/cache/train`` in a source checkout), so it runs once per size and
seed. Settings per profile: :attr:`hesslab.experiments.profiles.Profile.pretraining`.
"""

from __future__ import annotations

import functools

import torch

import hesslab.experiments.training as _train

#: the part of the offline text the pretraining reads; the pretrained model is measured on the other part
PRETRAINING_TEXT = "first-half"

#: the part of the offline text on which ``gpt2-pretrained`` is measured and trained
FINETUNING_TEXT = "second-half"


def pretraining_config(size: str, seed: int) -> _train.TrainConfig:
    """The AdamW run that pretrains GPT-2 at ``size`` from initialisation ``seed``."""
    from hesslab.experiments.profiles import profile

    settings = profile(size).pretraining
    return _train.TrainConfig("adamw", settings["lr"], settings["steps"], betas=tuple(settings["betas"]),
                              weight_decay=settings["weight_decay"], schedule="cosine", warmup=settings["warmup"],
                              clip=settings["clip"], checkpoints=(1.0,), seed=seed)


def pretraining_batches(size: str, seed: int) -> list:
    """The pretraining batches: windows of the first half of the offline text."""
    from hesslab.experiments.batches import model_batches
    from hesslab.experiments.models import build
    from hesslab.experiments.profiles import profile

    settings = profile(size).pretraining
    built = build("gpt2", size, seed=seed, device="meta")  # the input spec only; no weights allocated
    return model_batches(built, settings["num_batches"], settings["batch_size"], seed=seed, text=PRETRAINING_TEXT)


def pretrained_state(size: str, seed: int = 0, *, cache=True, progress: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of GPT-2 at ``size`` after pretraining (trained once, then read from the cache).

    Args:
        size: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        seed: initialisation and data seed of the pretraining.
        cache: where the run is cached (``True``: the default cache; ``None``: recompute).
        progress: progress bar.

    Returns:
        ``{name: tensor}`` on the CPU.

    Raises:
        RuntimeError: the pretraining diverged (non-finite loss).
    """
    from hesslab.experiments.gap import fresh_model
    from hesslab.experiments.models import build

    config = pretraining_config(size, seed)
    loss_fn = build("gpt2", size, seed=seed, device="meta").loss_fn
    run = _train.train(functools.partial(fresh_model, "gpt2", size, seed), loss_fn, pretraining_batches(size, seed),
                       config, cache=cache, cache_key={"model": "gpt2", "size": size, "seed": seed,
                                                       "data": f"batches.model_batches/train/{PRETRAINING_TEXT}"},
                       progress=progress)
    if not torch.isfinite(torch.as_tensor(run.losses)).all():
        raise RuntimeError(f"pretraining GPT-2 ({size}, seed {seed}) diverged; lower the profile's pretraining lr")
    return run.states[1.0]


def load_pretrained(model: torch.nn.Module, size: str, seed: int) -> None:
    """Load the pretrained GPT-2 weights into ``model`` (a freshly built ``gpt2`` at ``size``), in place."""
    device = next(model.parameters()).device
    if device.type == "meta":
        return  # counting parameters: nothing to load
    state = pretrained_state(size, seed)
    model.load_state_dict({k: v.to(device) for k, v in state.items()})
