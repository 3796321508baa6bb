"""Cache keys cannot collide silently, and loading a cache folder cannot run code.

Every test here fails on the keys hesslab built before issue 11: the loss keyed by
``__qualname__`` (two lambdas shared ``"<lambda>"``; every loss module ``repr``),
the model by its tensor values only (Pre-LN and Post-LN twins collided),
``batch_size_fn`` and the computation's version missing, and training runs
unpickled from the cache.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hesslab
from hesslab import HessianOperator
from hesslab.memory import lanczos_bytes
from hesslab.storage.cached import blockwise_slq, slq
from hesslab.storage.cache import CacheFormatError, ResultCache
from hesslab.storage.fingerprint import COMPUTATION_VERSIONS, UncacheableError, computation_key
from hesslab.experiments.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers
def twin(norm_first: bool, seed: int = 0) -> nn.Module:
    """A one-layer Transformer classifier; Pre-LN and Post-LN twins share every initial value."""
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(4, 1, 6, dropout=0.0, norm_first=norm_first, batch_first=True)
    return nn.Sequential(layer, nn.Flatten(), nn.Linear(3 * 4, 2)).double()


def twin_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 3, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (5,), generator=g))
            for _ in range(2)]


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def bn_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()


def mlp_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (6,), generator=g))
            for _ in range(2)]


def module_level_loss(outputs, targets):
    return F.cross_entropy(outputs, targets)


def count_targets(inputs, targets):
    return int(targets.shape[0])


def count_inputs(inputs, targets):
    return int(inputs.shape[0])


class _Captured(Exception):
    pass


@pytest.fixture
def capture(monkeypatch):
    """``capture(fn)``: the (kind, params) a cached computation asks the cache for, without computing."""
    def load(self, kind, params):
        raise _Captured(kind, params)

    monkeypatch.setattr(ResultCache, "load", load)

    def run(fn):
        with pytest.raises(_Captured) as info:
            fn()
        return info.value.args

    return run


def hex_key(kind_params) -> str:
    return ResultCache.key(*kind_params)


def same_spectrum(a, b) -> bool:
    """Equal to rounding (a cached run may group blocks, and so batch products, differently)."""
    return all(np.allclose(a[k].nodes, b[k].nodes, rtol=1e-10, atol=1e-12, equal_nan=True) for k in a)


# ---------------------------------------------------------------- model structure
def test_pre_ln_and_post_ln_twins_are_not_served_each_others_spectra(tmp_path):
    pre, post, data = twin(True), twin(False), twin_data()
    assert all(torch.equal(a, b) for a, b in zip(pre.state_dict().values(), post.state_dict().values())), \
        "the twins must share every value, or this test proves nothing"
    kw = dict(num_steps=5, num_probes=2, seed=1, progress=False)
    blocks_pre = blockwise_slq(pre, F.cross_entropy, data, cache=tmp_path, **kw)
    blocks_post = blockwise_slq(post, F.cross_entropy, data, cache=tmp_path, **kw)
    reference = hesslab.blockwise_slq(post, F.cross_entropy, data, **kw)  # no cache
    assert same_spectrum(blocks_post, reference) and not same_spectrum(blocks_post, blocks_pre)
    assert len(list((tmp_path / "blockwise_slq").glob("*.npz"))) == 2

    full_pre = slq(HessianOperator(pre, F.cross_entropy, data), cache=tmp_path, **kw)
    full_post = slq(HessianOperator(post, F.cross_entropy, data), cache=tmp_path, **kw)
    reference = hesslab.slq(HessianOperator(post, F.cross_entropy, data), **kw)
    np.testing.assert_allclose(full_post.nodes, reference.nodes, rtol=1e-10)
    assert not np.allclose(full_post.nodes, full_pre.nodes)


def test_structure_covers_configuration_attributes_and_class_source(capture, tmp_path):
    data = mlp_data()

    def key_of(model):
        return hex_key(capture(lambda: blockwise_slq(model, F.cross_entropy, data, cache=tmp_path, progress=False)))

    base = key_of(mlp())
    assert key_of(mlp()) == base  # deterministic
    eps = mlp()
    eps.add_module("norm", nn.LayerNorm(2, eps=1e-5, elementwise_affine=False))
    other_eps = mlp()
    other_eps.add_module("norm", nn.LayerNorm(2, eps=1e-3, elementwise_affine=False))
    assert key_of(eps) != key_of(other_eps), "a configuration attribute without tensors (eps) must count"

    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    class Cosine(nn.Module):
        def forward(self, x):
            return torch.cos(x)

    sine, cosine = mlp(), mlp()
    sine[1], cosine[1] = Sine(), Cosine()
    assert key_of(sine) != key_of(cosine), "classes with different source must differ"


# ---------------------------------------------------------------- loss and batch_size_fn
def test_lambdas_are_refused_without_cache_key_and_distinct_with_one(tmp_path):
    model, data = mlp(), mlp_data()
    first = lambda out, y: F.cross_entropy(out, y)  # noqa: E731
    second = lambda out, y: 2 * F.cross_entropy(out, y)  # noqa: E731
    kw = dict(num_steps=4, num_probes=1, progress=False)
    with pytest.raises(UncacheableError, match=r"lambda.*module level.*cache_key"):
        slq(HessianOperator(model, first, data), cache=tmp_path, **kw)
    with pytest.raises(TypeError, match="cache_key"):  # UncacheableError is a TypeError
        blockwise_slq(model, second, data, cache=tmp_path, **kw)
    a = slq(HessianOperator(model, first, data), cache=tmp_path, cache_key={"loss": "ce"}, **kw)
    b = slq(HessianOperator(model, second, data), cache=tmp_path, cache_key={"loss": "2ce"}, **kw)
    np.testing.assert_allclose(b.nodes, 2 * a.nodes, rtol=1e-10)
    bw = blockwise_slq(model, second, data, cache=tmp_path, cache_key={"loss": "2ce"}, **kw)
    assert len(bw) == 4
    assert len(list(tmp_path.glob("*/*.npz"))) == 3


def test_cache_key_is_added_to_the_derived_key_never_replacing_it(capture, tmp_path):
    data = mlp_data()
    kw = dict(num_steps=4, num_probes=1, cache=tmp_path, cache_key={"run": "same"}, progress=False)
    one = capture(lambda: slq(HessianOperator(mlp(0), F.cross_entropy, data), **kw))
    two = capture(lambda: slq(HessianOperator(mlp(1), F.cross_entropy, data), **kw))
    assert one[1]["cache_key"] == {"run": "same"} and hex_key(one) != hex_key(two)


@pytest.mark.parametrize("make", [
    lambda: functools.partial(F.cross_entropy, label_smoothing=0.1),
    lambda: (lambda smoothing: (lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing)))(0.1),
    lambda: _local_function(),
    lambda: _Callable().loss,
    lambda: _Callable(),
], ids=["partial", "closure", "local-function", "bound-method", "callable-object"])
def test_uncacheable_callables_are_refused(make, tmp_path):
    loss = make()
    with pytest.raises(UncacheableError, match="cache_key"):
        slq(HessianOperator(mlp(), loss, mlp_data()), num_steps=3, num_probes=1, cache=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.npz"))


def _local_function():
    def local_loss(out, y):
        return F.cross_entropy(out, y)
    return local_loss


class _Callable:
    def loss(self, out, y):
        return F.cross_entropy(out, y)

    def __call__(self, out, y):
        return F.cross_entropy(out, y)


def test_module_level_function_is_accepted_and_stable(capture, tmp_path):
    data = mlp_data()
    keys = [capture(lambda: blockwise_slq(mlp(), loss, data, cache=tmp_path, progress=False))
            for loss in (module_level_loss, module_level_loss, F.cross_entropy)]
    assert hex_key(keys[0]) == hex_key(keys[1]) != hex_key(keys[2])
    assert keys[0][1]["loss_fn"]["callable"] == f"{__name__}:module_level_loss"
    assert len(keys[0][1]["loss_fn"]["source_sha256"]) == 64


def test_keys_are_stable_across_processes():
    code = ("import torch.nn.functional as F; from hesslab.storage.cache import ResultCache; "
            "from hesslab.storage.fingerprint import computation_key; from hesslab.experiments.tiny_problems import tiny_gpt2; "
            "p = tiny_gpt2(); print(ResultCache.key('slq', computation_key('slq', model=p.model, "
            "loss_fn=p.loss_fn, data=p.data, num_steps=3)))")
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                          timeout=120)
           .stdout.strip() for _ in range(2)]
    from hesslab.experiments.tiny_problems import tiny_gpt2

    p = tiny_gpt2()
    here = ResultCache.key("slq", computation_key("slq", model=p.model, loss_fn=p.loss_fn, data=p.data, num_steps=3))
    assert out == [here, here]


def test_loss_modules_are_keyed_by_their_configuration(capture, tmp_path):
    data = mlp_data()

    def key_of(loss):
        return hex_key(capture(lambda: blockwise_slq(mlp(), loss, data, cache=tmp_path, progress=False)))

    plain = key_of(nn.CrossEntropyLoss())
    assert key_of(nn.CrossEntropyLoss()) == plain
    assert key_of(nn.CrossEntropyLoss(label_smoothing=0.1)) != plain
    assert key_of(nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0], dtype=torch.float64))) != plain


def test_batch_size_fn_is_in_the_key(capture, tmp_path):
    data = mlp_data()
    keys = {hex_key(capture(lambda: blockwise_slq(mlp(), F.cross_entropy, data, cache=tmp_path, progress=False,
                                                   batch_size_fn=fn)))
            for fn in (None, count_targets, count_inputs)}
    assert len(keys) == 3
    with pytest.raises(UncacheableError, match="batch_size_fn"):
        blockwise_slq(mlp(), F.cross_entropy, data, cache=tmp_path, progress=False,
                      batch_size_fn=lambda x, y: len(y))


# ---------------------------------------------------------------- arguments and version
BLOCKWISE = dict(num_steps=4, num_probes=2, seed=0, blocks=None, method="auto", batchnorm="eval",
                 reorthogonalize=True, basis_dtype=torch.float64)


@pytest.mark.parametrize("change", [
    {"num_steps": 5}, {"num_probes": 3}, {"seed": 1}, {"blocks": ["0.weight", "3.weight"]},
    {"method": "reverse"}, {"batchnorm": "train"}, {"reorthogonalize": False}, {"basis_dtype": torch.float32},
], ids=lambda c: next(iter(c)))
def test_every_argument_changes_the_blockwise_key(change, capture, tmp_path):
    data = mlp_data()
    base = capture(lambda: blockwise_slq(bn_mlp(), F.cross_entropy, data, cache=tmp_path, progress=False,
                                         **BLOCKWISE))
    assert base[1]["version"] == COMPUTATION_VERSIONS["blockwise_slq"] == 3
    changed = capture(lambda: blockwise_slq(bn_mlp(), F.cross_entropy, data, cache=tmp_path, progress=False,
                                            **{**BLOCKWISE, **change}))
    assert hex_key(changed) != hex_key(base)


def test_batchnorm_mode_is_keyed_only_for_a_model_with_batchnorm(capture, tmp_path):
    """The mode switches batch-norm layers only, so without them both modes are one computation."""
    data = mlp_data()
    keys = {mode: hex_key(capture(lambda: blockwise_slq(mlp(), F.cross_entropy, data, cache=tmp_path, progress=False,
                                                        **{**BLOCKWISE, "batchnorm": mode})))
            for mode in ("eval", "train")}
    assert keys["eval"] == keys["train"]
    # and the results agree: nothing in the model depends on the mode. Not bit for bit: two runs of the
    # same float64 arithmetic may sum in another order (BLAS picks its kernel by memory alignment), which
    # moves 4-step Ritz values by a few ulps times the Lanczos growth, far below 1e-10 relative.
    spectra = {mode: blockwise_slq(mlp(), F.cross_entropy, data, cache=None, progress=False,
                                   **{**BLOCKWISE, "batchnorm": mode}) for mode in ("eval", "train")}
    for name in spectra["eval"]:
        np.testing.assert_allclose(spectra["eval"][name].nodes, spectra["train"][name].nodes, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(spectra["eval"][name].weights, spectra["train"][name].weights, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("change", [
    {"num_steps": 5}, {"num_probes": 3}, {"seed": 1}, {"reorthogonalize": False},
    {"basis_dtype": torch.float32},
], ids=lambda c: next(iter(c)))
def test_every_argument_changes_the_slq_key(change, capture, tmp_path):
    op = HessianOperator(mlp(), F.cross_entropy, mlp_data())
    kw = dict(num_steps=4, num_probes=2, seed=0, cache=tmp_path, progress=False)
    base = capture(lambda: slq(op, **kw))
    assert base[1]["version"] == COMPUTATION_VERSIONS["slq"] == 3
    assert hex_key(capture(lambda: slq(op, **{**kw, **change}))) != hex_key(base)
    # the chunking never changes the result, so it is not in the key; the dtype a budget forces is
    assert hex_key(capture(lambda: slq(op, **kw, probe_chunk=1))) == hex_key(base)
    float32_budget = lanczos_bytes(op.dim, 4, 1, torch.float32)  # below one float64 probe
    assert (hex_key(capture(lambda: slq(op, **kw, memory_budget=float32_budget)))
            == hex_key(capture(lambda: slq(op, **kw, basis_dtype=torch.float32))))
    for options in ({"method": "forward"}, {"params": ["0.weight"]}, {"precision": "fast"}):
        other = HessianOperator(mlp(), F.cross_entropy, mlp_data(), **options)
        assert hex_key(capture(lambda: slq(other, **kw))) != hex_key(base), options
    modes = [HessianOperator(bn_mlp(), F.cross_entropy, mlp_data(), batchnorm=mode) for mode in ("eval", "train")]
    assert hex_key(capture(lambda: slq(modes[0], **kw))) != hex_key(capture(lambda: slq(modes[1], **kw)))
    block = op.restrict("0.weight")
    assert hex_key(capture(lambda: slq(block, **kw))) != hex_key(base)
    assert hex_key(capture(lambda: slq(HessianOperator(mlp(), F.cross_entropy, mlp_data(1)), **kw))) != hex_key(base)


def test_the_version_table_is_in_every_key(capture, monkeypatch, tmp_path):
    data = mlp_data()
    runs = {
        "slq": lambda: slq(HessianOperator(mlp(), F.cross_entropy, data), num_steps=3, cache=tmp_path, progress=False),
        "blockwise_slq": lambda: blockwise_slq(mlp(), F.cross_entropy, data, num_steps=3, cache=tmp_path,
                                               progress=False),
        "train": lambda: train(mlp, F.cross_entropy, data, TrainConfig("sgd", 0.1, 2), cache=tmp_path,
                               progress=False),
    }
    for kind, run in runs.items():
        before = capture(run)
        assert before[0] == kind and before[1]["version"] == COMPUTATION_VERSIONS[kind] >= 2
        monkeypatch.setitem(COMPUTATION_VERSIONS, kind, COMPUTATION_VERSIONS[kind] + 1)
        assert hex_key(capture(run)) != hex_key(before), kind


def test_matrix_and_unknown_operators(tmp_path):
    a = torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64))
    first = slq(a, num_steps=6, num_probes=1, cache=tmp_path, progress=False)
    second = slq(2 * a, num_steps=6, num_probes=1, cache=tmp_path, progress=False)
    np.testing.assert_allclose(second.nodes, 2 * first.nodes, rtol=1e-12)
    # a cache_key is added to the matrix's key: it never makes two matrices share one
    named = slq(a, num_steps=6, num_probes=1, cache=tmp_path, cache_key={"m": "A"}, progress=False)
    renamed = slq(3 * a, num_steps=6, num_probes=1, cache=tmp_path, cache_key={"m": "A"}, progress=False)
    np.testing.assert_allclose(renamed.nodes, 3 * named.nodes, rtol=1e-12)

    class Diagonal:
        dim, dtype, device = 6, torch.float64, torch.device("cpu")

        def matvec(self, v):
            return v * torch.arange(1.0, 7.0, dtype=torch.float64)

    with pytest.raises(UncacheableError, match="cache_key"):
        slq(Diagonal(), num_steps=6, num_probes=1, cache=tmp_path, progress=False)
    out = slq(Diagonal(), num_steps=6, num_probes=1, cache=tmp_path, cache_key={"op": "diag 1..6"}, progress=False)
    np.testing.assert_allclose(np.sort(out.nodes[0]), np.arange(1.0, 7.0), rtol=1e-10)


# ---------------------------------------------------------------- training runs
def test_train_keys_without_cache_key_and_refuses_lambdas(capture, tmp_path):
    data = mlp_data()
    config = TrainConfig("sgd", 0.1, 3)
    base = capture(lambda: train(mlp, F.cross_entropy, data, config, cache=tmp_path, progress=False))
    assert base[1]["version"] == 2 and "cache_key" not in base[1]
    pre = capture(lambda: train(lambda: twin(True), F.cross_entropy, twin_data(), config, cache=tmp_path,
                                progress=False))
    post = capture(lambda: train(lambda: twin(False), F.cross_entropy, twin_data(), config, cache=tmp_path,
                                 progress=False))
    assert hex_key(pre) != hex_key(post)
    others = [
        capture(lambda: train(mlp, nn.CrossEntropyLoss(label_smoothing=0.1), data, config, cache=tmp_path,
                              progress=False)),
        capture(lambda: train(mlp, F.cross_entropy, mlp_data(1), config, cache=tmp_path, progress=False)),
        capture(lambda: train(mlp, F.cross_entropy, data, TrainConfig("sgd", 0.1, 3, seed=1), cache=tmp_path,
                              progress=False)),
        capture(lambda: train(mlp, F.cross_entropy, data, TrainConfig("sgd", 0.2, 3), cache=tmp_path,
                              progress=False)),
        capture(lambda: train(mlp, F.cross_entropy, data, config, cache=tmp_path, cache_key={"m": "mlp"},
                              progress=False)),
    ]
    assert len({hex_key(base), *map(hex_key, others)}) == 1 + len(others)
    with pytest.raises(UncacheableError, match="cache_key"):
        train(mlp, lambda out, y: F.cross_entropy(out, y), data, config, cache=tmp_path, progress=False)


def test_pre_and_post_ln_training_runs_are_not_shared(tmp_path):
    config = TrainConfig("adamw", 1e-2, 4)
    data = twin_data()
    pre = train(lambda: twin(True), F.cross_entropy, data, config, cache=tmp_path, cache_key={"m": "twin"},
                progress=False)
    post = train(lambda: twin(False), F.cross_entropy, data, config, cache=tmp_path, cache_key={"m": "twin"},
                 progress=False)
    assert not np.array_equal(pre.losses, post.losses)


class _Evil:
    """Unpickling this creates ``path``: the stand-in for arbitrary code in a planted cache file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickled(obj) -> np.ndarray:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


