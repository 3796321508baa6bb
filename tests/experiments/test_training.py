"""Training runs: reproducible, learning-rate search, resume, Adam without bias correction."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesslab.experiments.training import AdamNoBiasCorrection, TrainConfig, adam_sgd_gap, grid_search, learning_rate, train


def tiny_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return (lambda: nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))), [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]


def test_seeded_run_is_reproducible_and_keeps_states():
    build, batches = tiny_problem()
    cfg = TrainConfig("adamw", 1e-2, 30, checkpoints=(0.0, 0.5, 1.0))
    a, b = train(build, F.cross_entropy, batches, cfg, progress=False), train(build, F.cross_entropy, batches, cfg, progress=False)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert set(a.states) == {0.0, 0.5, 1.0} and a.losses[-1] < a.losses[0]
    assert not torch.equal(a.states[0.0]["0.weight"], a.states[1.0]["0.weight"])


def test_grid_search_finds_the_known_best_step():
    """Loss ½ a w²: plain GD with lr = 1/a reaches the minimum in one step; others do not."""
    a = 4.0

    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0]))

        def forward(self, x):
            return self.w

    batches = [(torch.zeros(1), torch.zeros(1))]
    base = TrainConfig("sgd", 0.0, 10, momentum=0.0)
    best, runs = grid_search(Scalar, lambda w, _: 0.5 * a * (w ** 2).sum(), batches, base,
                             [0.05, 0.1, 1 / a, 0.45, 0.6], progress=False)
    assert best.config.lr == pytest.approx(1 / a), {lr: r.final_loss for lr, r in runs.items()}
    assert runs[0.6].final_loss > 100 * runs[0.6].losses[0]  # |1 - 0.6·4| = 1.4 > 1: diverges


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "adam-nobc"])
def test_resume_after_interruption_equals_uninterrupted(optimizer, tmp_path, monkeypatch):
    """Checkpoints (model and optimiser state as plain arrays) resume bit-identically."""
    build, batches = tiny_problem()
    cfg = TrainConfig(optimizer, 0.1 if optimizer == "sgd" else 1e-2, 40, checkpoints=(0.5, 1.0))
    full = train(build, F.cross_entropy, batches, cfg, progress=False)
    cls = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "adam-nobc": AdamNoBiasCorrection}[optimizer]
    real_step, calls = cls.step, {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 27:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(cls, "step", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(build, F.cross_entropy, batches, cfg, cache=tmp_path, cache_key={"problem": "tiny"},
              checkpoint_every=10, progress=False)
    calls["n"] = -1000
    resumed = train(build, F.cross_entropy, batches, cfg, cache=tmp_path, cache_key={"problem": "tiny"},
                    checkpoint_every=10, progress=False)
    assert calls["n"] + 1000 == 20, "the resumed run restarts from the step-20 checkpoint"
    np.testing.assert_array_equal(resumed.losses, full.losses)
    for f in (0.5, 1.0):
        for k in full.states[f]:
            assert torch.equal(resumed.states[f][k], full.states[f][k])
    cached = train(build, F.cross_entropy, batches, cfg, cache=tmp_path, cache_key={"problem": "tiny"}, progress=False)
    np.testing.assert_array_equal(cached.losses, full.losses)


def test_adam_without_bias_correction_first_step():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdamNoBiasCorrection([p], lr=0.1, betas=(0.9, 0.999), eps=0.0)
    p.grad = torch.tensor([0.5, 0.5])
    opt.step()
    # m = 0.1 g, v = 0.001 g²: step = lr · 0.1 g / (√0.001 |g|) = lr · 0.1/√0.001 · sign(g)
    expected = torch.tensor([1.0, -2.0]) - 0.1 * 0.1 / 0.001 ** 0.5
    assert torch.allclose(p.detach(), expected)


def test_schedule_and_gap():
    cfg = TrainConfig("adamw", 1.0, 100, schedule="cosine", warmup=10)
    assert learning_rate(cfg, 0) == pytest.approx(0.1) and learning_rate(cfg, 9) == pytest.approx(1.0)
    assert learning_rate(cfg, 99) < 0.01
    build, batches = tiny_problem()
    adam = train(build, F.cross_entropy, batches, TrainConfig("adamw", 1e-2, 20), progress=False)
    sgd = train(build, F.cross_entropy, batches, TrainConfig("sgd", 1e-3, 20), progress=False)
    assert adam_sgd_gap(adam, sgd) == pytest.approx(sgd.final_loss - adam.final_loss)
    with pytest.raises(ValueError, match="unknown optimizer"):
        train(build, F.cross_entropy, batches, TrainConfig("lion", 1e-3, 2), progress=False)
    # caching needs a loss hesslab can identify, or a cache_key describing it (nothing is written)
    with pytest.raises(TypeError, match="cache_key"):
        train(build, lambda out, y: F.cross_entropy(out, y), batches, TrainConfig("sgd", 1e-3, 2), cache=True,
              progress=False)


def test_a_changed_initialisation_is_not_served_from_the_cache(tmp_path):
    """The cache key holds the initial parameters, not only the caller's cache_key."""
    from hesslab.experiments.training import TrainConfig, train

    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    config = TrainConfig("sgd", 0.1, 3)
    loss = torch.nn.functional.cross_entropy
    first = train(lambda: torch.nn.Linear(3, 2), loss, [(x, y)], config, cache=tmp_path, cache_key={"m": "lin"},
                  progress=False)

    def rescaled():
        layer = torch.nn.Linear(3, 2)
        layer.weight.data *= 10
        return layer

    second = train(rescaled, loss, [(x, y)], config, cache=tmp_path, cache_key={"m": "lin"}, progress=False)
    assert not np.allclose(first.losses, second.losses)


