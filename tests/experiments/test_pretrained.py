"""Offline pretrained weights: a local checkpoint the test saves, and the packaged MiniLM."""

import pytest
import torch

from hesslab.experiments.models import build, random_batch
from hesslab.experiments.models.pretrained import load_local_checkpoint, minilm


def test_local_checkpoint_round_trip(tmp_path):
    original = build("gpt2", "smoke")
    original.model.save_pretrained(tmp_path / "ckpt")
    loaded = load_local_checkpoint(tmp_path / "ckpt")
    assert loaded.blocks == "gpt2-qkv" and loaded.inputs["kind"] == "tokens"
    for (n, a), (_, b) in zip(original.model.named_parameters(), loaded.model.named_parameters()):
        assert torch.equal(a, b), n
    inputs, targets = random_batch(original, 2)
    assert torch.allclose(loaded.loss_fn(loaded.model(inputs), targets),
                          original.loss_fn(original.model(inputs), targets))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_local_checkpoint(tmp_path)


def test_packaged_minilm_pretrained_and_from_scratch():
    pre, scratch = minilm(pretrained=True), minilm(pretrained=False)
    assert 20e6 < pre.num_parameters < 40e6 and pre.num_parameters == scratch.num_parameters
    w_pre = dict(pre.model.named_parameters())["bert.encoder.layer.0.attention.self.query.weight"].detach()
    w_scratch = dict(scratch.model.named_parameters())["bert.encoder.layer.0.attention.self.query.weight"].detach()
    assert not torch.allclose(w_pre, w_scratch)
    # from scratch is BERT's N(0, 0.02) initialisation; the trained weights spread wider (about 0.095)
    assert abs(float(w_scratch.std()) - 0.02) < 0.002 and float(w_pre.std()) > 0.05
    (inputs, labels) = random_batch(pre, 2)
    inputs = {"input_ids": inputs["input_ids"][:, :16]}
    labels = labels[:, :16]
    assert torch.isfinite(pre.loss_fn(pre.model(**inputs), labels))
