"""Offline data: shapes, determinism, loaders on files the tests write, error messages."""

import numpy as np
import pytest
import torch
from PIL import Image

from hesslab.experiments import data


def test_char_tokenizer_round_trip_and_special_ids():
    text = data.stdlib_text()
    assert len(text) > 400_000
    tok = data.CharTokenizer.from_text(text, vocab_size=96)
    assert tok.vocab_size == 96 and tok.mask_id == 95 and tok.unk_id == 94
    sample = "def f(x): return x"
    assert tok.decode(tok.encode(sample)) == sample
    assert tok.encode("\u2603").tolist() == [tok.unk_id]


def test_lm_and_mlm_batches_shapes_and_determinism():
    tokens = torch.arange(1000) % 50
    a, b = data.lm_batches(tokens, 4, 16, 3, seed=1), data.lm_batches(tokens, 4, 16, 3, seed=1)
    assert len(a) == 3 and a[0][0].shape == (4, 16) and torch.equal(a[0][1][:, :-1], a[0][0][:, 1:])
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))
    assert not torch.equal(a[0][0], data.lm_batches(tokens, 4, 16, 3, seed=2)[0][0])
    (inputs, labels), = data.mlm_batches(tokens, 4, 16, 1, mask_id=99, seed=0)
    masked = inputs["input_ids"] == 99
    assert masked.any(dim=1).all() and ((labels != -100) == masked).all()


def test_token_file_loader(tmp_path):
    path = tmp_path / "train.bin"
    np.arange(300, dtype=np.uint16).tofile(path)
    tokens = data.load_token_file(path)
    assert tokens.dtype == torch.long and tokens[-1] == 299
    (tmp_path / "odd.bin").write_bytes(b"abc")
    with pytest.raises(ValueError, match="whole number of uint16 tokens"):
        data.load_token_file(tmp_path / "odd.bin")
    with pytest.raises(FileNotFoundError, match="OpenWebText"):
        data.load_token_file(tmp_path / "missing.bin")


def test_text_file_loader(tmp_path):
    (tmp_path / "a.txt").write_text("hello", encoding="utf-8")
    assert data.load_text_file(tmp_path / "a.txt") == "hello"
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        data.load_text_file(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load_text_file(tmp_path / "nope.txt")


def test_digits_and_image_batches():
    x, y = data.digits()
    assert x.shape == (1797, 1, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1 and y.max() == 9
    assert data.digits(16)[0].shape == (1797, 1, 16, 16)
    batches = data.image_batches(x, y, 32, 3, seed=0)
    assert len(batches) == 3 and batches[0][0].shape == (32, 1, 8, 8)
    assert torch.equal(batches[1][1], data.image_batches(x, y, 32, 3, seed=0)[1][1])
    with pytest.raises(ValueError, match="labels"):
        data.image_batches(x, y[:5], 4)


def test_imagenet_style_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    images, labels, classes = data.image_folder(tmp_path, image_size=16)
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1] and classes == ["cat", "dog"]
    with pytest.raises(FileNotFoundError, match="class"):
        data.image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        data.image_folder(tmp_path / "empty")
