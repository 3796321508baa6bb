"""The paper's model families at a selectable scale: ``build(name, size)``.

``size`` is ``"smoke"`` (tiny, for tests and CI), ``"cpu"`` (laptop scale, the default
book) or ``"paper"`` (the sizes of Zhang et al.). Transformers come from ``transformers``
with eager attention (fused attention kernels have no double backward); VGG, the
MLP-mixer and the man-made heterogeneous MLP are written by hand in
:mod:`hesslab.experiments.models.handwritten`.

:data:`REGISTRY` holds each family's static facts (:class:`ModelSpec`: family,
modality, loss, default blocks, the paper's model), read without building anything; the
constructor arguments of every size are in :mod:`hesslab.experiments.profiles`. Paper
sizes (parameter counts, tested within ±10 %): GPT-2 124M, GPT-2-nano 11M, BERT 40M
(configuration unverified), ViT-base 86M, ResNet-18 11.7M, VGG-16 138M; the MLP-mixer's
size in the paper is unverified (see the book's reproduction notes, ``book/reproduction.md``).
Below paper size two families leave the paper's architecture where the miniature would leave
weights out of its data's reach (exactly zero gradient, :func:`hesslab.zero_gradient_fractions`):
ResNet-18 takes the CIFAR stem for 8×8 images and BERT one token type for single-segment text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hesslab.experiments.models.handwritten import VGG, HeterogeneousMLP, MLPMixer, RowEncoder
from hesslab.experiments.profiles import PROFILES, profile

#: the sizes models are built at: one per profile
SIZES = PROFILES

#: input kinds of the text models (the rest are vision: images and vectors)
TEXT_KINDS = ("tokens", "masked-tokens")


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
    return GPT2LMHeadModel._from_config(config, attn_implementation="eager"), {"vocab": vocab, "seq": context}


def _bert(layers, heads, width, context, vocab, token_types=2):
    """Transformers' BERT for masked language modelling; ``token_types`` segment embeddings (BERT: 2).

    The book's masked-LM data are single segments (no sentence pairs, no next-sentence
    prediction), so only token type 0 ever occurs and the embedding of type 1 gets no
    gradient: half the ``token_type_embeddings`` block. One token type (as RoBERTa) is
    what such data can train: a learned vector added at every position.
    """
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * width, max_position_embeddings=context, type_vocab_size=token_types,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForMaskedLM._from_config(config, attn_implementation="eager"), {"vocab": vocab, "seq": context}


def _vit(image, patch, channels, width, layers, heads, classes):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=image, patch_size=patch, num_channels=channels, hidden_size=width,
                       num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * width,
                       num_labels=classes, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return (ViTForImageClassification._from_config(config, attn_implementation="eager"),
            {"channels": channels, "size": image, "classes": classes})


#: ResNet stems: ``"imagenet"`` (He et al.: 7×7 stride-2 convolution, 3×3 stride-2 max-pool, a
#: 4× smaller feature map) and ``"cifar"`` (He et al.'s CIFAR ResNets: one 3×3 stride-1
#: convolution, no pooling)
RESNET_STEMS = ("imagenet", "cifar")


def _resnet(depths, widths, channels, image, classes, stem="imagenet"):
    """Transformers' ResNet (basic blocks) with the ImageNet stem or, for small images, the CIFAR stem.

    The ImageNet stem shrinks an 8×8 digit to 2×2 before the first stage, and the 3×3
    convolutions of a 2×2 (or 1×1) feature map see mostly zero padding: at cpu size 56 % and
    89 % of two blocks' weights had exactly zero gradient on the Hessian data. The CIFAR stem
    keeps the input's resolution (8×8 → 8×8 → 4×4 over two stages). ``ResNetConfig`` has no
    stem option, so the stem's convolution is replaced after construction by the same
    ``ResNetConvLayer`` (3×3, stride 1, batch-norm, ReLU), initialised as transformers does
    (Kaiming normal, fan-out), and the max-pool by an identity.
    """
    from transformers import ResNetConfig, ResNetForImageClassification
    from transformers.models.resnet.modeling_resnet import ResNetConvLayer

    if stem not in RESNET_STEMS:
        raise ValueError(f"unknown ResNet stem {stem!r}; choose one of {RESNET_STEMS}")
    config = ResNetConfig(depths=list(depths), hidden_sizes=list(widths), embedding_size=widths[0],
                          layer_type="basic", num_channels=channels, num_labels=classes)
    model = ResNetForImageClassification(config)
    if stem == "cifar":
        embeddings = model.resnet.embedder
        embeddings.embedder = ResNetConvLayer(channels, widths[0], kernel_size=3, stride=1,
                                              activation=config.hidden_act)
        nn.init.kaiming_normal_(embeddings.embedder.convolution.weight, mode="fan_out", nonlinearity="relu")
        embeddings.pooler = nn.Identity()
    return model, {"channels": channels, "size": image, "classes": classes}


def _vgg(stages, channels, image, classes, hidden, batch_norm=False):
    return (VGG(list(stages), channels, image, classes, hidden, batch_norm),
            {"channels": channels, "size": image, "classes": classes})


def _mixer(image, patch, channels, width, depth, classes):
    return (MLPMixer(image, patch, channels, width, depth, width // 2, 4 * width, classes),
            {"channels": channels, "size": image, "classes": classes})


def _encoder(image, channels, width, layers, heads, classes, norm_first):
    return (RowEncoder(image, channels, width, layers, heads, classes, norm_first),
            {"channels": channels, "size": image, "classes": classes})


def _postln_encoder(**sizes):
    """The Post-LN twin (:class:`RowEncoder`, ``norm_first=False``)."""
    return _encoder(**sizes, norm_first=False)


def _preln_encoder(**sizes):
    """The Pre-LN twin (:class:`RowEncoder`, ``norm_first=True``)."""
    return _encoder(**sizes, norm_first=True)


def _mlp(features, width, depth, classes, c, reparametrized=False):
    return (HeterogeneousMLP(features, width, depth, classes, c, reparametrized),
            {"features": features, "classes": classes})


@dataclass(frozen=True)
class ModelSpec:
    """Static facts about a model family, read without building a model.

    Attributes:
        name: the registry name.
        family: ``"cnn"``, ``"transformer"``, ``"mlp"`` or ``"mixer"``.
        input_kind: ``"tokens"`` (causal LM), ``"masked-tokens"`` (masked LM),
            ``"images"`` or ``"vectors"``.
        loss_fn: the loss in hesslab's convention.
        blocks: default block partition (a preset of :mod:`hesslab.blocks`, or None for one
            block per tensor).
        paper: the paper's model, in words.
        constructor: ``constructor(**sizes) -> (model, input shape facts)``; sizes per
            profile are in :mod:`hesslab.experiments.profiles`.
        text: text models: the part of the offline text the model is trained and measured
            on (:data:`hesslab.experiments.batches.TEXT_PARTS`).
        weights: ``weights(model, size, seed)`` loads trained weights into the freshly
            constructed model (None: the initialisation is the model).
    """

    name: str
    family: str
    input_kind: str
    loss_fn: Callable
    blocks: object
    paper: str
    constructor: Callable
    text: str = "all"
    weights: Callable | None = None

    @property
    def modality(self) -> str:
        """``"text"`` for token inputs, else ``"vision"`` (images and vectors)."""
        return "text" if self.input_kind in TEXT_KINDS else "vision"


def _pretrained_gpt2(model: nn.Module, size: str, seed: int) -> None:
    from hesslab.experiments.pretraining import load_pretrained

    load_pretrained(model, size, seed)


_SPECS = [
    ModelSpec("gpt2", "transformer", "tokens", lm_loss, "gpt2-qkv", "GPT-2 small, 124M", _gpt2),
    ModelSpec("gpt2-pretrained", "transformer", "tokens", lm_loss, "gpt2-qkv",
              "GPT-2 small pretrained on OpenWebText (the book: its GPT-2 pretrained on half its offline text)",
              _gpt2, text="second-half", weights=_pretrained_gpt2),
    ModelSpec("gpt2-scratch", "transformer", "tokens", lm_loss, "gpt2-qkv",
              "GPT-2 small from scratch (Figure 6's control: the book's GPT-2 at initialisation, measured and "
              "trained on the second half of its offline text, as gpt2-pretrained)", _gpt2, text="second-half"),
    ModelSpec("gpt2-nano", "transformer", "tokens", lm_loss, "gpt2-qkv", "nanoGPT Shakespeare-char, 11M", _gpt2),
    ModelSpec("bert", "transformer", "masked-tokens", mlm_loss, None, "BERT, 40M (configuration unverified)", _bert),
    ModelSpec("vit-base", "transformer", "images", classification_loss, None, "ViT-base, 86M", _vit),
    ModelSpec("resnet18", "cnn", "images", classification_loss, None, "ResNet-18, 11.7M", _resnet),
    ModelSpec("vgg16", "cnn", "images", classification_loss, None, "VGG-16, 138M", _vgg),
    ModelSpec("vgg16-bn", "cnn", "images", classification_loss, None, "VGG-16 with batch-norm", _vgg),
    ModelSpec("mlp-mixer", "mixer", "images", classification_loss, None, "MLP-mixer (size unverified)", _mixer),
    ModelSpec("hetero-mlp", "mlp", "vectors", classification_loss, None, "the man-made heterogeneous MLP", _mlp),
    ModelSpec("encoder-postln", "transformer", "images", classification_loss, None,
              "Tomihari & Sato's Post-LN encoder (RoBERTa; the book: a small encoder reading image rows as tokens)",
              _postln_encoder),
    ModelSpec("encoder-preln", "transformer", "images", classification_loss, None,
              "the Pre-LN twin of encoder-postln (the same parameters, layer norm before each sublayer)",
              _preln_encoder),
]

#: name -> :class:`ModelSpec`
REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _SPECS}

NAMES = tuple(REGISTRY)


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name`` (nothing is built).

    Raises:
        ValueError: an unknown name, naming the known ones.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {NAMES}")
    return REGISTRY[name]


def build(name: str, size: str = "cpu", *, seed: int = 0, device: torch.device | str = "cpu",
          dtype: torch.dtype = torch.float32, **options) -> BuiltModel:
    """Build a model family at a profile's size.

    Args:
        name: one of :data:`NAMES`.
        size: ``"smoke"``, ``"cpu"`` or ``"paper"`` (the sizes of
            :mod:`hesslab.experiments.profiles`).
        seed: initialisation seed.
        device: where to allocate (``"meta"`` counts parameters without memory).
        dtype: parameter dtype.
        **options: ``c`` (the layer multiplier base) and ``reparametrized`` for ``"hetero-mlp"``
            (see :class:`~hesslab.experiments.models.handwritten.HeterogeneousMLP`).

    Returns:
        A :class:`BuiltModel` in eval mode.
    """
    model_spec = spec(name)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    kwargs = dict(profile(size).models[name])
    if name == "hetero-mlp" and "c" in options:
        kwargs["c"] = float(options.pop("c"))
    if name == "hetero-mlp" and "reparametrized" in options:
        kwargs["reparametrized"] = bool(options.pop("reparametrized"))
    if options:
        raise TypeError(f"unexpected options for {name!r}: {sorted(options)}")
    torch.manual_seed(seed)
    with torch.device(device):
        model, shapes = model_spec.constructor(**kwargs)
    if model_spec.weights is not None:
        model_spec.weights(model, size, seed)
    if model_spec.text != "all":
        shapes = {**shapes, "text": model_spec.text}
    model = model.to(dtype=dtype).eval()
    return BuiltModel(model, model_spec.loss_fn, model_spec.blocks, model_spec.family,
                      {"kind": model_spec.input_kind, **shapes})


def family_of(name: str) -> str:
    """The family of model ``name`` (``"cnn"``, ``"transformer"``, ``"mlp"``, ``"mixer"``)."""
    return spec(name).family


def random_batch(built: BuiltModel, batch_size: int = 4, seed: int = 0):
    """A random ``(inputs, targets)`` batch of the right shape (for smoke tests, not for science)."""
    g = torch.Generator().manual_seed(seed)
    spec = built.inputs
    dtype = next(built.model.parameters()).dtype
    if spec["kind"] in TEXT_KINDS:
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


__all__ = ["BuiltModel", "ModelSpec", "REGISTRY", "NAMES", "SIZES", "spec", "build", "family_of", "random_batch", "lm_loss", "mlm_loss", "classification_loss",
           "VGG", "MLPMixer", "HeterogeneousMLP", "RowEncoder"]