@pytest.mark.parametrize("where", ["result", "checkpoint"])
def test_a_planted_pickle_in_the_cache_is_never_unpickled(where, tmp_path):
    cache_dir, marker = tmp_path / "cache", tmp_path / "pwned"
    data = mlp_data()
    config = TrainConfig("adamw", 1e-2, 6, checkpoints=(1.0,))
    honest = train(mlp, F.cross_entropy, data, config, cache=cache_dir, cache_key={"m": "mlp"}, progress=False)
    (record_path,) = (cache_dir / "train").glob("*.json")
    params = json.loads(record_path.read_text())["params"]
    store = ResultCache(cache_dir)
    # what someone controlling the folder would write: the old layout (a torch.save
    # pickle in a uint8 array) under the right key, with a matching record and checksum
    if where == "result":
        path = store.save("train", params, {"losses": honest.losses, "states": _pickled(_Evil(marker))})
    else:
        store.delete("train", params)
        path = store.save_partial("train", params, {"losses": honest.losses, "state": _pickled(_Evil(marker))})
    assert store.load_partial("train", params) if where == "checkpoint" else store.load("train", params)
    with pytest.raises(CacheFormatError) as info:
        train(mlp, F.cross_entropy, data, config, cache=cache_dir, cache_key={"m": "mlp"}, progress=False)
    message = str(info.value)
    assert str(path) in message and "Delete" in message and "pickle" in message
    assert not marker.exists(), "loading the cache ran code from it"


