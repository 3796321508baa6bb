"""The book's pretrained GPT-2 (Table 1's "GPT2 (pretrained)"): pretrained on one half of the text, measured on the other."""

import torch

from hesslab.experiments import pretraining
from hesslab.experiments.batches import model_batches
from hesslab.experiments.models import build, spec



def test_pretrained_gpt2_is_gpt2_after_adamw_on_the_first_half(tmp_path, monkeypatch):
    monkeypatch.setenv("HESSLAB_CACHE", str(tmp_path))
    fresh, pretrained = build("gpt2", "smoke", seed=0), build("gpt2-pretrained", "smoke", seed=0)
    assert spec("gpt2-pretrained").family == "transformer" and pretrained.inputs["text"] == "second-half"
    assert [n for n, _ in fresh.model.named_parameters()] == [n for n, _ in pretrained.model.named_parameters()]
    moved = [n for (n, a), (_, b) in zip(fresh.model.named_parameters(), pretrained.model.named_parameters())
             if not torch.equal(a, b)]
    assert len(moved) == len(list(fresh.model.parameters())), "every tensor trained"
    # pretraining lowered the loss on text it has not seen (the second half), not only on its own
    held_out = model_batches(pretrained, 4, 4, seed=5)
    with torch.no_grad():
        loss = {name: float(torch.stack([m.loss_fn(m.model(x), y) for x, y in held_out]).mean())
                for name, m in [("fresh", fresh), ("pretrained", pretrained)]}
    assert loss["pretrained"] < loss["fresh"] - 0.3, loss
    # cached: a second build reads the run instead of training, and gives the same weights
    again = build("gpt2-pretrained", "smoke", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again.model.parameters(), pretrained.model.parameters()))
    assert list(tmp_path.glob("train/*.npz")), "the pretraining run is in the cache"


def test_pretraining_data_and_measurement_data_are_the_two_halves():
    first = pretraining.pretraining_batches("smoke", 0)
    built = build("gpt2", "smoke")
    assert len(first) == 100 and torch.equal(first[0][0], model_batches(built, 100, 4, text="first-half")[0][0])
    assert pretraining.pretraining_config("smoke", 3).seed == 3


def test_counting_parameters_does_not_pretrain(tmp_path, monkeypatch):
    monkeypatch.setenv("HESSLAB_CACHE", str(tmp_path))
    model = build("gpt2-pretrained", "paper", device="meta").model
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build("gpt2", "paper", device="meta").model.parameters())
    assert not list(tmp_path.rglob("*.npz"))
