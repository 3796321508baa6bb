"""``hesslab diagnose``: block heterogeneity of anyone's model, with a verdict and its evidence.

    python -m hesslab diagnose MODEL [--data PATH] [--blocks ...] [--out DIR] [--device cpu]
                                     [--seed N] [--probes N] [--steps N] [--batches N]
                                     [--profile smoke|cpu|paper] [--dtype float32|float64]
                                     [--base-lr LR] [--no-cache] [--dry-run]
                                     [--collective-timeout SECONDS]
    torchrun --standalone --nproc_per_node N -m hesslab diagnose MODEL ...

or, from Python, :func:`diagnose` with the same arguments. ``MODEL`` is

1. a name of the book's model registry (:data:`hesslab.experiments.models.NAMES`), built at
   ``--profile`` (default ``smoke``) with seed ``--seed``; without ``--data`` it is measured
   on the book's own Hessian batches for that model (offline text or digits), as Table 1;
2. a local Hugging Face checkpoint directory (``save_pretrained``: ``config.json`` plus
   weights), loaded with ``local_files_only=True`` and ``attn_implementation="eager"``
   (fused SDPA/flash kernels have no double backward). Supported heads, by the
   ``architectures`` entry of ``config.json``: causal LM (``*ForCausalLM``,
   ``*LMHeadModel``: next-token cross-entropy), masked LM (``*ForMaskedLM``: cross-entropy
   on 15 % of positions, the tokens themselves kept unmasked), sequence and image
   classification (``*ForSequenceClassification``, ``*ForImageClassification``:
   cross-entropy of the logits). Anything else: write a Python file (3);
3. a Python file defining ``model`` (an ``nn.Module``), ``loss_fn(outputs, targets)`` (a
   scalar, the batch mean) and optionally ``data`` (a list of ``(inputs, targets)``
   batches) and ``blocks`` (a block specification of :func:`hesslab.resolve_blocks`).

``--data`` is a ``.pt`` file holding a list of ``(inputs, targets)`` batches
(``torch.save``); ``--batches N`` keeps its first ``N``. Without data, a Hugging Face model
is measured on **random inputs drawn from its configuration** (token ids uniform over the
vocabulary, or standard-normal images of its shape, uniform labels): the report says so
in its first lines, and such a Hessian describes the model on noise, not on your data.

What it computes, with the core of :mod:`hesslab` (cached and resumable through
:func:`hesslab.storage.cached.blockwise_slq` unless ``--no-cache``):

- the blocks: ``--blocks`` (parameter names, a preset of :mod:`hesslab.blocks`, or ``all``
  for one block per tensor), else the blocks the book compares (:func:`default_blocks`:
  the paper's GPT-2 / ViT presets, otherwise every weight matrix or convolution kernel
  with at least :data:`~hesslab.experiments.heterogeneity.MIN_BLOCK_DIM` entries);
- every block's spectrum by blockwise SLQ (``--steps`` Lanczos steps, ``--probes`` probes;
  defaults 20 and 4, the ``cpu`` profile's settings under which :data:`THRESHOLD` was
  measured); per block λ_max (the largest Ritz value) and λ₁₀ (the 10th largest
  eigenvalue estimated from the quadrature weights, :meth:`hesslab.SpectralDensity.kth_largest`);
- the JS matrix and JS⁰ under the book's headline variant (:data:`JS_VARIANT`, the
  log10|λ| axis, see :mod:`hesslab.experiments.heterogeneity`), and an error bar: JS⁰
  recomputed from each probe alone, mean ± sd over probes;
- per-block gradient norms and their disparity (:mod:`hesslab.gradients`; coefficient of
  variation and log10 spread, the book's choice for Tomihari & Sato's Definition 4.4);
- the verdict (:func:`verdict`): ``"heterogeneous"`` when JS⁰ − sd > :data:`THRESHOLD`,
  ``"homogeneous"`` when JS⁰ + sd < :data:`THRESHOLD`, else ``"inconclusive"``, and, for a
  heterogeneous model, per-block learning rates ``lr_b = base · λ_max,stiffest / λ_max,b``
  (the stiffest block gets ``base``; default ``base = 1/λ_max,stiffest``, half the
  stability limit 2/λ of gradient descent on a quadratic).

Under ``torchrun`` (``WORLD_SIZE`` > 1) the ranks join a process group (gloo on CPUs, NCCL
with ``--device cuda``, each rank on ``cuda:LOCAL_RANK``; collectives time out after
``--collective-timeout`` seconds) and the Hessian batches are sharded round robin
(:func:`hesslab.shard`): every Hessian-vector product is the mean over all ranks' batches
(:mod:`hesslab.distributed`), so the spectra, JS⁰ and verdict are the single-process ones,
computed in parallel. The gradient norms are computed on all batches by every rank (one
gradient pass). Rank 0 alone prints, uses the result cache (keyed by every rank's shard)
and writes the outputs; the report records the world size.

Before anything is computed the plan is printed (:func:`hesslab.plan`: HVPs, memory, time on
this machine); ``--dry-run`` stops there (the plan's calibration, one gradient and one
Hessian-vector product, is all it computes; nothing is written).

Outputs, in ``--out`` (default ``diagnose-<model name>/``), written to a temporary folder
beside it and renamed into place, so a failed run leaves nothing behind: ``report.json``,
``report.html`` (self-contained, figures as base64 PNG) and ``summary.png`` (figures need
matplotlib, extra ``[book]``; without it only the JSON and a text-only HTML are written).

``report.json`` (schema ``"hesslab.diagnose/1"``; a field is added, never renamed, within
one schema version; non-finite numbers are ``null``):

- ``schema``, ``hesslab_version``, ``created_utc``;
- ``model``: ``name``, ``source`` (``"registry"``, ``"huggingface"``, ``"python-file"``),
  ``path`` (or null), ``profile`` (registry only), ``class``, ``parameters`` (all),
  ``dtype``, ``device``, ``loss`` (in words);
- ``data``: ``source`` (``"book"``, ``"file"``, ``"caller"``, ``"module"``, ``"synthetic"``), ``synthetic``
  (bool), ``description``, ``batches``, ``examples``;
- ``settings``: ``num_steps``, ``num_probes``, ``seed``, ``blocks`` (the specification, as
  text), ``js_variant``, ``js_options``, ``base_lr`` (as given, or null), ``cache`` (bool);
- ``plan``: :meth:`hesslab.CostPlan.as_dict` (``products`` are HVPs, ``peak_bytes``,
  ``seconds``);
- ``blocks``: one object per block, in block order: ``name``, ``dim``, ``lambda_max``,
  ``lambda_10`` (null for a block with fewer than 10 entries), ``lambda_min``,
  ``gradient_norm``, ``zero_gradient_fraction`` (entries with exactly zero gradient on
  every batch, :func:`hesslab.zero_gradient_fractions`), ``suggested_lr`` (null unless the verdict is heterogeneous and
  λ_max > 0);
- ``js``: ``variant``, ``names``, ``matrix`` (``[B][B]``, symmetric, zero diagonal);
- ``js0``: ``value`` (all probes together, the verdict's number), ``per_probe`` (list),
  ``probe_mean``, ``probe_sd`` (the error bar, ``ddof=1``; 0 with one probe);
- ``gradient_heterogeneity``: ``cv``, ``log10_spread``, ``steepest``, ``flattest``;
- ``curvature_spread``: ``log10(max λ_max / min λ_max)`` over blocks with λ_max > 0;
- ``verdict``: ``label``, ``text`` (one sentence), ``threshold``, ``rule``, ``calibration``
  (the book's measurements the threshold comes from), ``base_lr``, ``stiffest_block``;
- ``timings_s``: ``plan``, ``gradients``, ``spectra``, ``total``;
- ``figures``: file names written (``[]`` without matplotlib), ``figures_note``;
- ``notes``: plain sentences (where the data came from, blocks the data do not reach
  (more than 5 % zero-gradient entries), a result not cached).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import hashlib
import html
import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import hesslab
from hesslab.blocks import resolve_blocks
from hesslab.diagnostics import zero_gradient_fractions
from hesslab.distributed import DistributedError, resolve_group, shard
from hesslab.errors import NonFiniteError, UnsupportedAutogradError
from hesslab.gradients import block_gradient_norms, gradient_heterogeneity
from hesslab.experiments.rescue import MAX_FACTOR, block_factors
from hesslab.js import js0, js_matrix, shared_densities
from hesslab.plan import plan as cost_plan
from hesslab.spectra import SpectralDensity

SCHEMA = "hesslab.diagnose/1"

#: the JS⁰ variant of the verdict: the book's headline (log10|λ| axis, shared max, one-decade smoothing)
JS_VARIANT = "log"

#: the book's measurements the threshold is set from: JS⁰ (log variant) of the Table 1 models at
#: initialisation, ``cpu`` profile (20 Lanczos steps, 4 probes, float32, the book's Hessian
#: batches), seeds 0, 1, 2, read from the book's result cache: family -> (smallest, largest).
#: CNNs: ResNet-18 0.114/0.129/0.128, VGG-16 0.088/0.080/0.083; Transformers: BERT
#: 0.341/0.325/0.335, GPT-2 0.333/0.328/0.302, ViT 0.366/0.278/0.264, GPT-2-nano
#: 0.300/0.316/0.287; the MLP-mixer (heterogeneous in the paper) 0.215/0.217/0.218
CALIBRATION = {"cnn": (0.080, 0.129), "transformer": (0.264, 0.366), "mixer": (0.215, 0.218)}

#: JS⁰ threshold between block-homogeneous and block-heterogeneous: the geometric mean of the
#: largest CNN value (0.129) and the smallest Transformer value (0.264) of :data:`CALIBRATION`,
#: √(0.129 · 0.264) ≈ 0.185, rounded down to 0.18 (a factor of about 1.4 from either side; the
#: MLP-mixer, 0.22, falls on the heterogeneous side, as in the paper)
THRESHOLD = 0.18

#: Lanczos settings under which :data:`THRESHOLD` was measured (the ``cpu`` profile's blockwise ones)
DEFAULT_STEPS, DEFAULT_PROBES = 20, 4

#: seconds a rank waits for the others in a collective under torchrun before it fails
DEFAULT_COLLECTIVE_TIMEOUT = 600.0

#: a block whose rate reaches this multiple of the base (the cap of the book's rule) is named: it is
#: nearly flat, and 1/λ_max is no guide there
FLAT_RATIO = MAX_FACTOR

#: a block with a larger fraction of exactly-zero gradient entries is named in the notes
#: (:func:`hesslab.zero_gradient_fractions`; the book's zoo is tested against the same 5 %)
ZERO_GRADIENT_NOTE = 0.05

#: synthetic data: batches, sequences (or images) per batch, and the longest sequence
DEFAULT_BATCHES, SYNTHETIC_TEXT_BATCH, SYNTHETIC_IMAGE_BATCH, SYNTHETIC_SEQ = 2, 8, 32, 32

#: files a ``save_pretrained`` checkpoint keeps its weights in
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")

#: architecture-name endings -> (task, loss in words)
HEADS = (
    (("ForCausalLM", "LMHeadModel"), "causal-lm", "next-token cross-entropy"),
    (("ForMaskedLM",), "masked-lm", "masked-LM cross-entropy on 15 % of positions"),
    (("ForSequenceClassification",), "sequence-classification", "cross-entropy of the class logits"),
    (("ForImageClassification",), "image-classification", "cross-entropy of the class logits"),
)


class DiagnoseError(Exception):
    """A problem the user can fix, in one line saying what to do (the CLI exits with code 2)."""


@dataclass
class Target:
    """A model to diagnose with everything measuring it needs.

    Attributes:
        name: short name (output folder, report title).
        source: ``"registry"``, ``"huggingface"`` or ``"python-file"``.
        model: the network.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        loss: the loss in words.
        blocks: the default block specification.
        data: batches shipped with the model (book data, a module's ``data``) or None.
        data_source: where ``data`` comes from (``"book"``, ``"module"``).
        inputs: an input specification to draw synthetic batches from (or None).
        path: the checkpoint or file (or None).
        profile: the registry profile (or None).
        data_description: what ``data`` is, in words.
        notes: sentences for the report.
    """

    name: str
    source: str
    model: nn.Module
    loss_fn: object
    loss: str
    blocks: object = None
    data: list | None = None
    data_source: str | None = None
    inputs: dict | None = None
    path: str | None = None
    profile: str | None = None
    data_description: str = ""
    notes: list = field(default_factory=list)


# ----------------------------------------------------------------------------- loading


def load_target(model: str, *, profile: str = "smoke", seed: int = 0, dtype: torch.dtype | None = None,
                device: str = "cpu") -> Target:
    """Resolve ``MODEL`` (registry name, Hugging Face directory or Python file) into a :class:`Target`.

    Args:
        model: the registry name or path.
        profile: registry models: the size to build.
        seed: registry models: initialisation seed; also the seed of their book data.
        dtype: parameter dtype (None: float32 for registry and Hugging Face models, a
            Python file's model as it is).
        device: where the model lives.

    Raises:
        DiagnoseError: unknown name, missing path, unreadable or unsupported checkpoint.
    """
    path = Path(model).expanduser()
    if path.exists():
        if path.is_dir():
            target = _load_huggingface(path, dtype or torch.float32)
        elif path.suffix == ".py":
            target = _load_python_file(path)
            if dtype is not None:
                target.model = target.model.to(dtype=dtype)
        else:
            raise DiagnoseError(f"{model!r} is neither a checkpoint directory nor a .py file; pass a registry "
                                "name, a save_pretrained directory or a Python file defining model and loss_fn")
    else:
        from hesslab.experiments.models import NAMES

        if model not in NAMES:
            raise DiagnoseError(f"unknown model {model!r}: no such file or directory, and not a registry name "
                                f"({', '.join(NAMES)}); pass one of those or an existing path")
        target = _load_registry(model, profile, seed, dtype or torch.float32, device)
    target.model = target.model.to(device=device)
    return target


def _load_registry(name: str, profile: str, seed: int, dtype: torch.dtype, device: str) -> Target:
    """A model of the book's registry at ``profile``, with the book's Hessian batches for it."""
    from hesslab.experiments.batches import hessian_batches
    from hesslab.experiments.heterogeneity import sampled_blocks
    from hesslab.experiments.models import SIZES, build, spec
    from hesslab.experiments.profiles import profile as get_profile

    if profile not in SIZES:
        raise DiagnoseError(f"unknown profile {profile!r}; choose one of {', '.join(SIZES)}")
    built = build(name, profile, seed=seed, dtype=dtype, device=device)
    data = hessian_batches(built, get_profile(profile).blockwise, seed=seed)
    kind = spec(name).input_kind
    what = {"tokens": "character-level text (CPython's documentation)", "masked-tokens": "masked character-level text",
            "images": "scikit-learn's digits as images", "vectors": "scikit-learn's digits as vectors"}[kind]
    return Target(name, "registry", built.model, built.loss_fn, built.loss_fn.__name__.replace("_", " "),
                  blocks=sampled_blocks(name, built), data=data, data_source="book", inputs=built.inputs,
                  profile=profile, data_description=f"the book's Hessian batches for {name} ({what}), as Table 1")


def _task(architecture: str) -> tuple[str, str]:
    for endings, task, loss in HEADS:
        if architecture.endswith(endings):
            return task, loss
    raise DiagnoseError(f"unsupported architecture {architecture or '(none in config.json)'!r}: diagnose supports "
                        "causal LM, masked LM, sequence and image classification heads; for anything else write "
                        "a Python file defining model and loss_fn")


def _load_huggingface(path: Path, dtype: torch.dtype) -> Target:
    """A ``save_pretrained`` checkpoint, eager attention, with the loss of its head."""
    if not (path / "config.json").exists():
        raise DiagnoseError(f"{path} is a directory without config.json: not a Hugging Face checkpoint; save the "
                            "model with model.save_pretrained(DIR) or pass a Python file")
    if not any((path / f).exists() for f in WEIGHT_FILES):
        raise DiagnoseError(f"checkpoint without weights: {path} has config.json but none of {', '.join(WEIGHT_FILES)}; "
                            "save it with model.save_pretrained(DIR)")
    try:
        import transformers
    except ImportError as e:
        raise DiagnoseError("Hugging Face checkpoints need transformers: pip install 'hesslab[experiments]'") from e
    from hesslab.experiments.models import classification_loss, lm_loss, mlm_loss

    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    architecture = (getattr(config, "architectures", None) or [""])[0]
    task, loss = _task(architecture)
    auto = {"causal-lm": transformers.AutoModelForCausalLM, "masked-lm": transformers.AutoModelForMaskedLM,
            "sequence-classification": transformers.AutoModelForSequenceClassification,
            "image-classification": transformers.AutoModelForImageClassification}[task]
    try:
        model = auto.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    except (ValueError, ImportError) as e:
        if "eager" in str(e) or "attn_implementation" in str(e):
            raise DiagnoseError(f"{architecture} cannot run with attn_implementation='eager' ({_one_line(e)}); fused "
                                "SDPA/flash kernels have no double backward: wrap the model in a Python file with a "
                                "plain PyTorch attention") from e
        raise DiagnoseError(f"cannot load {path}: {_one_line(e)}") from e
    model = model.to(dtype=dtype).eval()
    loss_fn = {"causal-lm": lm_loss, "masked-lm": mlm_loss}.get(task, classification_loss)
    if task == "image-classification":
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        inputs = {"kind": "images", "channels": config.num_channels, "size": size, "classes": config.num_labels}
    else:
        limits = [getattr(config, n) for n in ("n_positions", "max_position_embeddings", "n_ctx")
                  if isinstance(getattr(config, n, None), int)]
        longest = min(limits) if limits else SYNTHETIC_SEQ + 1
        inputs = {"kind": {"causal-lm": "tokens", "masked-lm": "masked-tokens"}.get(task, "token-classes"),
                  "vocab": config.vocab_size, "seq": min(SYNTHETIC_SEQ, longest - 1 if task == "causal-lm" else longest),
                  "classes": getattr(config, "num_labels", None)}
    return Target(path.resolve().name, "huggingface", model, loss_fn, loss, blocks=_hf_blocks(config),
                  inputs=inputs, path=str(path))


def _hf_blocks(config):
    """The book's presets for the architectures the paper measured, else None (weight matrices)."""
    return {"gpt2": "gpt2-paper", "vit": "vit-paper"}.get(getattr(config, "model_type", None))


def _load_python_file(path: Path) -> Target:
    """A Python file defining ``model``, ``loss_fn`` and optionally ``data`` and ``blocks``."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"hesslab_user_model_{digest}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # classes and functions find their source (cache keys)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise DiagnoseError(f"running {path} failed: {type(e).__name__}: {_one_line(e)}") from e
    model, loss_fn = getattr(module, "model", None), getattr(module, "loss_fn", None)
    if not isinstance(model, nn.Module) or not callable(loss_fn):
        raise DiagnoseError(f"{path} must define `model` (an nn.Module) and `loss_fn(outputs, targets)`; "
                            f"found model={type(model).__name__}, loss_fn={type(loss_fn).__name__}")
    data = getattr(module, "data", None)
    return Target(path.stem, "python-file", model, loss_fn, f"{getattr(loss_fn, '__name__', 'loss_fn')} "
                  f"(from {path.name})", blocks=getattr(module, "blocks", None),
                  data=list(data) if data is not None else None, data_source="module" if data is not None else None,
                  path=str(path), data_description=f"`data` of {path.name}")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


# -------------------------------------------------------------------------------- data


def load_data(path: str | Path) -> list:
    """A ``.pt`` file holding a list of ``(inputs, targets)`` batches (``torch.save``).

    Args:
        path: the file.

    Raises:
        DiagnoseError: missing file, or not a non-empty list of pairs.
    """
    path = Path(path)
    if not path.exists():
        raise DiagnoseError(f"data file {path} does not exist; pass a .pt file saved with "
                            "torch.save([(inputs, targets), ...], PATH)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DiagnoseError(f"cannot read {path} as a torch.save file of tensors: {_one_line(e)}") from e
    if not (isinstance(data, (list, tuple)) and data and all(isinstance(b, (list, tuple)) and len(b) == 2
                                                              for b in data)):
        raise DiagnoseError(f"{path} must hold a non-empty list of (inputs, targets) batches")
    return [tuple(b) for b in data]


def synthetic_batches(inputs: dict, num_batches: int, seed: int, dtype: torch.dtype) -> list:
    """Random batches from an input specification (token ids uniform over the vocabulary, Gaussian images).

    Args:
        inputs: ``{"kind": "tokens" | "masked-tokens" | "token-classes", "vocab", "seq"[, "classes"]}``
            or ``{"kind": "images", "channels", "size", "classes"}`` or
            ``{"kind": "vectors", "features", "classes"}``.
        num_batches: batches to draw.
        seed: the generator's seed.
        dtype: dtype of floating inputs.

    Returns:
        A list of ``(inputs, targets)``; text inputs are ``{"input_ids": [B, T]}``.
    """
    g = torch.Generator().manual_seed(seed)
    kind, out = inputs["kind"], []
    for _ in range(num_batches):
        if kind in ("tokens", "masked-tokens", "token-classes"):
            ids = torch.randint(0, inputs["vocab"], (SYNTHETIC_TEXT_BATCH, inputs["seq"] + 1), generator=g)
            if kind == "tokens":
                out.append(({"input_ids": ids[:, :-1]}, ids[:, 1:]))
            elif kind == "masked-tokens":
                x, labels = ids[:, :-1], ids[:, :-1].clone()
                masked = torch.rand(x.shape, generator=g) < 0.15
                masked[:, 0] = True
                labels[~masked] = -100
                out.append(({"input_ids": x}, labels))
            else:
                out.append(({"input_ids": ids[:, :-1]},
                            torch.randint(0, inputs["classes"], (SYNTHETIC_TEXT_BATCH,), generator=g)))
        elif kind == "images":
            x = torch.randn(SYNTHETIC_IMAGE_BATCH, inputs["channels"], inputs["size"], inputs["size"],
                            generator=g, dtype=dtype)
            out.append((x, torch.randint(0, inputs["classes"], (SYNTHETIC_IMAGE_BATCH,), generator=g)))
        elif kind == "vectors":
            x = torch.randn(SYNTHETIC_IMAGE_BATCH, inputs["features"], generator=g, dtype=dtype)
            out.append((x, torch.randint(0, inputs["classes"], (SYNTHETIC_IMAGE_BATCH,), generator=g)))
        else:
            raise DiagnoseError(f"cannot draw inputs of kind {kind!r}; pass --data")
    return out


def _describe_synthetic(inputs: dict) -> str:
    if inputs["kind"] == "images":
        return (f"RANDOM INPUTS, not real data: standard-normal images {inputs['channels']}×{inputs['size']}×"
                f"{inputs['size']} with uniform labels over {inputs['classes']} classes")
    if inputs["kind"] == "vectors":
        return f"RANDOM INPUTS, not real data: standard-normal vectors of {inputs['features']} features"
    return (f"RANDOM INPUTS, not real data: token ids uniform over the vocabulary of {inputs['vocab']}, "
            f"sequences of {inputs['seq']}")


# ------------------------------------------------------------------------------ blocks


def default_blocks(model: nn.Module, preset=None) -> object:
    """The blocks the book compares: ``preset`` where given, else every weight tensor with ≥ 2 dims and ≥ 16 entries.

    Args:
        model: the network.
        preset: a block specification chosen by the loader (a preset name or a list), or None.
    """
    from hesslab.experiments.heterogeneity import MIN_BLOCK_DIM

    if preset is not None:
        return preset
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and p.numel() >= MIN_BLOCK_DIM]
    return names


def _parse_blocks(model: nn.Module, given, default):
    """``--blocks``: None (default), ``["all"]`` (one per tensor), one preset name, or parameter names."""
    if not given:
        return default_blocks(model, default), True
    if list(given) == ["all"]:
        return None, False
    if len(given) == 1 and given[0] in ("per-tensor", "gpt2-qkv", "gpt2-heads", "gpt2-paper", "vit-paper"):
        return given[0], False
    known = {n for n, _ in model.named_parameters()}
    unknown = [g for g in given if g not in known]
    if unknown:
        raise DiagnoseError(f"--blocks names parameters the model does not have: {', '.join(unknown[:5])}; "
                            "see model.named_parameters() or pass 'all'")
    return list(given), False


# ------------------------------------------------------------------------------ verdict


def verdict(value: float, sd: float, threshold: float = THRESHOLD) -> str:
    """The margin rule: ``"heterogeneous"`` when ``value − sd > threshold``, ``"homogeneous"`` when ``value + sd < threshold``.

    Args:
        value: JS⁰ (the book's headline variant).
        sd: its error bar (standard deviation over single-probe estimates).
        threshold: the JS⁰ between the two (default :data:`THRESHOLD`).

    Returns:
        ``"heterogeneous"``, ``"homogeneous"`` or ``"inconclusive"``.
    """
    if value - sd > threshold:
        return "heterogeneous"
    if value + sd < threshold:
        return "homogeneous"
    return "inconclusive"


def suggested_learning_rates(lambda_max: dict[str, float], base_lr: float | None = None) -> tuple[dict, float, str]:
    """Per-block learning rates ``lr_b = base · factor_b``: the rule the book tests in its rescue chapter.

    ``factor_b = λ_max,stiffest / λ_max,b``, capped at
    :data:`hesslab.experiments.rescue.MAX_FACTOR` for blocks flatter than that (and for blocks
    whose largest eigenvalue is not positive), as :func:`hesslab.experiments.rescue.block_factors`.

    Args:
        lambda_max: ``{block: λ_max}``.
        base_lr: the stiffest block's rate; default ``1/λ_max,stiffest`` (half of gradient
            descent's stability limit 2/λ on a quadratic).

    Returns:
        ``({block: lr or None}, base, stiffest block)``; every rate is None when no block has
        positive curvature, and a block with a non-finite λ_max gets None.
    """
    import pandas as pd

    finite = pd.Series({n: v for n, v in lambda_max.items() if math.isfinite(v)}, dtype=float)
    if finite.empty or not finite.max() > 0:
        return {n: None for n in lambda_max}, float("nan"), ""
    stiffest = str(finite.idxmax())
    base = 1.0 / finite.max() if base_lr is None else float(base_lr)
    factors = block_factors(finite)
    return {n: (base * float(factors[n]) if n in factors else None) for n in lambda_max}, base, stiffest


def _per_probe_js0(spectra: dict[str, SpectralDensity], options: dict) -> list[float]:
    k = min(s.num_probes for s in spectra.values())
    return [js0({n: SpectralDensity(s.nodes[i:i + 1], s.weights[i:i + 1], s.dim) for n, s in spectra.items()},
                **options) for i in range(k)]


# ----------------------------------------------------------------------------- running


def diagnose(model, *, data=None, blocks=None, out=None, device: str = "cpu", seed: int = 0,
             probes: int = DEFAULT_PROBES, steps: int = DEFAULT_STEPS, batches: int | None = None,
             profile: str = "smoke", dtype: torch.dtype | str | None = None, base_lr: float | None = None,
             cache=True, dry_run: bool = False, progress: bool = True, echo=print) -> dict:
    """Diagnose a model's block heterogeneity (the ``hesslab diagnose`` command; see the module docstring).

    Args:
        model: a registry name, a Hugging Face checkpoint directory or a Python file.
        data: a ``.pt`` file of ``(inputs, targets)`` batches, or such a list (default: the
            model's own data, else random inputs from its configuration).
        blocks: ``None`` (the book's blocks), ``["all"]``, ``[preset]`` or parameter names.
        out: output folder (default ``diagnose-<name>`` in the working directory).
        device: where to compute.
        seed: model initialisation (registry), synthetic data and probe seed.
        probes: SLQ probes per block.
        steps: Lanczos steps per probe.
        batches: Hessian batches (synthetic: how many to draw, default 2; given data: the first ``batches``).
        profile: registry models: the size to build.
        dtype: parameter dtype (``"float32"``, ``"float64"`` or a torch dtype; None: see :func:`load_target`).
        base_lr: the stiffest block's suggested learning rate (default ``1/λ_max``).
        cache: ``True`` (the default result cache), a folder, or ``False``/``None``.
        dry_run: print the plan and stop (nothing is written).
        progress: progress bars.
        echo: where the plan and the verdict are printed (``print``; None for silence).

    Returns:
        The report (the ``report.json`` dict); with ``dry_run``, ``{"plan": ..., "dry_run": True}``.

    Raises:
        DiagnoseError: what the user can fix (the CLI prints it and exits with code 2).
        NonFiniteError, UnsupportedAutogradError: from the core, with their fixes.
    """
    group = resolve_group()
    rank, world = (0, 1) if group is None else (group.rank(), group.size())
    say = echo if echo is not None and rank == 0 else (lambda *a, **k: None)
    started = time.perf_counter()
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    if probes < 1 or steps < 1 or (batches is not None and batches < 1):
        raise DiagnoseError("--probes, --steps and --batches must be at least 1")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DiagnoseError(f"--device {device}: no CUDA device here; use --device cpu")
    target = load_target(str(model), profile=profile, seed=seed, dtype=dtype, device=device)
    notes = list(target.notes)
    param_dtype = next(target.model.parameters()).dtype
    if data is not None:
        batches_list = load_data(data) if isinstance(data, (str, Path)) else list(data)
        from_file = isinstance(data, (str, Path))
        data_info = {"source": "file" if from_file else "caller", "synthetic": False,
                     "description": f"from {data}" if from_file else "given by the caller"}
    elif target.data is not None:
        batches_list = list(target.data)
        data_info = {"source": target.data_source, "synthetic": False,
                     "description": target.data_description}
    elif target.inputs is not None:
        batches_list = synthetic_batches(target.inputs, batches or DEFAULT_BATCHES, seed, param_dtype)
        data_info = {"source": "synthetic", "synthetic": True, "description": _describe_synthetic(target.inputs)}
        notes.insert(0, "data: " + data_info["description"] + " (pass --data for a Hessian on your data)")
    else:
        raise DiagnoseError(f"no data for {target.name}: {target.path} defines no `data` and --data was not given; "
                            "add `data = [(inputs, targets), ...]` to the file or pass --data FILE.pt")
    if batches is not None and data_info["source"] != "synthetic":
        batches_list = batches_list[:batches]
    data_info.update(batches=len(batches_list),
                     examples=int(sum(_batch_size(b) for b in batches_list)))
    spec_blocks, is_default = _parse_blocks(target.model, blocks, target.blocks)
    try:
        resolved = resolve_blocks(target.model, spec_blocks)
    except (ValueError, TypeError) as e:
        raise DiagnoseError(f"--blocks: {_one_line(e)}") from e
    if is_default:
        from hesslab.experiments.heterogeneity import MIN_BLOCK_DIM

        shapes = {n: p.shape for n, p in target.model.named_parameters()}
        resolved = [b for b in resolved if b.dim(shapes) >= MIN_BLOCK_DIM]
    if len(resolved) < 2:
        raise DiagnoseError(f"{target.name} has {len(resolved)} block(s) to compare; JS⁰ needs at least two: "
                            "pass --blocks NAME NAME ... or --blocks all")

    if not data_info["synthetic"]:
        notes.insert(0, f"data: {data_info['description']}")
    say(f"hesslab diagnose {target.name} ({target.source}, {sum(p.numel() for p in target.model.parameters()):,} "
        f"parameters, {str(param_dtype).replace('torch.', '')}, {device})"
        + (f", {world} ranks sharing {len(batches_list)} Hessian batches" if world > 1 else ""))
    for note in notes:
        say(note)
    printed = len(notes)
    t0 = time.perf_counter()
    planned = cost_plan(target.model, target.loss_fn, batches_list, resolved, num_steps=steps, num_probes=probes)
    plan_s = time.perf_counter() - t0
    say(f"plan: {planned}; plus one gradient pass for the block gradient norms")
    if dry_run:
        say("dry run: nothing computed beyond the plan's calibration, nothing written")
        return {"plan": planned.as_dict(), "dry_run": True}

    t0 = time.perf_counter()
    norms = block_gradient_norms(target.model, target.loss_fn, batches_list, resolved)
    zeros = zero_gradient_fractions(target.model, target.loss_fn, batches_list, resolved)
    unreached = {n: f for n, f in zeros.items() if f > ZERO_GRADIENT_NOTE}
    if unreached:
        notes.append("the data never reach part of " + ", ".join(f"{n} ({f:.0%} of its entries)" for n, f in
                                                                  unreached.items())
                     + ": exactly zero gradient there, a spike of zero eigenvalues in those blocks' spectra")
    gradients_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    spectra, used_cache = _spectra(target, shard(batches_list) if world > 1 else batches_list, resolved, steps,
                                   probes, seed, cache, progress and rank == 0, notes)
    spectra_s = time.perf_counter() - t0

    options = _js_options()
    matrix = js_matrix(spectra, **options)
    value = js0(spectra, **options)
    per_probe = _per_probe_js0(spectra, options)
    sd = float(np.std(per_probe, ddof=1)) if len(per_probe) > 1 else 0.0
    label = verdict(value, sd)
    lam_max = {n: s.lambda_max for n, s in spectra.items()}
    lrs, base, stiffest = suggested_learning_rates(lam_max, base_lr)
    grad_het = gradient_heterogeneity(norms)
    positive = [v for v in lam_max.values() if v > 0]
    spread = float(np.log10(max(positive) / min(positive))) if positive else float("nan")
    text = _verdict_text(label, value, sd, lrs, base, stiffest)
    block_rows = [{"name": n, "dim": s.dim, "lambda_max": s.lambda_max,
                   "lambda_10": s.kth_largest(10) if s.dim >= 10 else None, "lambda_min": s.lambda_min,
                   "gradient_norm": norms[n], "zero_gradient_fraction": zeros[n], "suggested_lr": lrs[n] if label == "heterogeneous" else None}
                  for n, s in spectra.items()]
    report = {
        "schema": SCHEMA,
        "hesslab_version": hesslab.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": target.name, "source": target.source, "path": target.path, "profile": target.profile,
                  "class": type(target.model).__name__,
                  "parameters": sum(p.numel() for p in target.model.parameters()),
                  "dtype": str(param_dtype).replace("torch.", ""), "device": str(device), "loss": target.loss},
        "data": data_info,
        "settings": {"num_steps": steps, "num_probes": probes, "seed": seed, "world_size": world,
                     "blocks": "book default" if is_default else str(spec_blocks), "js_variant": JS_VARIANT,
                     "js_options": options, "base_lr": base_lr, "cache": used_cache},
        "plan": planned.as_dict(),
        "blocks": block_rows,
        "js": {"variant": JS_VARIANT, "names": list(matrix.index), "matrix": matrix.to_numpy().tolist()},
        "js0": {"value": value, "per_probe": per_probe, "probe_mean": float(np.mean(per_probe)), "probe_sd": sd},
        "gradient_heterogeneity": grad_het,
        "curvature_spread": spread,
        "verdict": {"label": label, "text": text, "threshold": THRESHOLD,
                    "rule": "heterogeneous if JS⁰ − sd > threshold, homogeneous if JS⁰ + sd < threshold, "
                            "else inconclusive (sd: over single-probe JS⁰)",
                    "calibration": {k: list(v) for k, v in CALIBRATION.items()},
                    "base_lr": base if label == "heterogeneous" else None,
                    "stiffest_block": stiffest or None},
        "timings_s": {"plan": plan_s, "gradients": gradients_s, "spectra": spectra_s},
        "figures": [],
        "figures_note": None,
        "notes": notes,
    }
    out = Path(out) if out is not None else Path(f"diagnose-{target.name}")
    report["timings_s"]["total"] = time.perf_counter() - started
    if rank == 0:  # one writer; every rank holds the same report
        _write_outputs(report, spectra, out)
    say(text)
    say(f"JS⁰ ({JS_VARIANT} variant) = {value:.3f} ± {sd:.3f} (threshold {THRESHOLD}); gradient-norm CV "
        f"{grad_het['cv']:.2f}, spread {grad_het['log10_spread']:.2f} decades; λ_max spread {spread:.2f} decades")
    for note in notes[printed:]:
        say("note: " + note)
    say(f"wrote {out}/report.html, report.json" + (", summary.png" if report["figures"] else
                                                   f" ({report['figures_note']})"))
    return report


def _js_options() -> dict:
    from hesslab.experiments.heterogeneity import JS_VARIANTS

    return dict(JS_VARIANTS[JS_VARIANT])


def _batch_size(batch) -> int:
    from hesslab.batching import default_batch_size

    return default_batch_size(*batch)


def _spectra(target: Target, data: list, blocks, steps: int, probes: int, seed: int, cache, progress: bool,
             notes: list) -> tuple[dict, bool]:
    """Blockwise spectra, through the result cache when the model and loss can be keyed."""
    from hesslab.storage.cached import blockwise_slq
    from hesslab.storage.fingerprint import UncacheableError

    if cache:
        try:
            return blockwise_slq(target.model, target.loss_fn, data, blocks, num_steps=steps, num_probes=probes,
                                 seed=seed, cache=cache, progress=progress), True
        except UncacheableError as e:
            notes.append(f"not cached: {_one_line(e)}")
    return blockwise_slq(target.model, target.loss_fn, data, blocks, num_steps=steps, num_probes=probes, seed=seed,
                         cache=None, progress=progress), False


def _verdict_text(label: str, value: float, sd: float, lrs: dict, base: float, stiffest: str) -> str:
    numbers = f"JS⁰ = {value:.3f} ± {sd:.3f} against the threshold {THRESHOLD}"
    if label == "heterogeneous":
        rates = ", ".join(f"{n}: {lr:.3g}" for n, lr in lrs.items() if lr is not None)
        flat = [n for n, lr in lrs.items() if lr is not None and lr >= FLAT_RATIO * base * (1 - 1e-9)]
        caution = (f"; {len(flat)} block(s) have λ_max below 1/{FLAT_RATIO:g} of the stiffest (almost no curvature "
                   f"here, e.g. attention Q and K at initialisation), so their rates are capped at {FLAT_RATIO:g} × base"
                   if flat else "")
        return (f"block-heterogeneous ({numbers}): expect SGD to lag Adam; suggested per-block learning rates "
                f"(lr_b ∝ 1/λ_max,b, the stiffest block {stiffest} at base {base:.3g}; the rule the book's rescue "
                f"chapter tests): {rates}{caution}")
    if label == "homogeneous":
        return f"block-homogeneous ({numbers}): SGD with momentum should do about as well as Adam"
    return (f"inconclusive ({numbers}): the error bar straddles the threshold; raise --probes and --steps "
            f"(or give more --batches) and run again")


# ----------------------------------------------------------------------------- outputs


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    return obj


def _write_outputs(report: dict, spectra: dict, out: Path) -> None:
    """Write report.json, report.html and summary.png into a temporary folder, then rename it to ``out``."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        pngs = _figures(report, spectra)
        if pngs is None:
            report["figures_note"] = "figures need matplotlib: pip install 'hesslab[book]'"
            pngs = {}
        else:
            report["figures"] = ["summary.png"]
            (tmp / "summary.png").write_bytes(pngs["summary"])
        (tmp / "report.json").write_text(json.dumps(_jsonable(report), indent=2, ensure_ascii=False) + "\n")
        (tmp / "report.html").write_text(_html(report, pngs), encoding="utf-8")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{int(time.time() * 1e6)}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _figures(report: dict, spectra: dict) -> dict[str, bytes] | None:
    """PNG bytes of the four panels and the summary, or None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    names = list(spectra)
    label = report["verdict"]["label"]
    panels = {}

    def draw_spectra(ax):
        grid, dens = shared_densities([spectra[n] for n in names], **_js_options())
        for n, d in zip(names, dens):
            ax.plot(grid, d, lw=1, label=n if len(names) <= 12 else None)
        ax.set_xlabel("sign(λ)·(log10|λ / shared max| + 8)")
        ax.set_ylabel("density")
        ax.set_title("blockwise spectra (the axis JS⁰ compares on)")
        if len(names) <= 12:
            ax.legend(fontsize=6)

    def draw_js(ax):
        matrix = np.array(report["js"]["matrix"])
        image = ax.imshow(matrix, cmap="viridis", vmin=0)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=5)
        ax.set_yticks(range(len(names)), names, fontsize=5)
        ax.figure.colorbar(image, ax=ax, shrink=0.8)
        js = report["js0"]
        ax.set_title(f"JS matrix; JS⁰ = {js['value']:.3f} ± {js['probe_sd']:.3f}")

    def draw_bars(ax, key, title):
        values = [max(row[key], 1e-300) if row[key] is not None else np.nan for row in report["blocks"]]
        ax.bar(range(len(names)), values)
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=5)
        ax.set_title(title)

    drawers = {"spectra": draw_spectra, "js": draw_js,
               "lambda_max": lambda ax: draw_bars(ax, "lambda_max", "λ_max per block"),
               "gradients": lambda ax: draw_bars(ax, "gradient_norm", "gradient norm per block")}
    for key, draw in drawers.items():
        fig = Figure(figsize=(6, 4.5), layout="constrained")
        draw(fig.add_subplot())
        panels[key] = _png(fig)
    fig = Figure(figsize=(12, 9.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, draw in zip(axes.flat, drawers.values()):
        draw(ax)
    fig.suptitle(f"{report['model']['name']}: {label} (JS⁰ threshold {THRESHOLD})")
    panels["summary"] = _png(fig)
    return panels


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _fmt(value, digits: int = 4) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}g}"


def _html(report: dict, pngs: dict) -> str:
    """A self-contained page: verdict, numbers, figures as base64 PNG, per-block table."""
    esc = html.escape
    model, data, js = report["model"], report["data"], report["js0"]
    images = "".join(f'<figure><img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}">'
                     f"</figure>" for k, v in pngs.items() if k != "summary")
    rows = "".join(f"<tr><td>{esc(b['name'])}</td><td>{b['dim']}</td><td>{_fmt(b['lambda_max'])}</td>"
                   f"<td>{_fmt(b['lambda_10'])}</td><td>{_fmt(b['gradient_norm'])}</td><td>{b['zero_gradient_fraction']:.0%}</td>"
                   f"<td>{_fmt(b['suggested_lr'], 3)}</td></tr>" for b in report["blocks"])
    notes = "".join(f"<li>{esc(n)}</li>" for n in report["notes"])
    grad = report["gradient_heterogeneity"]
    warn = (f'<p class="warn"><b>{esc(data["description"])}</b></p>' if data["synthetic"] else "")
    figures = images or f"<p>{esc(report['figures_note'] or '')}</p>"
    calibration = "; ".join(f"{k} {lo:.3f}–{hi:.3f}" for k, (lo, hi) in CALIBRATION.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hesslab diagnose: {esc(model['name'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%}}
.warn{{background:#fee;padding:.5em}} .verdict{{font-size:120%;background:#eef;padding:.5em}}
figure{{display:inline-block;margin:0}} img{{max-width:520px}}</style></head><body>
<h1>hesslab diagnose: {esc(model['name'])}</h1>
{warn}
<p class="verdict"><b>{esc(report['verdict']['label'])}</b>: {esc(report['verdict']['text'])}</p>
<p>Rule: {esc(report['verdict']['rule'])}. Threshold {THRESHOLD}: between the book's own measurements (JS⁰, log
variant, at initialisation, cpu profile, three seeds): {esc(calibration)}. JS⁰ per probe:
{esc(', '.join(f'{v:.3f}' for v in js['per_probe']))}.</p>
<p>Gradient heterogeneity (the book's choice for Tomihari &amp; Sato's Definition 4.4): coefficient of variation
{_fmt(grad['cv'], 3)}, spread {_fmt(grad['log10_spread'], 3)} decades (steepest {esc(grad['steepest'])},
flattest {esc(grad['flattest'])}). λ_max spread over blocks: {_fmt(report['curvature_spread'], 3)} decades.</p>
<h2>Model and data</h2>
<p>{esc(model['source'])} model {esc(model['class'])}, {model['parameters']:,} parameters, {esc(model['dtype'])} on
{esc(model['device'])}; loss: {esc(model['loss'])}. Data: {esc(data['description'])} ({data['batches']} batch(es),
{data['examples']} examples). Lanczos: {report['settings']['num_steps']} steps, {report['settings']['num_probes']}
probes, seed {report['settings']['seed']}.</p>
<ul>{notes}</ul>
<h2>Figures</h2>{figures}
<h2>Blocks</h2>
<table><tr><th>block</th><th>dim</th><th>λ_max</th><th>λ₁₀</th><th>gradient norm</th><th>zero gradient</th><th>suggested lr</th></tr>
{rows}</table>
<p>Schema {esc(report['schema'])}, hesslab {esc(report['hesslab_version'])}, {esc(report['created_utc'])};
the numbers are in report.json.</p>
</body></html>
"""


# --------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The ``diagnose`` command's arguments."""
    p = argparse.ArgumentParser(prog="python -m hesslab diagnose",
                                description="Block heterogeneity of a model's Hessian, with a verdict on SGD vs Adam.")
    p.add_argument("model", help="registry name, Hugging Face checkpoint directory, or Python file")
    p.add_argument("--data", help=".pt file holding a list of (inputs, targets) batches")
    p.add_argument("--blocks", nargs="+", help="parameter names, one preset, or 'all' (default: the book's blocks)")
    p.add_argument("--out", help="output folder (default diagnose-<model name>)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probes", type=int, default=DEFAULT_PROBES)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--batches", type=int, help=f"Hessian batches (random inputs: default {DEFAULT_BATCHES})")
    p.add_argument("--profile", default="smoke", help="registry models: smoke, cpu or paper (default smoke)")
    p.add_argument("--dtype", choices=("float32", "float64"))
    p.add_argument("--base-lr", type=float, help="the stiffest block's suggested learning rate (default 1/λ_max)")
    p.add_argument("--no-cache", action="store_true", help="compute without the result cache")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--collective-timeout", type=float, default=DEFAULT_COLLECTIVE_TIMEOUT, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others in a collective before failing "
                        f"(default {DEFAULT_COLLECTIVE_TIMEOUT:g})")
    return p


@contextlib.contextmanager
def process_group_from_environment(device: str, timeout: float):
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), for the ``with`` block; yields the device.

    gloo on CPUs, NCCL on CUDA devices (each rank on ``cuda:LOCAL_RANK``); collectives time out
    after ``timeout`` seconds. Without ``torchrun``, or with a group already initialised,
    nothing happens and ``device`` is yielded as given.
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        yield device
        return
    cuda = str(device).startswith("cuda")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=_dt.timedelta(seconds=timeout))
    try:
        yield device
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Run ``diagnose`` from the command line; 0 on success, 2 on a problem the user can fix.

    Args:
        argv: the arguments after ``diagnose`` (default ``sys.argv[2:]``).
    """
    args = build_parser().parse_args(sys.argv[2:] if argv is None else argv)
    if not args.collective_timeout > 0:
        return _fail("--collective-timeout must be a positive number of seconds")
    try:
        with process_group_from_environment(args.device, args.collective_timeout) as device:
            diagnose(args.model, data=args.data, blocks=args.blocks, out=args.out, device=device, seed=args.seed,
                     probes=args.probes, steps=args.steps, batches=args.batches, profile=args.profile,
                     dtype=args.dtype, base_lr=args.base_lr, cache=not args.no_cache, dry_run=args.dry_run,
                     progress=not args.quiet)
    except DistributedError as e:
        print(f"hesslab diagnose: error: {e}", file=sys.stderr)
        return 1
    except DiagnoseError as e:
        return _fail(str(e))
    except NonFiniteError as e:
        return _fail(f"non-finite loss or Hessian product: {_one_line(e)}; try --dtype float64, check the inputs "
                     "(--data) and the model's initialisation")
    except UnsupportedAutogradError as e:
        return _fail(f"the model has an operation without double backward or forward-mode AD: {_one_line(e)}")
    return 0


def _fail(message: str) -> int:
    print(f"hesslab diagnose: error: {message}", file=sys.stderr)
    return 2


__all__ = ["diagnose", "main", "load_target", "load_data", "synthetic_batches", "default_blocks", "verdict",
           "suggested_learning_rates", "DiagnoseError", "Target", "SCHEMA", "THRESHOLD", "CALIBRATION", "JS_VARIANT"]
