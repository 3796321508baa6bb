"""Offline data in hesslab's batch convention: lists of ``(inputs, targets)``.

Everything the tests and default chapters use is generated locally or ships with an
installed package: English text from CPython's ``pydoc_data.topics`` (a character-level
corpus), scikit-learn's 8×8 digits, and random images. Loaders for the paper's real data
(an OpenWebText-style token file, a text file, an ImageNet-style folder) read local
files only. Randomness comes only from explicit seeds.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def stdlib_text() -> str:
    """About 465k characters of English from CPython's ``pydoc_data.topics``, topics in sorted order."""
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


def load_text_file(path) -> str:
    """A local UTF-8 text file (clear error if missing or empty)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} not found; pass the path of a UTF-8 text file")
    text = path.read_text(encoding="utf-8")
    if not text:
        raise ValueError(f"text file {path} is empty")
    return text


@dataclass
class CharTokenizer:
    """Character-level tokenizer: the most frequent characters, plus ``[UNK]`` and ``[MASK]``.

    Attributes:
        chars: the known characters; id ``i`` is ``chars[i]``.
    """

    chars: str

    @classmethod
    def from_text(cls, text: str, vocab_size: int = 96) -> CharTokenizer:
        """Keep the ``vocab_size - 2`` most frequent characters of ``text`` (ties by code point)."""
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (two ids are reserved), got {vocab_size}")
        counts = collections.Counter(text)
        ranked = sorted(counts, key=lambda ch: (-counts[ch], ch))[: vocab_size - 2]
        return cls("".join(sorted(ranked)))

    @property
    def unk_id(self) -> int:
        """Id of characters outside the vocabulary."""
        return len(self.chars)

    @property
    def mask_id(self) -> int:
        """Id of the ``[MASK]`` token (masked language modelling)."""
        return len(self.chars) + 1

    @property
    def vocab_size(self) -> int:
        """Number of ids, the two special ones included."""
        return len(self.chars) + 2

    def encode(self, text: str) -> Tensor:
        """``[len(text)]`` int64 ids."""
        index = {ch: i for i, ch in enumerate(self.chars)}
        return torch.tensor([index.get(ch, self.unk_id) for ch in text], dtype=torch.long)

    def decode(self, ids) -> str:
        """Text from ids (special ids become ``�``)."""
        return "".join(self.chars[i] if i < len(self.chars) else "\ufffd" for i in map(int, ids))


def load_token_file(path, dtype=np.uint16) -> Tensor:
    """Token ids from a flat binary file (the nanoGPT/OpenWebText ``.bin`` convention).

    Returns:
        ``[n]`` int64 tensor (read through a memory map).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file {path} not found (expected a flat {np.dtype(dtype).name} array, "
                                "e.g. OpenWebText's train.bin)")
    size = path.stat().st_size
    itemsize = np.dtype(dtype).itemsize
    if size == 0 or size % itemsize:
        raise ValueError(f"token file {path} has {size} bytes, not a whole number of {np.dtype(dtype).name} "
                         "tokens; is it a token file, and is the dtype right?")
    return torch.from_numpy(np.memmap(path, dtype=dtype, mode="r").astype(np.int64))


def _windows(tokens: Tensor, batch_size: int, seq_len: int, num_batches: int, seed: int) -> list[Tensor]:
    if tokens.ndim != 1 or tokens.numel() < seq_len + 2:
        raise ValueError(f"need a 1-D token tensor longer than seq_len + 1 = {seq_len + 1}, got {tuple(tokens.shape)}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - seq_len - 1, (num_batches, batch_size), generator=g)
    offsets = torch.arange(seq_len + 1)
    return [tokens[s[:, None] + offsets] for s in starts]  # each [B, T + 1]


def lm_batches(tokens: Tensor, batch_size: int, seq_len: int, num_batches: int, seed: int = 0) -> list:
    """Next-token batches ``(inputs [B, T], targets [B, T])`` from random windows of ``tokens``."""
    return [(w[:, :-1], w[:, 1:]) for w in _windows(tokens, batch_size, seq_len, num_batches, seed)]


def mlm_batches(tokens: Tensor, batch_size: int, seq_len: int, num_batches: int, mask_id: int, seed: int = 0,
                mask_prob: float = 0.15) -> list:
    """Masked-LM batches ``({"input_ids": [B, T]}, labels [B, T])``.

    Masked positions carry ``mask_id`` in the input and the true id in the labels;
    the other labels are -100.
    """
    g = torch.Generator().manual_seed(seed + 1)
    out = []
    for w in _windows(tokens, batch_size, seq_len, num_batches, seed):
        ids = w[:, :-1].clone()
        masked = torch.rand(ids.shape, generator=g) < mask_prob
        masked[:, 0] |= ~masked.any(dim=1)  # at least one masked token per row
        labels = torch.where(masked, ids, torch.full_like(ids, -100))
        ids[masked] = mask_id
        out.append(({"input_ids": ids}, labels))
    return out


def digits(image_size: int = 8) -> tuple[Tensor, Tensor]:
    """scikit-learn's handwritten digits: images ``[1797, 1, S, S]`` in [0, 1] and labels ``[1797]``.

    ``image_size`` > 8 upsamples bilinearly.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    if image_size != 8:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x, torch.tensor(bunch.target, dtype=torch.long)


def random_images(n: int, channels: int, size: int, classes: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Gaussian images ``[n, C, S, S]`` and uniform labels ``[n]``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def image_folder(root, image_size: int = 224, limit_per_class: int | None = None) -> tuple[Tensor, Tensor, list[str]]:
    """An ImageNet-style folder: ``root/<class>/<image>``; classes in sorted order.

    Images are converted to RGB, resized (shorter side) and centre-cropped to
    ``image_size``, scaled to [0, 1].

    Returns:
        ``(images [n, 3, S, S], labels [n], class_names)``.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found (expected root/<class>/<image files>)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root} has no class subfolders (expected root/<class>/<image files>)")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files[:limit_per_class]:
            with Image.open(path) as img:
                img = img.convert("RGB")
                scale = image_size / min(img.size)
                img = img.resize((max(image_size, round(img.width * scale)), max(image_size, round(img.height * scale))))
                left, top = (img.width - image_size) // 2, (img.height - image_size) // 2
                img = img.crop((left, top, left + image_size, top + image_size))
                images.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
                labels.append(label)
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return torch.stack(images), torch.tensor(labels), classes


def image_batches(images: Tensor, labels: Tensor, batch_size: int, num_batches: int | None = None,
                  seed: int = 0) -> list:
    """Batches ``(images [B, ...], labels [B])`` from a seeded permutation (no replacement)."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    chunks = order.split(batch_size)
    chunks = [c for c in chunks if len(c) == batch_size][:num_batches]
    if not chunks:
        raise ValueError(f"fewer than batch_size={batch_size} examples")
    return [(images[c], labels[c]) for c in chunks]


def to_device(batch, device):
    """A batch (tensors, and dicts, lists or tuples of them) moved to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return type(batch)(to_device(v, device) for v in batch)


def default_device(device=None) -> torch.device:
    """``device``, or CUDA when available, else the CPU."""
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
