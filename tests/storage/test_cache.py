"""hesslab.storage.cache: keys, bit-identical round trips, refusal of bad files, checkpoints."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hesslab.storage.cache import CacheWarning, CachedResult, ResultCache, canonical_json, default_root, provenance

PARAMS = {"model": "gpt2-nano", "lr": 1e-3, "seeds": (0, 1), "opts": {"steps": 10, "reorth": True}}


@pytest.fixture
def cache(tmp_path):
    return ResultCache(tmp_path / "cache")


def sample_arrays():
    g = np.random.default_rng(0)
    return {
        "f32": g.standard_normal((3, 4)).astype(np.float32),
        "f64": g.standard_normal(5),
        "i64": np.arange(-3, 4, dtype=np.int64),
        "u8": np.array([0, 255], dtype=np.uint8),
        "scalar": np.asarray(2.5),
        "fortran": np.asfortranarray(g.standard_normal((2, 3))),
        "file": np.array([np.nan, -0.0, np.inf]),  # a name np.savez would take as its own argument
    }


def assert_bit_identical(got, want):
    assert set(got) == set(want), f"names {sorted(got)} != {sorted(want)}"
    for name, w in want.items():
        w = w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
        g = got[name]
        assert g.dtype == w.dtype and g.shape == w.shape, f"{name}: {g.dtype}{g.shape} != {w.dtype}{w.shape}"
        assert g.tobytes() == w.tobytes(), f"{name}: bytes differ: {g} vs {w}"


def files_in(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------ round trips
def test_numpy_arrays_round_trip_bit_identical_with_provenance(cache):
    arrays = sample_arrays()
    path = cache.save("spectra", PARAMS, arrays, meta={"note": "toy", "n": np.int64(3)}, wall_time=1.5)
    assert path == cache.root / "spectra" / f"{cache.key('spectra', PARAMS)}.npz"
    res = cache.load("spectra", PARAMS)
    assert isinstance(res, CachedResult) and res.from_cache and res.path == path
    assert_bit_identical(res.arrays, arrays)
    assert res.arrays["fortran"].flags.f_contiguous
    meta = res.meta
    assert meta["kind"] == "spectra" and meta["key"] == path.stem
    assert meta["params"] == json.loads(canonical_json(PARAMS))
    assert meta["wall_time_s"] == 1.5 and meta["note"] == "toy" and meta["n"] == 3
    assert meta["partial"] is False and meta["created_utc"].endswith("+00:00")
    for field in ("hesslab", "python", "torch", "numpy", "transformers", "platform", "device", "git_revision"):
        assert field in meta["environment"], field


def test_torch_tensors_are_stored_as_numpy_bit_identical(cache):
    tensors = {"w": torch.randn(4, 3, dtype=torch.float64, requires_grad=True),
               "h": torch.randn(2, 2).half(), "idx": torch.arange(5), "t": torch.randn(3, 2).t()}
    cache.save("tensors", {"a": 1}, tensors)
    res = cache.load("tensors", {"a": 1})
    assert_bit_identical(res.arrays, tensors)


def test_equal_arrays_give_byte_identical_npz_files(tmp_path):
    a, b = ResultCache(tmp_path / "a"), ResultCache(tmp_path / "b")
    pa, pb = a.save("k", PARAMS, sample_arrays()), b.save("k", PARAMS, sample_arrays())
    assert pa.read_bytes() == pb.read_bytes()


def test_missing_result_loads_as_none_silently(cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load("spectra", PARAMS) is None
        assert cache.load_partial("spectra", PARAMS) is None


def test_unsupported_array_values_are_rejected_before_writing(cache):
    with pytest.raises(TypeError, match="object dtype"):
        cache.save("k", {}, {"x": np.array([{}, 1], dtype=object)})
    with pytest.raises(TypeError, match="no numpy equivalent"):
        cache.save("k", {}, {"x": torch.ones(2, dtype=torch.bfloat16)})
    with pytest.raises(ValueError, match="reserved"):
        cache.save("k", {}, {"x": np.ones(2)}, meta={"params": 1})
    assert not cache.root.exists() or files_in(cache.root) == []


# ------------------------------------------------------------------ keys
def test_same_params_same_key_and_dict_order_does_not_matter():
    k = ResultCache.key
    assert k("s", PARAMS) == k("s", dict(reversed(list(PARAMS.items()))))
    assert k("s", {"o": {"a": 1, "b": 2}}) == k("s", {"o": {"b": 2, "a": 1}})
    assert k("s", {"x": (1, 2)}) == k("s", {"x": [1, 2]})
    assert k("s", {"x": np.float64(0.1), "n": np.int32(3)}) == k("s", {"x": 0.1, "n": 3})
    assert k("s", {"d": torch.float32, "dev": torch.device("cpu")}) == k("s", {"d": "torch.float32", "dev": "cpu"})
    assert k("s", {"a": np.arange(3)}) == k("s", {"a": np.arange(3)})
    assert k("s", {"t": torch.tensor(0.5, dtype=torch.float64)}) == k("s", {"t": 0.5})
    assert len(k("s", PARAMS)) == 64


@pytest.mark.parametrize("a, b", [
    ({"lr": 0.1}, {"lr": 0.1000001}),
    ({"lr": 0.1}, {"lr": np.float32(0.1)}),  # float32(0.1) is not the double 0.1
    ({"lr": 1}, {"lr": 1.0}),
    ({"lr": 1}, {"lr": True}),
    ({"x": 0.0}, {"x": -0.0}),
    ({"x": float("nan")}, {"x": "nan"}),
    ({"x": None}, {"x": "None"}),
    ({"dtype": torch.float32}, {"dtype": torch.float64}),
    ({"a": np.arange(3, dtype=np.int64)}, {"a": np.arange(3, dtype=np.int32)}),
    ({"a": np.zeros((2, 3))}, {"a": np.zeros((3, 2))}),
    ({"a": np.array([1.0, 2.0])}, {"a": np.array([1.0, 2.0000001])}),
    ({"o": {"a": [1, 2]}}, {"o": {"a": [2, 1]}}),
    ({"o": {"a": 1}}, {"o": {"a": 1, "b": None}}),
])
def test_any_change_in_params_changes_the_key(a, b):
    assert ResultCache.key("s", a) != ResultCache.key("s", b), f"{canonical_json(a)} vs {canonical_json(b)}"


def test_kind_is_part_of_the_key():
    assert ResultCache.key("spectra", PARAMS) != ResultCache.key("training", PARAMS)


def test_big_endian_array_hashes_like_native():
    a = np.arange(4.0)
    assert ResultCache.key("s", {"a": a}) == ResultCache.key("s", {"a": a.astype(">f8")})


def test_canonical_json_writes_floats_as_repr():
    assert canonical_json({"b": 0.1, "a": 1e-300, "c": float("inf")}) == \
        '{"a":1e-300,"b":0.1,"c":{"__float__":"inf"}}'


@pytest.mark.parametrize("params, where", [
    ({"s": {1, 2}}, r"params\['s'\]"),
    ({"o": {"f": lambda: 0}}, r"params\['o'\]\['f'\]"),
    ({"p": Path("x")}, r"params\['p'\]"),
    ({"l": [1, object()]}, r"params\['l'\]\[1\]"),
    ({"o": {3: "int key"}}, "str keys"),
])
def test_unsupported_param_type_raises_type_error_naming_it(params, where):
    with pytest.raises(TypeError, match=where):
        ResultCache.key("s", params)


def test_bad_kind_is_rejected():
    for kind in ("", "../up", "a/../b", "sp ace", "/abs"):
        with pytest.raises(ValueError, match="cache kind"):
            ResultCache.key(kind, {})
    ResultCache.key("spectra/gpt2-nano_v1.0", {})


# ------------------------------------------------------------------ refusing bad files
def corrupt_flip(npz: Path, sidecar: Path):
    data = bytearray(npz.read_bytes())
    data[-200] ^= 0xFF  # inside the last array's payload
    npz.write_bytes(bytes(data))


def corrupt_truncate(npz: Path, sidecar: Path):
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])


def corrupt_params(npz: Path, sidecar: Path):
    record = json.loads(sidecar.read_text())
    record["params"]["lr"] = 0.5
    sidecar.write_text(json.dumps(record))


def corrupt_checksum(npz: Path, sidecar: Path):
    record = json.loads(sidecar.read_text())
    record["sha256"] = "0" * 64
    sidecar.write_text(json.dumps(record))


def corrupt_json(npz: Path, sidecar: Path):
    sidecar.write_text(sidecar.read_text()[:40])


def corrupt_consistently(npz: Path, sidecar: Path):
    # valid zip with a correct checksum, but not the arrays the record lists
    other = ResultCache(npz.parent.parent / "other").save("x", {}, {"f32": np.zeros(1)})
    npz.write_bytes(other.read_bytes())
    record = json.loads(sidecar.read_text())
    record["sha256"] = json.loads(other.with_suffix(".json").read_text())["sha256"]
    sidecar.write_text(json.dumps(record))


def remove_npz(npz: Path, sidecar: Path):
    npz.unlink()


@pytest.mark.parametrize("damage, reason", [
    (corrupt_flip, "checksum does not match"),
    (corrupt_truncate, "checksum does not match"),
    (corrupt_params, "params"),
    (corrupt_checksum, "checksum does not match"),
    (corrupt_json, "not valid JSON"),
    (corrupt_consistently, "differ from the record"),
    (remove_npz, "missing"),
])
@pytest.mark.parametrize("partial", [False, True])
def test_damaged_result_is_refused_with_warning_then_recomputed(cache, damage, reason, partial):
    arrays = sample_arrays()
    if partial:
        npz = cache.save_partial("spectra", PARAMS, arrays, meta={"step": 3})
    else:
        npz = cache.save("spectra", PARAMS, arrays)
    sidecar = npz.with_suffix(".json")
    damage(npz, sidecar)
    load = cache.load_partial if partial else cache.load
    with pytest.warns(CacheWarning) as record:
        assert load("spectra", PARAMS) is None
    message = str(record[0].message)
    assert reason in message and str(sidecar) in message and "recomputed" in message, message
    assert "Moved the files to" in message
    assert not npz.exists() and not sidecar.exists()
    assert list((npz.parent / ".rejected").iterdir()), "the refused files are kept for inspection"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second load finds nothing and says nothing
        assert load("spectra", PARAMS) is None
    res = cache.get_or_compute("spectra", PARAMS, lambda: (arrays, {"again": True}))
    assert not res.from_cache
    assert_bit_identical(cache.load("spectra", PARAMS).arrays, arrays)


def test_unreadable_zip_with_matching_checksum_is_refused(cache):
    npz = cache.save("k", PARAMS, sample_arrays())
    npz.write_bytes(b"not a zip file")
    record = json.loads(npz.with_suffix(".json").read_text())
    record["sha256"] = __import__("hashlib").sha256(b"not a zip file").hexdigest()
    npz.with_suffix(".json").write_text(json.dumps(record))
    with pytest.warns(CacheWarning, match="cannot be read"):
        assert cache.load("k", PARAMS) is None


def test_record_without_arrays_after_interrupted_save_is_absent(cache):
    # a crash between the .npz and the .json replace leaves arrays with no record
    npz = cache.save("k", PARAMS, sample_arrays())
    npz.with_suffix(".json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load("k", PARAMS) is None


# ------------------------------------------------------------------ get_or_compute
def test_get_or_compute_computes_once_then_loads(cache):
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3.0)}, {"loss": 0.25}

    first = cache.get_or_compute("k", PARAMS, compute)
    second = cache.get_or_compute("k", PARAMS, compute)
    assert len(calls) == 1 and not first.from_cache and second.from_cache
    assert_bit_identical(second.arrays, first.arrays)
    assert first.meta == second.meta and second.meta["loss"] == 0.25
    assert second.meta["wall_time_s"] >= 0 and second["x"][2] == 2.0
    cache.get_or_compute("k", PARAMS, compute, recompute=True)
    assert len(calls) == 2


def test_get_or_compute_accepts_plain_mapping_and_rejects_other_returns(cache):
    assert cache.get_or_compute("k", {"a": 1}, lambda: {"x": torch.ones(2)}).arrays["x"].dtype == np.float32
    with pytest.raises(TypeError, match="must return"):
        cache.get_or_compute("k", {"a": 2}, lambda: [1, 2, 3])


def test_delete_removes_result(cache):
    cache.save("k", PARAMS, {"x": np.ones(1)})
    cache.delete("k", PARAMS)
    assert cache.load("k", PARAMS) is None and files_in(cache.root) == []


# ------------------------------------------------------------------ checkpoints
def test_partial_checkpoint_save_load_clear_and_final_save_clears_it(cache):
    cache.save_partial("train", PARAMS, {"w": np.ones(3)}, meta={"step": 1})
    cache.save_partial("train", PARAMS, {"w": np.full(3, 2.0)}, meta={"step": 2})
    part = cache.load_partial("train", PARAMS)
    assert part.meta["step"] == 2 and part.meta["partial"] is True
    assert_bit_identical(part.arrays, {"w": np.full(3, 2.0)})
    assert cache.load("train", PARAMS) is None, "a checkpoint is not a result"
    cache.clear_partial("train", PARAMS)
    assert cache.load_partial("train", PARAMS) is None
    cache.save_partial("train", PARAMS, {"w": np.ones(3)}, meta={"step": 3})
    cache.save("train", PARAMS, {"w": np.zeros(3)})
    assert cache.load_partial("train", PARAMS) is None
    key = cache.key("train", PARAMS)
    assert files_in(cache.root) == [f"train/{key}.json", f"train/{key}.npz"]


def test_resume_from_checkpoint_after_interruption(cache):
    def run(steps, stop_at=None):
        start = cache.load_partial("train", {"steps": steps})
        x, step = (start["x"].copy(), int(start.meta["step"])) if start else (np.zeros(2), 0)
        for step in range(step + 1, steps + 1):
            x = x + step
            cache.save_partial("train", {"steps": steps}, {"x": x}, meta={"step": step})
            if step == stop_at:
                raise KeyboardInterrupt
        return {"x": x}, {"resumed_from": start.meta["step"] if start else 0}

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute("train", {"steps": 5}, lambda: run(5, stop_at=3))
    res = cache.get_or_compute("train", {"steps": 5}, lambda: run(5))
    assert res.meta["resumed_from"] == 3 and res["x"].tolist() == [15.0, 15.0]


# ------------------------------------------------------------------ atomicity
def test_writes_leave_no_temporary_files(cache):
    for i in range(3):
        cache.save_partial("k", PARAMS, {"x": np.arange(i + 1)})
        cache.save("k", PARAMS, {"x": np.arange(i + 1)}, meta={"i": i})
    assert all(not name.split("/")[-1].startswith(".") for name in files_in(cache.root)), files_in(cache.root)


def test_failed_write_keeps_no_temporary_file_and_no_readable_half_result(cache, monkeypatch):
    cache.save("k", PARAMS, {"x": np.ones(2)})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(OSError, match="disk full"):
        cache.save("k", PARAMS, {"x": np.zeros(2)})
    monkeypatch.undo()
    assert files_in(cache.root) == [f"k/{cache.key('k', PARAMS)}.npz"], "only the old arrays, no record"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load("k", PARAMS) is None


def test_unserialisable_meta_fails_before_touching_files(cache):
    cache.save("k", PARAMS, {"x": np.ones(2)})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        cache.save("k", PARAMS, {"x": np.zeros(2)}, meta={"bad": object()})
    assert_bit_identical(cache.load("k", PARAMS).arrays, {"x": np.ones(2)})


# ------------------------------------------------------------------ roots and provenance
def test_default_root_follows_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("HESSLAB_CACHE", str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    assert ResultCache().root == tmp_path / "elsewhere"
    monkeypatch.delenv("HESSLAB_CACHE")
    root = default_root()
    assert root.parts[-2:] == ("data", "cache") or root == Path.home() / ".cache" / "hesslab"


def test_provenance_is_json_and_names_versions_and_device():
    env = provenance()
    json.dumps(env)
    assert env["torch"] == torch.__version__ and env["numpy"] == np.__version__
    assert env["device"] == (torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    assert env["git_revision"] is None or len(env["git_revision"]) == 40


def test_fingerprint_of_a_model_with_zero_dim_buffers():
    """BatchNorm's ``num_batches_tracked`` is a 0-d int64 buffer; it must hash and count."""
    from hesslab.storage.fingerprint import model_fingerprint

    model = torch.nn.BatchNorm1d(3)
    before = model_fingerprint(model)
    model.num_batches_tracked += 1
    assert model_fingerprint(model) != before
