"""The book's offline data for any model of :mod:`hesslab.experiments.models`.

:func:`model_batches` gives every built model batches it can eat, from data that ships
with Python or scikit-learn: character-level language modelling (GPT-2 family) or masked
language modelling (BERT) on CPython's documentation text, scikit-learn's digits
(upsampled and channel-repeated to the model's image size) for the vision models, and the
flattened digits for the MLPs. ``split="hessian"`` draws the batches on which Hessians are
measured from the training text/images with a different seed, so a chapter's Hessian data
is fixed and independent of the training order.
"""

from __future__ import annotations

import functools

import torch

import hesslab.experiments.data as data
from hesslab.experiments.models import TEXT_KINDS, BuiltModel
from hesslab.experiments.profiles import HessianSettings

SPLITS = ("train", "hessian")

#: parts of the offline text: all of it, or one half (the book's pretrained GPT-2 is
#: pretrained on the first half and measured on the second)
TEXT_PARTS = ("all", "first-half", "second-half")


@functools.lru_cache(maxsize=8)
def _text_tokens(vocab: int) -> tuple[data.CharTokenizer, torch.Tensor]:
    text = data.stdlib_text()
    tokenizer = data.CharTokenizer.from_text(text, vocab_size=min(vocab, 256))
    return tokenizer, tokenizer.encode(text)


def _text_part(ids: torch.Tensor, part: str) -> torch.Tensor:
    if part not in TEXT_PARTS:
        raise ValueError(f"unknown text part {part!r}; choose one of {TEXT_PARTS}")
    half = ids.numel() // 2
    return {"all": ids, "first-half": ids[:half], "second-half": ids[half:]}[part]


@functools.lru_cache(maxsize=8)
def _digit_images(size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = data.digits(image_size=size)
    return images.expand(-1, channels, -1, -1).contiguous(), labels


#: augmentation of the training images: random shifts of up to this many pixels (a
#: fresh draw per batch); with it the cpu-size MLP-mixer no longer fits the 1797 digits
#: within its budget (final loss about 0.2 for AdamW and SGD, from 2.3)
AUGMENT_SHIFT = 1
#: optional Gaussian noise on top (pixels are in [0, 1], standard deviation about 0.36); off
AUGMENT_NOISE = 0.0


def augment_images(images: torch.Tensor, seed: int, *, shift: int = AUGMENT_SHIFT,
                   noise: float = AUGMENT_NOISE) -> torch.Tensor:
    """Each image shifted by a random whole number of pixels in ``[-shift, shift]`` per axis (zero fill), plus optional noise.

    Args:
        images: ``[B, C, S, S]``.
        seed: seed of the shifts and the noise.
        shift: the largest shift, pixels.
        noise: standard deviation of the added Gaussian noise.

    Returns:
        A new ``[B, C, S, S]`` tensor.
    """
    g = torch.Generator().manual_seed(seed)
    size = images.shape[-1]
    padded = torch.nn.functional.pad(images, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (images.shape[0], 2), generator=g)
    out = torch.stack([padded[i, :, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(offsets.tolist())])
    return out + noise * torch.randn(out.shape, generator=g, dtype=out.dtype) if noise else out


def model_batches(built: BuiltModel, num_batches: int, batch_size: int, *, seed: int = 0,
                  split: str = "train", augment: bool = False, text: str | None = None) -> list:
    """``num_batches`` batches ``(inputs, targets)`` for ``built``, deterministic given the seed.

    Args:
        built: from :func:`hesslab.experiments.models.build`; its ``inputs`` spec picks the data.
        num_batches: how many batches.
        batch_size: sequences or images per batch.
        seed: sampling seed (windows of text, order of images).
        split: ``"train"`` or ``"hessian"`` (the same data, sampled with another seed stream).
        augment: images only: every batch freshly augmented (:func:`augment_images`), so
            a model cannot fit the training set by memorising 1797 digits.
        text: text models only: the part of the offline text (:data:`TEXT_PARTS`); default
            the model's own (``built.inputs["text"]``, else ``"all"``). The tokenizer is
            always that of the whole text.

    Returns:
        A list of batches: tokens ``[B, T]`` with next-token targets, ``{"input_ids": [B, T]}``
        with MLM labels, images ``[B, C, S, S]`` or vectors ``[B, 64]`` with class labels.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if num_batches < 1 or batch_size < 1:
        raise ValueError(f"num_batches and batch_size must be >= 1, got {num_batches} and {batch_size}")
    seed = 2 * seed + (split == "hessian")
    spec = built.inputs
    dtype = next(built.model.parameters()).dtype
    kind = spec["kind"]
    if augment and kind != "images":
        raise ValueError(f"augment applies to images only, not to input kind {kind!r}")
    if text is not None and kind not in TEXT_KINDS:
        raise ValueError(f"text applies to text models only, not to input kind {kind!r}")
    if kind in TEXT_KINDS:
        vocab, seq = spec["vocab"], spec["seq"]
        tokenizer, ids = _text_tokens(vocab)
        ids = _text_part(ids, text or spec.get("text", "all"))
        if kind == "tokens":
            return data.lm_batches(ids, batch_size, seq, num_batches, seed=seed)
        return data.mlm_batches(ids, batch_size, seq, num_batches, mask_id=tokenizer.mask_id, seed=seed)
    if kind == "images":
        if spec["classes"] < 10:
            raise ValueError(f"the digits need 10 classes, the model has {spec['classes']}")
        images, labels = _digit_images(spec["size"], spec["channels"])
        batches = _cycled_image_batches(images, labels, batch_size, num_batches, seed)
        if augment:
            batches = [(augment_images(x, seed * 100_003 + i), y) for i, (x, y) in enumerate(batches)]
        return [(x.to(dtype), y) for x, y in batches]
    if kind == "vectors":
        if spec["features"] != 64:
            raise ValueError(f"the digits have 64 features, the model expects {spec['features']}")
        images, labels = _digit_images(8, 1)
        batches = _cycled_image_batches(images.flatten(1), labels, batch_size, num_batches, seed)
        return [(x.to(dtype), y) for x, y in batches]
    raise ValueError(f"no data for input kind {kind!r}")


def modality(built: BuiltModel) -> str:
    """``"text"`` for a model that eats tokens, else ``"vision"`` (images and vectors)."""
    return "text" if built.inputs["kind"] in TEXT_KINDS else "vision"


def hessian_batches(built: BuiltModel, settings: HessianSettings, *, num_batches: int | None = None,
                    seed: int = 0) -> list:
    """The batches on which a Hessian is measured (``split="hessian"``).

    Args:
        built: the model.
        settings: a profile's :class:`~hesslab.experiments.profiles.HessianSettings`
            (its batches for the model's modality).
        num_batches: override the number of batches.
        seed: sampling seed.
    """
    count, batch_size = settings.batches[modality(built)]
    return model_batches(built, num_batches or count, batch_size, seed=seed, split="hessian")


def _cycled_image_batches(images, labels, batch_size: int, num_batches: int, seed: int) -> list:
    """Batches from successive seeded permutations (epochs) until ``num_batches`` are drawn."""
    out: list = []
    epoch = 0
    while len(out) < num_batches:
        out += data.image_batches(images, labels, batch_size, num_batches - len(out), seed=seed * 1000 + epoch)
        epoch += 1
    return out


def token_count(batches) -> int:
    """Number of predicted tokens or examples in ``batches`` (targets that are not -100)."""
    return int(sum((y != -100).sum() if y.ndim > 1 else y.numel() for _, y in batches))