def test_grid_search_in_worker_processes_equals_the_serial_search(tmp_path):
    import functools

    from hesslab.experiments.batches import model_batches
    from hesslab.experiments.gap import fresh_model
    from hesslab.experiments.models import build

    built = build("hetero-mlp", "smoke")
    batches = model_batches(built, 3, 16)
    make = functools.partial(fresh_model, "hetero-mlp", "smoke", 0)
    base = TrainConfig("adamw", 0.0, 8, checkpoints=(0.0, 1.0))
    lrs = [1e-3, 1e-2, 1e-1]
    serial = grid_search(make, built.loss_fn, batches, base, lrs, progress=False)[1]
    parallel = grid_search(make, built.loss_fn, batches, base, lrs, workers=2, progress=False, cache=tmp_path)[1]
    assert list(parallel) == lrs
    for lr in lrs:  # the same seeded runs; one intra-op thread per worker may round float32 differently
        np.testing.assert_allclose(parallel[lr].losses, serial[lr].losses, rtol=1e-5)
        assert set(parallel[lr].states) == {0.0, 1.0}
    again = grid_search(make, built.loss_fn, batches, base, lrs, workers=2, progress=False, cache=tmp_path)[1]
    for lr in lrs:  # served from the cache in this process; the workers' states came back as plain arrays
        np.testing.assert_array_equal(again[lr].losses, parallel[lr].losses)
        assert all(torch.equal(again[lr].states[f][k], v) for f in (0.0, 1.0) for k, v in parallel[lr].states[f].items())


def test_a_changed_architecture_under_the_gap_studys_cache_key_is_a_new_run(tmp_path):
    """gap_study keys runs by {"model", "size", "seed", ...}; the built model's structure and values are in the key too.

    So the cpu-size ResNet's new stem (3×3 stride 1, no max-pool, instead of 7×7 stride 2 and a
    max-pool) is never served the old stem's runs, even a change that keeps every tensor (the pool).
    """
    from hesslab.experiments.batches import model_batches
    from hesslab.experiments.gap import fresh_model
    from hesslab.experiments.models import _resnet, build

    built = build("resnet18", "smoke")
    batches = model_batches(built, 2, 8)
    key = {"model": "resnet18", "size": "smoke", "seed": 0, "data": "batches.model_batches/train",
           "batch_size": 8, "num_batches": 2}

    def imagenet_stem():  # the smoke ResNet as it was, with the paper's stem
        return _resnet([1], [8], 1, 8, 10, stem="imagenet")[0].eval()

    def pooled():  # the same tensors as fresh_model's, with the max-pool back: only the structure differs
        model = fresh_model("resnet18", "smoke", 0)
        model.resnet.embedder.pooler = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        return model

    config = TrainConfig("sgd", 0.01, 2)
    assert all(torch.equal(a, b) for a, b in zip(pooled().state_dict().values(),
                                                 fresh_model("resnet18", "smoke", 0).state_dict().values()))
    runs = [train(make, built.loss_fn, batches, config, cache=tmp_path, cache_key=key, progress=False)
            for make in (imagenet_stem, lambda: fresh_model("resnet18", "smoke", 0), pooled)]
    assert len(list((tmp_path / "train").glob("*.npz"))) == 3  # three keys, none served another's run
    assert not np.array_equal(runs[0].losses, runs[1].losses) and not np.array_equal(runs[1].losses, runs[2].losses)
    again = train(lambda: fresh_model("resnet18", "smoke", 0), built.loss_fn, batches, config, cache=tmp_path,
                  cache_key=key, progress=False)
    np.testing.assert_array_equal(again.losses, runs[1].losses)
    assert len(list((tmp_path / "train").glob("*.npz"))) == 3  # the same model, the same key: its own run


# ---------------------------------------------------------------- a learning rate per block
def test_block_scales_are_a_learning_rate_per_block_for_sgd():
    """Scaling a block's gradient by s is SGD (with momentum) with lr·s on that block: the same
    arithmetic as torch's SGD with one parameter group per learning rate, so equal to rounding."""
    build, batches = tiny_problem()
    batches = [(x.double(), y) for x, y in batches]
    lr, scales = 0.05, {"0.weight": 3.0, "2.bias": 0.25}
    cfg = TrainConfig("sgd", lr, 12, block_scales=tuple(scales.items()))
    scaled = train(lambda: build().double(), F.cross_entropy, batches, cfg, progress=False)

    torch.manual_seed(cfg.seed)
    model = build().double()
    groups = [{"params": [p], "lr": lr * scales.get(n, 1.0)} for n, p in model.named_parameters()]
    opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    reference = []
    for step in range(cfg.steps):
        x, y = batches[step % len(batches)]
        loss = F.cross_entropy(model(x), y)
        reference.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(scaled.losses, reference, rtol=1e-12)
    plain = train(lambda: build().double(), F.cross_entropy, batches, TrainConfig("sgd", lr, 12), progress=False)
    assert not np.allclose(plain.losses[1:], reference[1:], rtol=1e-6), "the scales must change the run"


