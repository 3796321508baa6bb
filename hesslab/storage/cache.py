"""Results stored as files, keyed by a hash of every parameter that changes them.

A result that takes more than a few seconds (a blockwise spectrum, a training run)
is computed once and stored; a chapter or a long run loads it instead of
recomputing, and an interrupted run resumes from its last checkpoint.

Layout under the cache root (``$HESSLAB_CACHE``, else ``<repo>/data/cache``, else
``~/.cache/hesslab``)::

    <root>/<kind>/<key>.npz            the arrays (an uncompressed ``.npz``)
    <root>/<kind>/<key>.json           provenance record, written last
    <root>/<kind>/<key>.partial.npz    checkpoint of an unfinished run (and .partial.json)
    <root>/<kind>/.rejected/           files refused by :meth:`ResultCache.load`

``key`` is the sha256 (hex) of ``kind`` and the canonical JSON form of ``params``
(:func:`canonical_json`). The ``.npz`` holds one ``<name>.npy`` member per array,
written with fixed zip timestamps, so equal arrays give byte-identical files. The
``.json`` record holds:

- ``format`` (:data:`FORMAT`), ``kind``, ``key``, ``params`` (canonical JSON form),
  ``partial`` (bool);
- ``arrays``: ``{name: {"dtype": numpy dtype.str, "shape": [...]}}``;
- ``sha256``: checksum of the ``.npz`` file;
- ``wall_time_s`` (float or null), ``created_utc`` (ISO 8601);
- ``environment``: :func:`provenance` (versions, platform, device, git revision);
- every key of the caller's ``meta`` (which must not reuse the names above).

Every file is written atomically (temporary file in the same folder, ``fsync``,
``os.replace``), the record last, and an existing record is removed before its
arrays are replaced: a crash leaves either the old result, the new one, or no
readable result, never a mix. :meth:`ResultCache.load` checks the record against
the request and the checksum against the file; anything that does not match is
moved to ``.rejected/`` with a :class:`CacheWarning` and treated as absent.

hesslab's own computations build ``params`` with
:func:`hesslab.storage.fingerprint.computation_key` only: the model's values *and* structure
(module classes, their source, configuration attributes, a Hugging Face config),
the loss function's and ``batch_size_fn``'s identity (callables that cannot be
identified, such as lambdas and partials, are refused unless a ``cache_key``
describes them), the data, every argument that changes the result, and hesslab's
version of the computation (see that module for what is and is not covered).

Nothing stored is ever unpickled: arrays are read with ``allow_pickle=False`` and
nested states (a training run's model and optimiser states) are plain arrays plus
JSON, so a cache folder from someone else cannot run code when loaded. A training
run's file that passes the checks above but holds anything else raises
:class:`CacheFormatError`, naming the file to delete.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from hesslab.checkpoint import Progress

#: Version of the file layout; part of every key, so a change invalidates old files.
FORMAT = 1

#: Record fields written by the cache itself; a caller's ``meta`` may not use them.
RESERVED_META_KEYS = frozenset(
    {"format", "kind", "key", "params", "partial", "arrays", "sha256",
     "wall_time_s", "created_utc", "environment"}
)

ArrayLike = Union[np.ndarray, torch.Tensor]

_KIND_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: equal arrays, equal bytes


class CacheWarning(UserWarning):
    """A stored result was refused (corrupt, truncated or for other parameters)."""


class CacheFormatError(ValueError):
    """A stored result passed its checks but its content is not in the format hesslab writes.

    Raised instead of interpreting it (hesslab never unpickles cached files); the
    message names the file to delete.
    """


# ---------------------------------------------------------------- parameters
def _canonical(obj: Any, where: str) -> Any:
    """JSON-ready canonical form of a parameter value (see :func:`canonical_json`)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)  # IntEnum and friends hash as their value
    if isinstance(obj, float):
        if math.isfinite(obj):
            return float(obj)  # json writes float.__repr__: shortest exact round trip
        return {"__float__": repr(float(obj))}  # nan, inf, -inf are not JSON numbers
    if isinstance(obj, np.ndarray) or isinstance(obj, torch.Tensor) and obj.dim() > 0:
        return _array_digest(obj, where)
    if isinstance(obj, np.generic):
        if isinstance(obj, (np.bool_, np.number, np.str_)):
            return _canonical(obj.item(), where)
    elif isinstance(obj, torch.Tensor):
        return _canonical(obj.item(), where)
    elif isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    elif isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"cache parameter {where} has a key {k!r} of type {type(k).__name__}; "
                                "parameter mappings need str keys")
            out[k] = _canonical(v, f"{where}[{k!r}]")
        return out
    elif isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(
        f"cache parameter {where} has unsupported type {type(obj).__module__}.{type(obj).__qualname__} "
        f"({obj!r:.80}); use None, bool, int, float, str, lists/tuples, str-keyed dicts, numpy "
        "scalars or arrays, torch tensors, dtypes or devices (e.g. dataclasses.asdict(x), str(path))"
    )


