"""Miniatures faithful to their models: no block the book measures is mostly out of the data's reach.

:func:`hesslab.zero_gradient_fractions` counts, per block, the entries whose gradient is
exactly zero on every Hessian batch (a convolution tap that only sees padding, the
embedding of a token type that never occurs). Such entries put a spike of exact zeros
into a block's spectrum that belongs to the miniature, not to the architecture. First the
helper on models where the answer is known exactly, then every model of the zoo at the
smoke and cpu sizes on the data and in the mode of :func:`hesslab.experiments.heterogeneity.blockwise_at_init`.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesslab import zero_gradient_fractions

#: the most a sampled block may have of entries with exactly zero gradient
MAX_ZERO_FRACTION = 0.05


# ------------------------------------------------------------------ the helper, known answers
def _padded_conv(image: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 5, padding=2), nn.Flatten(), nn.Linear(2 * image * image, 3))


@pytest.mark.parametrize("image, zero_taps", [(1, 24), (2, 16), (3, 0)])
def test_a_5x5_convolution_of_a_tiny_image_reaches_only_the_taps_inside_it(image, zero_taps):
    """A 5×5 kernel (padding 2) on an image×image input: taps at offsets beyond ±(image-1) see only padding."""
    model = _padded_conv(image)
    data = [(torch.randn(4, 1, image, image), torch.tensor([0, 1, 2, 0])) for _ in range(2)]
    fractions = zero_gradient_fractions(model, F.cross_entropy, data)
    assert fractions["0.weight"] == zero_taps / 25  # the same taps of both filters
    assert fractions["0.bias"] == 0.0 and fractions["2.weight"] == 0.0
    assert list(fractions) == [n for n, _ in model.named_parameters()]


class _Bag(nn.Module):
    """Mean of token embeddings -> class logits."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, input_ids):
        return self.head(self.emb(input_ids).mean(1))


def test_embedding_rows_of_tokens_that_never_occur_and_block_specifications():
    torch.manual_seed(0)
    model = _Bag()
    tokens = torch.tensor([[0, 1, 2], [2, 1, 0]])  # tokens 3..9 never occur
    data = [({"input_ids": tokens}, torch.tensor([0, 2])), ({"input_ids": tokens[:, :2]}, torch.tensor([1, 1]))]
    blocks = {"seen rows": ("emb.weight", (slice(0, 3),)), "first five": ("emb.weight", (slice(0, 5),)),
              "head": ["head.weight", "head.bias"]}
    fractions = zero_gradient_fractions(model, F.cross_entropy, data, blocks)
    assert fractions == {"seen rows": 0.0, "first five": 2 / 5, "head": 0.0}
    assert zero_gradient_fractions(model, F.cross_entropy, data, ["emb.weight"]) == {"emb.weight": 7 / 10}