def test_block_scales_are_keyed_only_when_used_and_checked():
    assert TrainConfig("sgd", 0.1, 5).key() == {k: v for k, v in TrainConfig("sgd", 0.1, 5, block_scales=(("a", 2.0),)).key().items()
                                                 if k not in ("block_scales", "scale_blocks")}
    assert "block_scales" in TrainConfig("sgd", 0.1, 5, block_scales=(("a", 2.0),)).key()
    build, batches = tiny_problem()
    for bad, match in [((("nope", 2.0),), "not a block"), ((("0.weight", 0.0),), "positive and finite"),
                       ((("0.weight", float("nan")),), "positive and finite")]:
        with pytest.raises(ValueError, match=match):
            train(build, F.cross_entropy, batches, TrainConfig("sgd", 0.1, 2, block_scales=bad), progress=False)


def test_block_scales_reach_slices_of_a_fused_tensor():
    """GPT-2's fused c_attn: Q, K and V columns get their own factors."""
    from hesslab.experiments.models import build as build_zoo
    from hesslab.experiments.training import gradient_scales

    model = build_zoo("gpt2", "smoke").model
    cfg = TrainConfig("sgd", 0.1, 1, block_scales=(("transformer.h.0.attn.q", 2.0), ("transformer.h.0.attn.v", 5.0)),
                      scale_blocks="gpt2-qkv")
    scales = {id(p): f for p, f in gradient_scales(model, cfg)}
    attn = model.transformer.h[0].attn.c_attn
    assert set(scales) == {id(attn.weight), id(attn.bias)}
    d = attn.weight.shape[0]
    for factors in (scales[id(attn.weight)], scales[id(attn.bias)][None, :]):
        assert set(factors[:, :d].unique().tolist()) == {2.0} and set(factors[:, d:2 * d].unique().tolist()) == {1.0}
        assert set(factors[:, 2 * d:].unique().tolist()) == {5.0}


def _two_steps(optimizer, grads, lr=0.1, momentum=0.9):
    """Parameters after one step per gradient in ``grads``, from w = [1, 2, 3]."""
    from hesslab.experiments.training import make_optimizer

    w = nn.Parameter(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    opt = make_optimizer(TrainConfig(optimizer, lr, 2, momentum=momentum), [w])
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return w.detach().tolist()


def test_signsgd_steps_by_the_sign_of_the_gradient():
    """w − lr·sign(g) per step; sign(0) = 0 leaves the coordinate alone."""
    w = _two_steps("signsgd", [[0.5, -3.0, 0.0], [-1e-6, -2.0, 4.0]])
    assert w == pytest.approx([1.0 - 0.1 + 0.1, 2.0 + 0.1 + 0.1, 3.0 - 0.1])


def test_signum_steps_by_the_sign_of_the_moving_average():
    """m₁ = 0.1 g₁, m₂ = 0.9 m₁ + 0.1 g₂; hand-computed: g₁ = [1, −1, 2], g₂ = [−2, −1, −0.1].

    m₁ = [0.1, −0.1, 0.2] (signs +, −, +); m₂ = [0.09 − 0.2, −0.09 − 0.1, 0.18 − 0.01] =
    [−0.11, −0.19, 0.17] (signs −, −, +), where plain SignSGD would follow g₂'s signs (−, −, −).
    """
    w = _two_steps("signum", [[1.0, -1.0, 2.0], [-2.0, -1.0, -0.1]], lr=0.5)
    assert w == pytest.approx([1.0 - 0.5 + 0.5, 2.0 + 0.5 + 0.5, 3.0 - 0.5 - 0.5])
    plain = _two_steps("signsgd", [[1.0, -1.0, 2.0], [-2.0, -1.0, -0.1]], lr=0.5)
    assert plain == pytest.approx([1.0, 3.0, 3.0])


def test_plain_sgd_has_no_momentum():
    """w − lr·g per step, whatever the config's momentum; "sgd" keeps the velocity."""
    g1, g2 = [1.0, -2.0, 0.5], [1.0, 1.0, 1.0]
    assert _two_steps("sgd-plain", [g1, g2]) == pytest.approx([1.0 - 0.2, 2.0 + 0.1, 3.0 - 0.15])
    # torch's momentum: v₁ = g₁, v₂ = 0.9 v₁ + g₂
    assert _two_steps("sgd", [g1, g2]) == pytest.approx([1.0 - 0.1 - 0.19, 2.0 + 0.2 - 0.1 * (1 - 1.8),
                                                         3.0 - 0.05 - 0.1 * 1.45])