def _array_digest(a: ArrayLike, where: str) -> dict:
    """Stand-in for an array parameter: sha256 of its little-endian C-order bytes, dtype, shape."""
    a = _to_numpy(a, where)
    if a.dtype.hasobject:
        raise TypeError(f"cache parameter {where} is an object array; only numeric arrays can be hashed")
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a)
    return {"__ndarray__": hashlib.sha256(a.tobytes()).hexdigest(),
            "dtype": a.dtype.str, "shape": list(a.shape)}


def canonical_json(params: Mapping) -> str:
    """The canonical JSON text of ``params``: the thing a cache key hashes.

    Dict keys are sorted (so their order never matters), tuples become lists, floats
    are written as ``repr`` (``0.1`` and ``0.1000001`` differ; ``1`` and ``1.0`` differ
    too), non-finite floats become ``{"__float__": "nan"}``, numpy scalars become
    Python scalars, arrays and tensors of any shape become
    ``{"__ndarray__": sha256, "dtype": "<f8", "shape": [...]}`` (0-d tensors become
    scalars), torch dtypes and devices become strings (``"torch.float32"``, ``"cuda:0"``).

    Args:
        params: str-keyed mapping of everything that changes the result.

    Returns:
        Compact ASCII JSON text.

    Raises:
        TypeError: for any value of another type, naming where it sits in ``params``.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"cache params must be a mapping, got {type(params).__name__}")
    return _dumps(_canonical(params, "params"))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


# ---------------------------------------------------------------- environment
def _repo_root() -> Path | None:
    """The source checkout this package lives in, or None when installed elsewhere."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "hesslab").is_dir() else None


