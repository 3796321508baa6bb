"""hesslab.experiments.batches: data for every model, deterministic, with clear errors."""

import pytest
import torch

from hesslab.batching import call_model
from hesslab.experiments.models import NAMES, build, family_of
from hesslab.experiments.batches import model_batches, token_count


@pytest.mark.parametrize("name", NAMES)
def test_every_model_eats_its_batches(name):
    built = build(name, "smoke")
    batches = model_batches(built, 2, 3, seed=1)
    assert len(batches) == 2
    loss = built.loss_fn(call_model(built.model, batches[0][0]), batches[0][1])
    assert torch.isfinite(loss) and 0.5 < float(loss.detach()) < 10  # near ln(classes or vocab) at init
    assert token_count(batches) > 0
    assert family_of(name) == built.family  # looked up on the meta device


def test_batches_are_deterministic_and_splits_differ():
    built = build("gpt2-nano", "smoke")
    a = model_batches(built, 2, 3, seed=0)
    b = model_batches(built, 2, 3, seed=0)
    h = model_batches(built, 2, 3, seed=0, split="hessian")
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))
    assert not torch.equal(a[0][0], h[0][0])


def test_images_cycle_through_epochs():
    built = build("vgg16", "smoke")
    batches = model_batches(built, 5, 600)  # 1797 digits: 2 full batches per epoch, so 3 epochs
    assert len(batches) == 5 and batches[0][0].shape == (600, 1, 8, 8)


def test_errors():
    built = build("vgg16", "smoke")
    with pytest.raises(ValueError, match="unknown split"):
        model_batches(built, 1, 1, split="test")
    with pytest.raises(ValueError, match=">= 1"):
        model_batches(built, 0, 1)


def test_augmented_images_are_shifted_copies_and_only_images_are_augmented():
    import torch

    from hesslab.experiments.batches import augment_images, model_batches
    from hesslab.experiments.models import build

    images = torch.zeros(200, 1, 5, 5)
    images[:, 0, 2, 2] = 1.0
    out = augment_images(images, seed=3)
    assert out.shape == images.shape and torch.equal(out, augment_images(images, seed=3))
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(200)), "one pixel moved, nothing lost"
    where = out[:, 0].flatten(1).argmax(1)
    rows, cols = where // 5, where % 5
    assert set(rows.tolist()) == {1, 2, 3} and set(cols.tolist()) == {1, 2, 3}, "shifts of -1, 0 and +1 pixel"
    mixer = build("mlp-mixer", "smoke")
    plain, shifted = model_batches(mixer, 3, 8), model_batches(mixer, 3, 8, augment=True)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(plain, shifted)), "labels unchanged"
    assert not torch.equal(plain[0][0], shifted[0][0])
    with pytest.raises(ValueError, match="images only"):
        model_batches(build("gpt2-nano", "smoke"), 1, 2, augment=True)


def test_text_halves_are_disjoint_parts_of_the_offline_text():
    from hesslab.experiments.batches import _text_part, _text_tokens

    gpt = build("gpt2-nano", "smoke")
    _, ids = _text_tokens(gpt.inputs["vocab"])
    first, second = _text_part(ids, "first-half"), _text_part(ids, "second-half")
    assert first.numel() + second.numel() == ids.numel() and torch.equal(torch.cat([first, second]), ids)
    window = model_batches(gpt, 1, 2, text="second-half")[0][0][0]
    found = second.unfold(0, window.numel(), 1).eq(window).all(1).any()
    assert bool(found), "a second-half batch is a window of the second half"
    with pytest.raises(ValueError, match="unknown text part"):
        model_batches(gpt, 1, 2, text="middle")
    with pytest.raises(ValueError, match="text models only"):
        model_batches(build("vgg16", "smoke"), 1, 2, text="first-half")
