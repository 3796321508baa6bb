"""Models no maintained library offers in the form the paper uses.

VGG, the MLP-mixer, and the man-made MLP whose block heterogeneity is a parameter;
written to be read top to bottom.
"""

from __future__ import annotations

import torch
from torch import nn


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman 2015): 3×3 convolutions in stages separated by max-pooling.

    Args:
        stages: channels per conv layer, ``"M"`` for a 2×2 max-pool (VGG-16: 13 convs, 5 pools).
        in_channels, image_size, num_classes: input and output shape.
        hidden: width of the two hidden fully connected layers (4096 in VGG-16).
        batch_norm: a BatchNorm2d after every convolution (VGG-16-BN).
    """

    def __init__(self, stages, in_channels=3, image_size=224, num_classes=1000, hidden=4096, batch_norm=False):
        super().__init__()
        layers, c = [], in_channels
        for s in stages:
            if s == "M":
                layers.append(nn.MaxPool2d(2))
                image_size //= 2
            else:
                layers += [nn.Conv2d(c, s, 3, padding=1)] + ([nn.BatchNorm2d(s)] if batch_norm else []) + [nn.ReLU()]
                c = s
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c * image_size * image_size, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )
        self._init_like_torchvision(hidden)

    def _init_like_torchvision(self, hidden):
        # torchvision's VGG initialisation: with PyTorch's default (uniform, gain 1/sqrt(3))
        # the signal shrinks layer by layer and a deep VGG starts with an almost flat Hessian.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                # torchvision: N(0, 0.01) for 4096-wide layers; a narrower VGG keeps the same
                # gain per layer, std·sqrt(width), or its logits start at ~0 and the Hessian is ~0.
                nn.init.normal_(m.weight, 0, 0.01 * (4096 / hidden) ** 0.5)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        """Images ``[B, C, H, W]`` -> logits ``[B, classes]``."""
        return self.classifier(self.features(x))


class MixerBlock(nn.Module):
    """Token mixing (an MLP across patches) then channel mixing (an MLP across features)."""

    def __init__(self, num_patches, dim, token_hidden, channel_hidden):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(num_patches, token_hidden), nn.GELU(), nn.Linear(token_hidden, num_patches))
        self.channel_mlp = nn.Sequential(nn.Linear(dim, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dim))

    def forward(self, x):
        """Patch features ``[B, P, D]`` -> ``[B, P, D]``."""
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MLPMixer(nn.Module):
    """MLP-mixer (Tolstikhin et al. 2021): patches -> mixer blocks -> mean over patches -> classes."""

    def __init__(self, image_size=224, patch=16, in_channels=3, dim=512, depth=8, token_hidden=256,
                 channel_hidden=2048, num_classes=1000):
        super().__init__()
        num_patches = (image_size // patch) ** 2
        self.patchify = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.blocks = nn.Sequential(*[MixerBlock(num_patches, dim, token_hidden, channel_hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        """Images ``[B, C, H, W]`` -> logits ``[B, classes]``."""
        x = self.patchify(x).flatten(2).transpose(1, 2)  # (B, P, D)
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


class HeterogeneousMLP(nn.Module):
    """The man-made MLP of Figure 5(a): layer ``l``'s output is multiplied by ``c**l``.

    With ``c = 1`` it is a plain MLP; larger ``c`` makes the layers' Hessian blocks live
    on different scales (block heterogeneity). The paper's exact construction is
    unverified; this is the documented choice of this book, in two versions:

    - ``reparametrized=False`` (the default): the multipliers act on the usual
      initialisation, so the network's function changes with ``c`` too (its logits grow
      as ``c**(depth-1)``, its tanh units saturate);
    - ``reparametrized=True``: layer ``l``'s weights and bias are initialised divided by
      ``c**l``, so at initialisation the network computes exactly the ``c = 1`` function
      and only the parametrisation differs: block ``l``'s Hessian is the plain MLP's times
      ``c**(2l)``. Heterogeneity without anything else changing.
    """

    def __init__(self, in_features=64, width=64, depth=4, num_classes=10, c=1.0, reparametrized=False):
        super().__init__()
        sizes = [in_features] + [width] * (depth - 1) + [num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.reparametrized = bool(reparametrized)
        self.register_buffer("multipliers", torch.tensor([float(c) ** l for l in range(depth)]))
        if self.reparametrized:
            with torch.no_grad():
                for layer, multiplier in zip(self.layers, self.multipliers):
                    layer.weight.div_(multiplier)
                    layer.bias.div_(multiplier)

    def forward(self, x):
        """Inputs ``[B, in_features]`` (flattened if needed) -> logits ``[B, classes]``."""
        x = x.flatten(1)
        for l, layer in enumerate(self.layers):
            x = layer(x) * self.multipliers[l]
            if l < len(self.layers) - 1:
                x = torch.tanh(x)
        return x


class EncoderLayer(nn.Module):
    """A Transformer encoder layer with separate Q, K, V projections; Post-LN or Pre-LN.

    Post-LN (``norm_first=False``, BERT, RoBERTa): ``x ← LN(x + Attn(x))``, ``x ← LN(x + FFN(x))``.
    Pre-LN (``norm_first=True``, GPT-2): ``x ← x + Attn(LN(x))``, ``x ← x + FFN(LN(x))``.
    The parameters are the same in both; only the order of the operations differs.

    Args:
        width: model width ``D``.
        heads: attention heads (dividing ``width``).
        norm_first: Pre-LN when True, Post-LN when False.
    """

    def __init__(self, width: int, heads: int, norm_first: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads, self.norm_first = heads, norm_first
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.ffn1, self.ffn2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def attention(self, x):
        """Multi-head self-attention written out (twice differentiable): ``[B, T, D] -> [B, T, D]``."""
        b, t, d = x.shape
        q, k, v = (f(x).view(b, t, self.heads, d // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        return self.o((weights @ v).transpose(1, 2).reshape(b, t, d))

    def ffn(self, x):
        """The feed-forward sublayer, GELU between two linear maps."""
        return self.ffn2(nn.functional.gelu(self.ffn1(x)))

    def forward(self, x):
        """Tokens ``[B, T, D]`` -> ``[B, T, D]``."""
        if self.norm_first:
            x = x + self.attention(self.ln1(x))
            return x + self.ffn(self.ln2(x))
        x = self.ln1(x + self.attention(x))
        return self.ln2(x + self.ffn(x))


class RowEncoder(nn.Module):
    """A small Transformer encoder that reads an image's rows as tokens (the twin encoders).

    An image ``[B, C, S, S]`` becomes ``S`` tokens of ``C·S`` features (its rows), embedded
    linearly, plus a learned position embedding; ``layers`` :class:`EncoderLayer` s, a final
    LayerNorm (in both placements, so the twins have the same parameters), the mean over
    tokens and a linear head. Built under the same seed, the Post-LN and the Pre-LN twin have
    equal initial weights.

    Args:
        image: image side ``S`` (tokens per image).
        channels: image channels ``C``.
        width: model width.
        layers: encoder layers.
        heads: attention heads.
        classes: output classes.
        norm_first: Pre-LN when True, Post-LN when False.
    """

    def __init__(self, image=8, channels=1, width=32, layers=2, heads=4, classes=10, norm_first=False):
        super().__init__()
        self.norm_first = norm_first
        self.embed = nn.Linear(channels * image, width)
        self.position = nn.Parameter(0.02 * torch.randn(image, width))
        self.layers = nn.ModuleList(EncoderLayer(width, heads, norm_first) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        """Images ``[B, C, S, S]`` -> logits ``[B, classes]``."""
        x = self.embed(x.permute(0, 2, 1, 3).flatten(2)) + self.position  # rows as tokens: [B, S, C·S] -> [B, S, D]
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(dim=1))