def _git(*args: str) -> str | None:
    root = _repo_root()
    if root is None:
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict:
    """The environment a result is computed in (the ``environment`` part of a record).

    Returns:
        Dict with ``hesslab``, ``python``, ``torch``, ``numpy``, ``transformers``
        versions (None where not installed), ``platform``, ``machine``, ``cpu_count``,
        ``torch_threads``, ``device`` (CUDA device name, or ``"cpu"``), ``cuda``
        (torch's CUDA version or None), ``git_revision`` and ``git_dirty``
        (tracked files modified; both None outside a git checkout).
    """
    hesslab = sys.modules.get("hesslab")
    cuda = torch.cuda.is_available()
    revision = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if revision else None
    return {
        "hesslab": getattr(hesslab, "__version__", None) or _version("hesslab"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "transformers": _version("transformers"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(torch.cuda.current_device()) if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "git_revision": revision or None,
        "git_dirty": None if status is None else bool(status),
    }


# ---------------------------------------------------------------- file helpers
def _to_numpy(a: Any, where: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().resolve_conj().resolve_neg().cpu()
        try:
            return a.numpy()
        except TypeError as err:  # bfloat16 and friends have no numpy dtype
            raise TypeError(f"{where}: torch dtype {a.dtype} has no numpy equivalent; "
                            "convert it first (e.g. .float())") from err
    return np.asarray(a)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> str:
    """Write ``path`` through a temporary file in its folder; return the file's sha256."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            digest = _sha256_stream(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return digest


def _write_npz(f: Any, arrays: Mapping[str, np.ndarray]) -> None:
    # np.savez would take an array named "file" as its own argument and stamp the
    # current time into the zip; writing the members ourselves avoids both.
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)


def _sha256_stream(f: Any) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_stream(f)


def _json_default(obj: Any) -> Any:
    """Meta values that JSON does not know: numpy scalars/arrays, torch dtypes, paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, (torch.dtype, torch.device, os.PathLike)):
        return str(obj)
    raise TypeError(f"cache meta value {obj!r:.80} of type {type(obj).__name__} is not JSON-serialisable")


# ---------------------------------------------------------------- the cache
@dataclass(frozen=True)
class CachedResult:
    """A stored result.

    Attributes:
        arrays: name -> numpy array, fully loaded (bit-identical to what was saved).
        meta: the provenance record (see the module docstring), including the
            caller's ``meta`` keys.
        path: the ``.npz`` file.
        from_cache: True when loaded from disk, False when just computed.
    """

    arrays: dict[str, np.ndarray]
    meta: dict
    path: Path
    from_cache: bool = True

    def __getitem__(self, name: str) -> np.ndarray:
        """``result["nodes"]`` is ``result.arrays["nodes"]``."""
        return self.arrays[name]


def default_root() -> Path:
    """``$HESSLAB_CACHE``, else ``<repo>/data/cache`` in a writable source checkout, else ``~/.cache/hesslab``."""
    env = os.environ.get("HESSLAB_CACHE")
    if env:
        return Path(env).expanduser()
    repo = _repo_root()
    if repo is not None:
        candidate = repo / "data" / "cache"
        existing = next(p for p in (candidate, *candidate.parents) if p.exists())
        if os.access(existing, os.W_OK):
            return candidate
    return Path.home() / ".cache" / "hesslab"


class ResultCache:
    """Results on disk, keyed by ``kind`` and a hash of their parameters.

    Args:
        root: cache folder; default :func:`default_root`. Created on first write.

    Two processes saving the same key at once may pair one's record with the
    other's arrays; the checksum catches that and the next load recomputes.

    Example:
        >>> import tempfile
        >>> cache = ResultCache(tempfile.mkdtemp())
        >>> res = cache.get_or_compute("spectrum", {"n": 8, "seed": 0},
        ...                            lambda: ({"eig": np.arange(8.0)}, {"note": "toy"}))
        >>> res.from_cache, res["eig"].shape, res.meta["note"]
        (False, (8,), 'toy')
        >>> cache.load("spectrum", {"seed": 0, "n": 8}).from_cache
        True
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()

    def __repr__(self) -> str:
        """``ResultCache('<root>')``."""
        return f"ResultCache({str(self.root)!r})"

    # ------------------------------------------------------------ naming
    @staticmethod
    def key(kind: str, params: Mapping) -> str:
        """sha256 (hex) of the layout :data:`FORMAT`, ``kind`` and :func:`canonical_json` of ``params``.

        Raises:
            TypeError: for a parameter value of an unsupported type.
            ValueError: for a ``kind`` that is not ``/``-separated ``[A-Za-z0-9_.-]`` names.
        """
        _check_kind(kind)
        text = f"hesslab-cache/{FORMAT}\n{kind}\n{canonical_json(params)}"
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def path(self, kind: str, params: Mapping, partial: bool = False) -> Path:
        """The ``.npz`` file a result (or its checkpoint) lives in; the record is beside it (``.json``)."""
        suffix = ".partial.npz" if partial else ".npz"
        return self.root / kind / f"{self.key(kind, params)}{suffix}"

    # ------------------------------------------------------------ final results
    def save(self, kind: str, params: Mapping, arrays: Mapping[str, ArrayLike],
             meta: Mapping | None = None, wall_time: float | None = None) -> Path:
        """Store a result (replacing any earlier one) and drop its checkpoint.

        Args:
            kind: what was computed, e.g. ``"blockwise_spectra"``; a folder name.
            params: everything that changes the result (see :func:`canonical_json`).
            arrays: name -> numpy array or torch tensor (moved to CPU; no object dtype).
            meta: extra JSON-serialisable facts (numbers, strings, lists, numpy
                scalars/arrays); keys must not be in :data:`RESERVED_META_KEYS`.
            wall_time: seconds the computation took.

        Returns:
            Path of the ``.npz`` file.
        """
        path = self._write(kind, params, arrays, meta, wall_time, partial=False)
        self.clear_partial(kind, params)
        return path

    def load(self, kind: str, params: Mapping) -> CachedResult | None:
        """The stored result for ``kind`` and ``params``, or None.

        The record must parse and match ``kind``, the key and ``params`` exactly, and
        the ``.npz`` must match its checksum and listed arrays. Otherwise a
        :class:`CacheWarning` says what is wrong, the files move to ``.rejected/``,
        and None is returned, so the caller recomputes.
        """
        return self._read(kind, params, partial=False)

    def delete(self, kind: str, params: Mapping) -> None:
        """Remove a stored result (and its checkpoint), if any."""
        self._remove(kind, params, partial=False)
        self.clear_partial(kind, params)

    def get_or_compute(self, kind: str, params: Mapping,
                       compute: Callable[[], Any], recompute: bool = False) -> CachedResult:
        """Load the result, or run ``compute``, time it, save and return it.

        Args:
            kind: see :meth:`save`.
            params: see :meth:`save`.
            compute: no-argument function returning ``(arrays, meta)`` or just ``arrays``.
                A long one may checkpoint with :meth:`save_partial` and resume with
                :meth:`load_partial`.
            recompute: ignore (and replace) a stored result.

        Returns:
            The result; ``from_cache`` says whether it was loaded.
        """
        if not recompute:
            hit = self.load(kind, params)
            if hit is not None:
                return hit
        start = time.perf_counter()
        out = compute()
        wall = time.perf_counter() - start
        if isinstance(out, tuple) and len(out) == 2:
            arrays, meta = out
        elif isinstance(out, Mapping):
            arrays, meta = out, None
        else:
            raise TypeError(f"compute() for {kind!r} must return (arrays, meta) or a mapping of "
                            f"arrays, got {type(out).__name__}")
        path = self.save(kind, params, arrays, meta, wall_time=wall)
        record = json.loads(path.with_suffix(".json").read_text())
        stored = {name: _to_numpy(a, f"array {name!r}") for name, a in arrays.items()}
        return CachedResult(stored, record, path, from_cache=False)

    # ------------------------------------------------------------ checkpoints
    def save_partial(self, kind: str, params: Mapping, arrays: Mapping[str, ArrayLike],
                     meta: Mapping | None = None) -> Path:
        """Checkpoint an unfinished run (``<key>.partial.npz``), replacing the previous one.

        Same format, atomicity and arguments as :meth:`save`; put the progress
        (e.g. ``{"step": 120}``) in ``meta``.
        """
        return self._write(kind, params, arrays, meta, None, partial=True)

    def load_partial(self, kind: str, params: Mapping) -> CachedResult | None:
        """The latest checkpoint, or None; verified and refused like :meth:`load`."""
        return self._read(kind, params, partial=True)

    def clear_partial(self, kind: str, params: Mapping) -> None:
        """Remove the checkpoint, if any."""
        self._remove(kind, params, partial=True)

    def checkpoint(self, kind: str, params: Mapping) -> StoredCheckpoint:
        """A :class:`hesslab.checkpoint.Checkpoint` for the computation ``kind`` with key ``params``.

        Unfinished progress goes to :meth:`save_partial`, finished results to :meth:`save`
        (``meta["wall_time"]``, when present, is recorded as the wall time).
        """
        _check_kind(kind)
        return StoredCheckpoint(self, kind, params)

    # ------------------------------------------------------------ internals
    def _write(self, kind, params, arrays, meta, wall_time, partial) -> Path:
        npz = self.path(kind, params, partial)
        meta = dict(meta or {})
        clash = RESERVED_META_KEYS.intersection(meta)
        if clash:
            raise ValueError(f"meta keys {sorted(clash)} are reserved by the cache record; rename them")
        if not isinstance(arrays, Mapping) or not arrays:
            raise ValueError(f"arrays for {kind!r} must be a non-empty mapping of name -> array")
        np_arrays = {}
        for name, a in arrays.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"array names must be non-empty str, got {name!r}")
            a = _to_numpy(a, f"array {name!r}")
            if a.dtype.hasobject:
                raise TypeError(f"array {name!r} has object dtype; store numeric arrays only")
            np_arrays[name] = a
        record = {
            "format": FORMAT,
            "kind": kind,
            "key": npz.name.split(".")[0],
            "params": json.loads(canonical_json(params)),
            "partial": partial,
            "arrays": {n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in np_arrays.items()},
            "sha256": None,
            "wall_time_s": None if wall_time is None else float(wall_time),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "environment": provenance(),
            **meta,
        }
        text = json.dumps(record, indent=1, default=_json_default) + "\n"  # fail before touching files
        npz.parent.mkdir(parents=True, exist_ok=True)
        sidecar = npz.with_suffix(".json")
        # Old record first: between the two replaces there must be no record that
        # vouches for arrays it does not describe.
        sidecar.unlink(missing_ok=True)
        record["sha256"] = _atomic_write(npz, lambda f: _write_npz(f, np_arrays))
        text = json.dumps(record, indent=1, default=_json_default) + "\n"
        _atomic_write(sidecar, lambda f: f.write(text.encode("utf-8")))
        return npz

    def _read(self, kind, params, partial) -> CachedResult | None:
        key = self.key(kind, params)
        npz = self.path(kind, params, partial)
        sidecar = npz.with_suffix(".json")
        if not sidecar.exists():
            return None  # nothing stored, or a save interrupted before its record
        reason = None
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            record, reason = None, f"its record is not valid JSON ({err})"
        if reason is None:
            reason = _record_mismatch(record, kind, key, canonical_json(params), partial)
        if reason is None and not npz.exists():
            reason = "its .npz file is missing"
        if reason is None and _sha256_file(npz) != record["sha256"]:
            reason = "the .npz checksum does not match its record (file corrupted or replaced)"
        if reason is None:
            try:
                with np.load(npz, allow_pickle=False) as z:
                    arrays = {name: z[name] for name in z.files}
            except Exception as err:  # noqa: BLE001 - any unreadable file is refused the same way
                reason = f"its .npz cannot be read ({type(err).__name__}: {err})"
        if reason is None:
            got = {n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()}
            if got != record["arrays"]:
                reason = f"its arrays {got} differ from the record's {record['arrays']}"
        if reason is not None:
            moved = self._reject(npz, sidecar)
            what = "checkpoint" if partial else "result"
            warnings.warn(f"hesslab cache: refusing the stored {kind!r} {what} {sidecar}: {reason}. "
                          f"{moved}; it will be recomputed.", CacheWarning, stacklevel=3)
            return None
        return CachedResult(arrays, record, npz, from_cache=True)

    def _reject(self, npz: Path, sidecar: Path) -> str:
        """Move a refused pair to ``.rejected/`` (delete if that fails); say what happened."""
        dest = npz.parent / ".rejected"
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        try:
            dest.mkdir(exist_ok=True)
            for f in (sidecar, npz):
                if f.exists():
                    os.replace(f, dest / f"{f.name}.{stamp}")
            return f"Moved the files to {dest}"
        except OSError:
            for f in (sidecar, npz):
                f.unlink(missing_ok=True)
            return "Deleted the files"

    def _remove(self, kind, params, partial) -> None:
        npz = self.path(kind, params, partial)
        npz.with_suffix(".json").unlink(missing_ok=True)  # record first, as in _write
        npz.unlink(missing_ok=True)


def _record_mismatch(record: Any, kind: str, key: str, params_json: str, partial: bool) -> str | None:
    """Why a parsed record does not belong to this request, or None when it does."""
    if not isinstance(record, dict):
        return "its record is not a JSON object"
    missing = {"format", "kind", "key", "params", "partial", "arrays", "sha256"} - set(record)
    if missing:
        return f"its record lacks {sorted(missing)}"
    if record["format"] != FORMAT:
        return f"it has layout format {record['format']!r}, this hesslab writes {FORMAT}"
    if record["kind"] != kind or record["key"] != key or record["partial"] != partial:
        return (f"its record is for kind={record['kind']!r}, key={record['key']!r}, "
                f"partial={record['partial']!r}, not kind={kind!r}, key={key!r}, partial={partial!r}")
    try:
        stored = _dumps(record["params"])
    except (TypeError, ValueError):
        stored = None
    if stored != params_json:
        return f"its record's params {stored} differ from the requested {params_json}"
    return None


class StoredCheckpoint:
    """Progress of one computation in a :class:`ResultCache` (see :meth:`ResultCache.checkpoint`)."""

    def __init__(self, cache: ResultCache, kind: str, params: Mapping):
        self.cache, self.kind, self.params = cache, kind, params

    def load(self):
        """The finished result, else the latest unfinished progress, else None."""
        hit = self.cache.load(self.kind, self.params)
        finished = hit is not None
        if hit is None:
            hit = self.cache.load_partial(self.kind, self.params)
        return None if hit is None else Progress(hit.arrays, dict(hit.meta), finished)

    def save(self, arrays: Mapping[str, ArrayLike], meta: dict, *, finished: bool) -> None:
        """Store ``arrays`` and ``meta``: as the result when ``finished``, else as a checkpoint."""
        if finished:
            self.cache.save(self.kind, self.params, arrays, meta, wall_time=meta.get("wall_time"))
        else:
            self.cache.save_partial(self.kind, self.params, arrays, meta)


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not all(_KIND_PART.fullmatch(p) for p in kind.split("/")):
        raise ValueError(f"cache kind {kind!r} must be '/'-separated names of letters, digits, "
                         "'_', '.', '-' (each starting with a letter or digit)")


def open_cache(cache) -> ResultCache | None:
    """Interpret a ``cache=`` argument: None/False (no caching), True (the default root), a folder, or a ResultCache."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return ResultCache()
    return cache if isinstance(cache, ResultCache) else ResultCache(cache)
