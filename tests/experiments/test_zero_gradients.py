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
