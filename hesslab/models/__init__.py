"""The paper's model families at a selectable scale: ``build(name, size)``.

``size`` is ``"smoke"`` (tiny, for tests and CI), ``"cpu"`` (laptop scale, the default
book) or ``"paper"`` (the sizes of Zhang et al.). Transformers come from ``transformers``
with eager attention (fused attention kernels have no double backward); VGG, the
MLP-mixer and the man-made heterogeneous MLP are written by hand in
:mod:`hesslab.models.handwritten`.

Paper sizes (parameter counts, tested within ±10 %): GPT-2 124M (12 layers, 12 heads,
768 wide, context 1024), GPT-2-nano 11M (6 × 6 × 384, context 256, 65 characters),
BERT 40M (8 layers, 512 wide: the paper states 40M, the configuration is this book's
choice), ViT-base 86M, ResNet-18 11.7M, VGG-16 138M. The MLP-mixer's size in the paper
is unverified; ``paper`` is an 8-block, 512-wide mixer (about 18M).

This module is groundwork for the model-zoo issue: data loaders and training live in
``hesslab.data`` / ``hesslab.train`` (not written yet).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .handwritten import VGG, VGG16_STAGES, HeterogeneousMLP, MLPMixer

SIZES = ("smoke", "cpu", "paper")


@dataclass
class BuiltModel:
    """A model with what measuring its Hessian needs.

    Attributes:
        model: the network (eval mode, dropout 0).
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` in hesslab's convention.
        blocks: default block partition (a preset name or None = one block per tensor).
        family: ``"cnn"``, ``"transformer"``, ``"mlp"`` or ``"mixer"``.
        inputs: what the model eats: ``{"kind": "tokens", "vocab", "seq"}``,
            ``{"kind": "images", "channels", "size", "classes"}`` or ``{"kind": "vectors", ...}``.
    """

    model: nn.Module
    loss_fn: Callable
    blocks: object
    family: str
    inputs: dict = field(default_factory=dict)

    @property
    def num_parameters(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.model.parameters())


def lm_loss(outputs, targets):
    """Next-token cross-entropy of a causal LM output (``.logits [B, T, V]``, targets ``[B, T]``)."""
    return F.cross_entropy(outputs.logits.flatten(0, -2), targets.flatten())


def mlm_loss(outputs, targets):
    """Masked-LM cross-entropy; targets are -100 where a token is not masked."""
    return F.cross_entropy(outputs.logits.flatten(0, -2), targets.flatten(), ignore_index=-100)


def classification_loss(outputs, targets):
    """Cross-entropy of class logits (a tensor, or an output object with ``.logits``)."""
    return F.cross_entropy(getattr(outputs, "logits", outputs), targets)


def _gpt2(layers, heads, width, context, vocab):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab, n_positions=context, n_embd=width, n_layer=layers, n_head=heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return (GPT2LMHeadModel._from_config(config, attn_implementation="eager"), lm_loss, "gpt2-qkv", "transformer",
            {"kind": "tokens", "vocab": vocab, "seq": context})


def _bert(layers, heads, width, context, vocab):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * width, max_position_embeddings=context,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return (BertForMaskedLM._from_config(config, attn_implementation="eager"), mlm_loss, None, "transformer",
            {"kind": "masked-tokens", "vocab": vocab, "seq": context})


def _vit(image, patch, channels, width, layers, heads, classes):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=image, patch_size=patch, num_channels=channels, hidden_size=width,
                       num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * width,
                       num_labels=classes, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return (ViTForImageClassification._from_config(config, attn_implementation="eager"), classification_loss,
            None, "transformer", {"kind": "images", "channels": channels, "size": image, "classes": classes})


def _resnet(depths, widths, channels, image, classes):
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(depths=depths, hidden_sizes=widths, embedding_size=widths[0], layer_type="basic",
                          num_channels=channels, num_labels=classes)
    return (ResNetForImageClassification(config), classification_loss, None, "cnn",
            {"kind": "images", "channels": channels, "size": image, "classes": classes})


def _vgg(stages, channels, image, classes, hidden, batch_norm=False):
    model = VGG(stages, channels, image, classes, hidden, batch_norm)
    return model, classification_loss, None, "cnn", {"kind": "images", "channels": channels, "size": image,
                                                      "classes": classes}


def _mixer(image, patch, channels, width, depth, classes):
    model = MLPMixer(image, patch, channels, width, depth, width // 2, 4 * width, classes)
    return model, classification_loss, None, "mixer", {"kind": "images", "channels": channels, "size": image,
                                                       "classes": classes}


def _mlp(features, width, depth, classes, c):
    return (HeterogeneousMLP(features, width, depth, classes, c), classification_loss, None, "mlp",
            {"kind": "vectors", "features": features, "classes": classes})


#: name -> size -> constructor arguments (cpu sizes fit 8×8 digits and character text)
_REGISTRY: dict[str, tuple[Callable, dict[str, tuple]]] = {
    "gpt2": (_gpt2, {"smoke": (2, 2, 16, 16, 32), "cpu": (4, 4, 128, 64, 96), "paper": (12, 12, 768, 1024, 50257)}),
    "gpt2-nano": (_gpt2, {"smoke": (1, 2, 16, 16, 32), "cpu": (2, 4, 64, 64, 96), "paper": (6, 6, 384, 256, 65)}),
    "bert": (_bert, {"smoke": (1, 2, 16, 16, 32), "cpu": (2, 4, 64, 64, 96), "paper": (8, 8, 512, 512, 30522)}),
    "vit-base": (_vit, {"smoke": (8, 4, 1, 16, 1, 2, 10), "cpu": (8, 2, 1, 64, 2, 4, 10),
                        "paper": (224, 16, 3, 768, 12, 12, 1000)}),
    "resnet18": (_resnet, {"smoke": ([1], [8], 1, 8, 10), "cpu": ([1, 1], [16, 32], 1, 8, 10),
                           "paper": ([2, 2, 2, 2], [64, 128, 256, 512], 3, 224, 1000)}),
    "vgg16": (_vgg, {"smoke": ([8, "M", 16, "M"], 1, 8, 10, 32), "cpu": ([16, 16, "M", 32, 32, "M", 64, "M"], 1, 8, 10, 128),
                     "paper": (VGG16_STAGES, 3, 224, 1000, 4096)}),
    "vgg16-bn": (_vgg, {"smoke": ([8, "M", 16, "M"], 1, 8, 10, 32, True),
                        "cpu": ([16, 16, "M", 32, 32, "M", 64, "M"], 1, 8, 10, 128, True),
                        "paper": (VGG16_STAGES, 3, 224, 1000, 4096, True)}),
    "mlp-mixer": (_mixer, {"smoke": (8, 4, 1, 16, 1, 10), "cpu": (8, 2, 1, 64, 2, 10),
                           "paper": (224, 16, 3, 512, 8, 1000)}),
    "hetero-mlp": (_mlp, {"smoke": (64, 16, 3, 10, 1.0), "cpu": (64, 64, 4, 10, 1.0), "paper": (64, 128, 4, 10, 1.0)}),
}

NAMES = tuple(_REGISTRY)


def build(name: str, size: str = "cpu", *, seed: int = 0, device: torch.device | str = "cpu",
          dtype: torch.dtype = torch.float32, **options) -> BuiltModel:
    """Build a model family at a size.

    Args:
        name: one of :data:`NAMES`.
        size: ``"smoke"``, ``"cpu"`` or ``"paper"``.
        seed: initialisation seed.
        device: where to allocate (``"meta"`` counts parameters without memory).
        dtype: parameter dtype.
        **options: ``c`` for ``"hetero-mlp"`` (the layer multiplier base).

    Returns:
        A :class:`BuiltModel` in eval mode.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {NAMES}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    constructor, sizes = _REGISTRY[name]
    args = list(sizes[size])
    if name == "hetero-mlp" and "c" in options:
        args[-1] = float(options.pop("c"))
    if options:
        raise TypeError(f"unexpected options for {name!r}: {sorted(options)}")
    torch.manual_seed(seed)
    with torch.device(device):
        model, loss_fn, blocks, family, inputs = constructor(*args)
    model = model.to(dtype=dtype).eval()
    return BuiltModel(model, loss_fn, blocks, family, inputs)


def family_of(name: str) -> str:
    """The family of model ``name`` (``"cnn"``, ``"transformer"``, ``"mlp"``, ``"mixer"``), without allocating it."""
    return build(name, "smoke", device="meta").family


def random_batch(built: BuiltModel, batch_size: int = 4, seed: int = 0):
    """A random ``(inputs, targets)`` batch of the right shape (for smoke tests, not for science)."""
    g = torch.Generator().manual_seed(seed)
    spec = built.inputs
    dtype = next(built.model.parameters()).dtype
    if spec["kind"] in ("tokens", "masked-tokens"):
        tokens = torch.randint(0, spec["vocab"], (batch_size, spec["seq"] + 1), generator=g)
        if spec["kind"] == "tokens":
            return tokens[:, :-1], tokens[:, 1:]
        inputs, labels = tokens[:, :-1].clone(), tokens[:, :-1].clone()
        masked = torch.rand(inputs.shape, generator=g) < 0.15
        masked[:, 0] = True
        labels[~masked] = -100
        return {"input_ids": inputs}, labels
    if spec["kind"] == "images":
        x = torch.randn(batch_size, spec["channels"], spec["size"], spec["size"], generator=g, dtype=dtype)
        return x, torch.randint(0, spec["classes"], (batch_size,), generator=g)
    x = torch.randn(batch_size, spec["features"], generator=g, dtype=dtype)
    return x, torch.randint(0, spec["classes"], (batch_size,), generator=g)


__all__ = ["BuiltModel", "NAMES", "SIZES", "build", "family_of", "random_batch", "lm_loss", "mlm_loss", "classification_loss",
           "VGG", "MLPMixer", "HeterogeneousMLP"]