def test_batchnorm_mode_is_the_callers_and_the_model_is_left_as_it_was():
    """In eval mode a batch-norm of a constant channel passes it on; in train mode it is centred to zero."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 2))
    # feature 1 is constant, a power of two: its batch mean and centring are exact
    x = torch.stack([torch.randn(8), torch.full((8,), 2.0)], dim=1)
    data = [(x, torch.randint(0, 2, (8,)))]
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eval_mode = zero_gradient_fractions(model, F.cross_entropy, data, ["1.weight"])
    train_mode = zero_gradient_fractions(model, F.cross_entropy, data, ["1.weight"], batchnorm="train")
    assert eval_mode == {"1.weight": 0.0} and train_mode == {"1.weight": 0.5}
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched


def test_errors():
    model = _padded_conv(1)
    with pytest.raises(ValueError, match="empty"):
        zero_gradient_fractions(model, F.cross_entropy, [])
    with pytest.raises(TypeError, match="pair"):
        zero_gradient_fractions(model, F.cross_entropy, [torch.randn(2, 1, 1, 1)])
    with pytest.raises(TypeError, match="scalar"):
        zero_gradient_fractions(model, lambda out, y: out, [(torch.randn(2, 1, 1, 1), torch.tensor([0, 1]))])


# ------------------------------------------------------------------------- the zoo in miniature
_CLASSIFIER = {"classifier.1.weight", "classifier.3.weight", "classifier.5.weight"}

#: models whose zero gradients are not (only) the miniature's: the paper-size model on the same
#: data has them too (measured with :func:`hesslab.zero_gradient_fractions`, seed 0, with
#: batch statistics, ``batchnorm="train"``). name -> (why, size -> the blocks allowed above
#: 5 % in the blockwise Hessians' mode, ``heterogeneity.BATCHNORM``). Their test
#: fails on any other block above 5 % and xfails on these; it fails too once they are all
#: below 5 %, so the entry goes when a change removes the zeros.
FAITHFUL_ZEROS = {
    # ReLU units dead on every Hessian image at initialisation (zero biases, digits whose features
    # grow ever more alike with depth), so their rows of one classifier matrix and columns of the
    # next get no gradient. The three classifier matrices on 256 Hessian images (224×224 digits
    # at paper size): VGG-16 32 %, 41 %, 21 % at paper size, 30 %, 44 %, 20 % at cpu size;
    # VGG-16-BN (batch-norm stops at the features) 5 %, 15 %, 6 % at paper size, 11 %, 27 %, 13 %
    # at cpu size, about twice the paper's but above 5 % at both. Without batch-norm dead units
    # reach the convolutions too: 3-7 % of the first ones at paper size and smoke size, and 29 % of
    # the cpu size's last one, which sees 2×2 maps (the paper's last: 1 %).
    "vgg16": ("dead ReLU units of the classifier and some convolutions, as at paper size",
              {"smoke": _CLASSIFIER | {"features.0.weight", "features.3.weight"},
               "cpu": _CLASSIFIER | {"features.10.weight"}}),
    # With running statistics (the paper code's mode, the book's at initialisation) batch-norm
    # is the identity at initialisation, so VGG-16-BN has VGG-16's zeros exactly.
    "vgg16-bn": ("dead ReLU units of the classifier and some convolutions, as VGG-16 (batch-norm is the identity "
                 "at initialisation with running statistics)",
                 {"smoke": _CLASSIFIER | {"features.0.weight", "features.4.weight"},
                  "cpu": _CLASSIFIER | {"features.14.weight"}}),
    # Inputs that are blank in every Hessian image: 3 of the digits' 64 pixels are 0 in all 1797
    # digits (4.7 % of layers.0 at paper size, which cycles through all of them), 8 more in the
    # 256 images of the cpu Hessian batch (13 in smoke's 64). A property of the data, not of
    # the model's size.
    "hetero-mlp": ("digit pixels blank in every Hessian image (first layer)",
                   {"smoke": {"layers.0.weight"}, "cpu": {"layers.0.weight"}}),
    # The twin encoders read a digit's rows as tokens, so the embedding's input features are
    # the pixel columns: one of the 8 (12.5 % of embed.weight) is blank in all 64 images of
    # smoke's Hessian batch; none is in cpu's 256. The data, not the model.
    **{name: ("a pixel column blank in every smoke Hessian image (the embedding's input feature)",
              {"smoke": {"embed.weight"}}) for name in ("encoder-postln", "encoder-preln")},
}


def _fractions(name: str, size: str) -> dict[str, float]:
    """Zero-gradient fractions of the blocks the book measures and of every ≥2-D parameter.

    On the data and in the mode of the blockwise Hessians (``blockwise_at_init``).
    """
    from hesslab.experiments.batches import hessian_batches
    from hesslab.experiments.heterogeneity import BATCHNORM, MIN_BLOCK_DIM, sampled_blocks
    from hesslab.experiments.models import build
    from hesslab.experiments.profiles import profile

    built = build(name, profile(size).model_size)
    data = hessian_batches(built, profile(size).blockwise)
    sampled = zero_gradient_fractions(built.model, built.loss_fn, data, sampled_blocks(name, built),
                                      batchnorm=BATCHNORM)
    matrices = [n for n, p in built.model.named_parameters() if p.ndim >= 2 and p.numel() >= MIN_BLOCK_DIM]
    return sampled | zero_gradient_fractions(built.model, built.loss_fn, data, matrices, batchnorm=BATCHNORM)


def _zoo() -> list:
    """Every model at smoke and cpu size; one loaded with trained weights is left to its architecture's test.

    (Building such a model trains it first, minutes without a results cache.)
    """
    from hesslab.experiments.models import NAMES, spec

    trained = pytest.mark.skip(reason="trained weights; its architecture is tested at initialisation")
    return [pytest.param(name, size, id=f"{name}-{size}",
                         marks=[trained] if getattr(spec(name), "weights", None) is not None else [])
            for size in ("smoke", "cpu") for name in NAMES]


@pytest.mark.parametrize("name, size", _zoo())
def test_the_data_reach_every_block_of_the_miniature(name, size):
    fractions = _fractions(name, size)
    over = {block: round(f, 3) for block, f in fractions.items() if f > MAX_ZERO_FRACTION}
    if name not in FAITHFUL_ZEROS or size not in FAITHFUL_ZEROS[name][1]:
        assert not over, f"{name} at {size} size: blocks with more than 5 % exactly-zero gradient: {over}"
        return
    why, allowed = FAITHFUL_ZEROS[name][0], FAITHFUL_ZEROS[name][1][size]
    unexpected = {block: f for block, f in over.items() if block not in allowed}
    assert not unexpected, f"{name} at {size} size: more than 5 % exactly-zero gradient: {unexpected}"
    assert over, f"{name} at {size} size: no block above 5 % any more; remove it from FAITHFUL_ZEROS"
    pytest.xfail(f"{why}: {over}")


def test_the_small_resnet_has_the_cifar_stem_and_the_paper_resnet_the_imagenet_one():
    """At 8×8 the ImageNet stem (7×7 stride 2, max-pool) left 2×2 maps: 56 % and 89 % zeros in two cpu blocks."""
    from hesslab.experiments.models import build

    small, paper = build("resnet18", "cpu").model, build("resnet18", "paper", device="meta").model
    assert small.resnet.embedder.embedder.convolution.kernel_size == (3, 3)
    assert small.resnet.embedder.embedder.convolution.stride == (1, 1)
    assert isinstance(small.resnet.embedder.pooler, nn.Identity)
    assert paper.resnet.embedder.embedder.convolution.kernel_size == (7, 7)
    assert isinstance(paper.resnet.embedder.pooler, nn.MaxPool2d)
    with pytest.raises(ValueError, match="stem"):
        from hesslab.experiments.models import _resnet

        _resnet([1], [8], 1, 8, 10, stem="tiny")