def test_states_round_trip_through_plain_arrays(tmp_path):
    """Every state a run keeps comes back from the cache bit-identical, with its dtype."""
    config = TrainConfig("adam-nobc", 1e-2, 5, checkpoints=(0.0, 0.6, 1.0))

    def half_and_double():
        model = mlp()
        model.add_module("extra", nn.Linear(2, 2).to(torch.bfloat16))
        model.extra.register_buffer("count", torch.tensor(3, dtype=torch.int64))
        return model

    data = mlp_data()
    fresh = train(mlp, F.cross_entropy, data, config, cache=tmp_path, cache_key={"m": "mlp"}, progress=False)
    cached = train(mlp, F.cross_entropy, data, config, cache=tmp_path, cache_key={"m": "mlp"}, progress=False)
    assert set(cached.states) == {0.0, 0.6, 1.0}
    for f in fresh.states:
        for k, v in fresh.states[f].items():
            assert cached.states[f][k].dtype == v.dtype and torch.equal(cached.states[f][k], v)
    from hesslab.experiments.training import _decode_states, _encode_states

    model = half_and_double()
    state = {"model": model.state_dict(), "nested": {0: [(1.5, None, True, "s", float("inf"))]}}
    back = _decode_states(_encode_states(state), "x")
    assert back["model"]["extra.weight"].dtype == torch.bfloat16
    assert torch.equal(back["model"]["extra.weight"], model.extra.weight)
    assert back["model"]._metadata == model.state_dict()._metadata
    assert back["nested"] == {0: [(1.5, None, True, "s", float("inf"))]}
