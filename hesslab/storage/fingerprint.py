"""Content hashes of models and data, and the one key builder for every cached computation.

Every cached result (:func:`hesslab.slq`, :func:`hesslab.blockwise_slq`,
:func:`hesslab.top_eigenvalues`, :func:`hesslab.experiments.training.train`) is stored under :func:`computation_key`, which covers:

- ``kind`` and hesslab's version of that computation (:data:`COMPUTATION_VERSIONS`;
  raised whenever an algorithm change alters results, so old results are not served);
- the model's **values** (:func:`model_fingerprint`: every parameter's and buffer's
  name, dtype, shape and bytes) and its **structure** (:func:`model_structure`: for
  every named module its class, a sha256 of the source of the class and of its bases
  up to ``nn.Module``, its plain configuration attributes such as ``norm_first`` or
  ``eps``, and a Hugging Face ``config``), so a Pre-LN and a Post-LN twin built from
  the same seed never share a key;
- the loss function's and ``batch_size_fn``'s identity (:func:`callable_identity`):
  a module-level function or builtin by ``module:qualname`` and a sha256 of its source
  (of its bytecode where the source is unavailable), an ``nn.Module`` loss by its
  structure and values. Callables that cannot be identified across runs — lambdas,
  ``functools.partial``, closures and local functions, bound methods, other callable
  objects — raise :class:`UncacheableError` unless the caller passes ``cache_key``;
- the data (:func:`data_fingerprint`: every batch's tensors);
- the caller's ``cache_key`` (added to the key, never replacing the derived parts);
- every argument of the computation that changes its result (steps, probes, seed,
  dtypes, blocks, method, batch-norm mode, training configuration, ...).

Not covered: code a model or loss reaches outside its own class or function source
(helper functions it calls, module globals it reads, compiled kernels), and the
device. Change such code, and pass a new ``cache_key`` or delete the cache folder.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import types
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

#: hesslab's version of each cached computation; part of its key. Raise an entry
#: whenever a change alters that computation's results, so old results are not served.
COMPUTATION_VERSIONS = {"slq": 3, "blockwise_slq": 3, "train": 2, "top_eigenvalues": 2}

#: ``vars(module)`` entries that are not configuration: what ``nn.Module.__init__``
#: sets (``training``, the parameter/buffer/submodule tables, hook tables), and
#: flags set by hooks, weight initialisation or the folder a model was loaded from.
_VOLATILE_ATTRS = frozenset(vars(nn.Module())) | {"_is_full_backward_hook", "_is_hf_initialized", "name_or_path"}
#: Entries of a Hugging Face ``config.to_dict()`` that do not change a computation.
_VOLATILE_CONFIG = frozenset({"transformers_version", "_name_or_path", "_commit_hash",
                              "_attn_implementation_autoset"})


class UncacheableError(TypeError):
    """A callable cannot be identified across runs, so a cached result cannot be keyed by it."""


def _update(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().contiguous().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d tensors too
    elif isinstance(obj, Mapping):
        for k in sorted(obj):
            h.update(str(k).encode())
            _update(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"seq{len(obj)}".encode())
        for item in obj:
            _update(h, item)
    else:
        h.update(repr(obj).encode())


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of every parameter's and buffer's name, dtype, shape and values."""
    h = hashlib.sha256()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(name.encode())
        _update(h, t)
    return h.hexdigest()


def data_fingerprint(data: Iterable) -> str:
    """sha256 of every batch's tensors (one pass over ``data``)."""
    h = hashlib.sha256()
    for batch in data:
        _update(h, batch)
    return h.hexdigest()


# ---------------------------------------------------------------- structure
def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', None)}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


_CLASS_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def class_source_digest(cls: type) -> str:
    """sha256 of ``inspect.getsource(cls)`` (cached per class), or ``"qualname:<module:qualname>"`` without source."""
    try:
        return _CLASS_SOURCES[cls]
    except (KeyError, TypeError):
        pass
    try:
        digest = _sha256_text(inspect.getsource(cls))
    except (OSError, TypeError):  # built in C, defined in exec'd code or an unsaved session
        digest = f"qualname:{_qualified_name(cls)}"
    try:
        _CLASS_SOURCES[cls] = digest
    except TypeError:
        pass
    return digest


def _class_identity(cls: type) -> dict:
    """Class name, and the source digests of it and its bases up to (not including) ``nn.Module``."""
    sources = []
    for c in cls.__mro__:
        if c is nn.Module or c is object:
            break
        sources.append([_qualified_name(c), class_source_digest(c)])
    return {"class": _qualified_name(cls), "sources": sources}


def _plain(value: Any, depth: int = 0) -> tuple[bool, Any]:
    """``(True, JSON-ready value)`` for a plain configuration value, ``(False, None)`` for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, torch.dtype):
        return True, str(value)
    if depth > 4:
        return False, None
    if isinstance(value, (tuple, list)):
        items = [_plain(v, depth + 1) for v in value]
        if all(ok for ok, _ in items):
            return True, {type(value).__name__: [v for _, v in items]}
        return False, None
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v, depth + 1) for k, v in value.items()}
        if all(ok for ok, _ in items.values()):
            return True, {"dict": {k: v for k, (_, v) in items.items()}}
        return False, None
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return True, {"function": _qualified_name(value)}  # e.g. an activation kept as an attribute
    return False, None


def _config_dict(config) -> Any:
    """A Hugging Face config as JSON-ready data, without volatile entries."""
    try:
        raw = config.to_dict()
    except Exception as err:  # noqa: BLE001 - an unusual config object: key it by its repr
        return {"repr": repr(config), "to_dict_error": type(err).__name__}
    raw = {k: v for k, v in raw.items() if k not in _VOLATILE_CONFIG}
    raw["_attn_implementation"] = getattr(config, "_attn_implementation", None)
    return _jsonable(raw)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else f"{type(k).__name__}:{k!r}": _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)  # dtypes and other objects: a miss at worst, never a collision


def model_structure(model: nn.Module) -> list[dict]:
    """What the model computes, apart from its tensors: one entry per named module.

    Each entry holds the module's name, class (``module:qualname``), the sha256 of the
    source of its class and of each base class up to ``nn.Module``
    (:func:`class_source_digest`), its plain configuration attributes (the entries of
    ``vars(module)`` that are bool, int, float, str, None, dtypes, functions, or
    lists/tuples/str-keyed dicts of those; not ``training`` and hook flags) and, for a
    module with a Hugging Face ``config``, ``config.to_dict()`` without volatile entries
    (``transformers_version``, ``_name_or_path``) plus ``config._attn_implementation``.
    """
    configs: dict[int, Any] = {}
    out = []
    for name, module in model.named_modules():
        attrs = {}
        for attr, value in vars(module).items():
            if attr in _VOLATILE_ATTRS or attr == "config":
                continue
            ok, plain = _plain(value)
            if ok:
                attrs[attr] = plain
        entry = {"name": name, **_class_identity(type(module)), "attributes": attrs}
        config = vars(module).get("config")
        if config is not None and callable(getattr(config, "to_dict", None)):
            if id(config) not in configs:
                configs[id(config)] = _config_dict(config)
            entry["config"] = configs[id(config)]
        out.append(entry)
    return out


def structure_fingerprint(model: nn.Module) -> str:
    """sha256 of the canonical JSON of :func:`model_structure`."""
    from hesslab.storage.cache import canonical_json

    return _sha256_text(canonical_json({"modules": model_structure(model)}))


def model_identity(model: nn.Module) -> dict:
    """``{"class", "structure", "values"}``: the model's class, :func:`structure_fingerprint`, :func:`model_fingerprint`."""
    return {"class": _qualified_name(type(model)), "structure": structure_fingerprint(model),
            "values": model_fingerprint(model)}


# ---------------------------------------------------------------- callables
def _code_digest(code: types.CodeType) -> str:
    """sha256 of a code object's bytecode, names and constants (nested code objects too)."""
    h = hashlib.sha256()

    def visit(c: types.CodeType) -> None:
        h.update(repr((c.co_name, c.co_argcount, c.co_kwonlyargcount, c.co_names, c.co_varnames)).encode())
        h.update(c.co_code)
        for const in c.co_consts:
            if isinstance(const, types.CodeType):
                visit(const)
            else:
                h.update(repr(const).encode())

    visit(code)
    return h.hexdigest()


def _why_uncacheable(fn) -> str | None:
    """Why ``fn`` cannot be identified across runs, or None when it can."""
    if isinstance(fn, (functools.partial, functools.partialmethod)):
        return "a functools.partial"
    if isinstance(fn, types.MethodType):
        return "a bound method"
    if isinstance(fn, types.FunctionType):
        if fn.__name__ == "<lambda>":
            return "a lambda"
        if "<locals>" in fn.__qualname__:
            return "a function defined inside another function"
        if fn.__closure__:
            return "a closure (it captures variables of an enclosing scope)"
        return None
    if isinstance(fn, types.BuiltinFunctionType):
        owner = fn.__self__
        if owner is None or isinstance(owner, (types.ModuleType, type)):
            return None
        return "a bound method"
    if isinstance(fn, type):
        return "a class defined inside a function" if "<locals>" in fn.__qualname__ else None
    return f"a callable object of type {_qualified_name(type(fn))}"


def callable_identity(fn, role: str = "loss_fn", *, described: bool = False) -> dict:
    """What identifies ``fn`` in a cache key.

    - an ``nn.Module`` (e.g. ``nn.CrossEntropyLoss(label_smoothing=0.1)``):
      ``{"module": model_identity(fn)}`` (structure, configuration and buffers);
    - a module-level function, class or builtin: ``{"callable": "module:qualname",
      "source_sha256": ...}`` (``"code_sha256"`` of its bytecode where the source is
      unavailable; neither for a builtin);
    - anything else raises :class:`UncacheableError`, unless ``described`` (the caller
      passed a ``cache_key``): then ``{"described_by_cache_key": <its type>}``.

    Args:
        fn: the callable.
        role: its argument name, for the error message.
        described: a ``cache_key`` stands in for callables that cannot be identified.
    """
    if isinstance(fn, nn.Module):
        return {"module": model_identity(fn)}
    reason = _why_uncacheable(fn)
    if reason is not None:
        if described:
            return {"described_by_cache_key": _qualified_name(type(fn))}
        raise UncacheableError(
            f"cannot key a cached result by {role}={fn!r:.100}: it is {reason}, which hesslab cannot "
            f"identify from one run to the next (two different ones could share a key). Define it "
            f"at module level (def my_{role.removesuffix('_fn')}(...): ...), or pass cache_key={{...}} "
            f"describing it, e.g. cache_key={{{role!r}: 'cross-entropy, label smoothing 0.1'}}."
        )
    ident: dict = {"callable": _qualified_name(fn)}
    if isinstance(fn, types.BuiltinFunctionType):
        return ident
    try:
        ident["source_sha256"] = _sha256_text(inspect.getsource(fn))
    except (OSError, TypeError):
        if isinstance(fn, types.FunctionType):
            ident["code_sha256"] = _code_digest(fn.__code__)
    return ident


# ---------------------------------------------------------------- the key
def computation_key(kind: str, *, model: nn.Module | None = None, loss_fn=None, data: Iterable | None = None,
                    batch_size_fn=None, cache_key: Mapping | None = None, **arguments) -> dict:
    """The cache parameters of one computation; the only key builder hesslab uses.

    Args:
        kind: a key of :data:`COMPUTATION_VERSIONS` (``"slq"``, ``"blockwise_slq"``,
            ``"top_eigenvalues"``, ``"train"``).
        model: the model whose values and structure the result depends on
            (:func:`model_identity`); for ``train`` the freshly built model.
        loss_fn: the loss (:func:`callable_identity`).
        data: re-iterable batches (:func:`data_fingerprint`).
        batch_size_fn: a batch's weight; None is hesslab's default rule.
        cache_key: the caller's description (str-keyed mapping of plain values): added
            to the key; it also stands in for a ``loss_fn`` or ``batch_size_fn`` that
            cannot be identified (lambdas, partials, closures, bound methods, objects).
        **arguments: every other argument that changes the result (plain values,
            dtypes, arrays or tensors, see :func:`hesslab.storage.cache.canonical_json`).

    Returns:
        A dict for :class:`~hesslab.storage.cache.ResultCache` with ``kind``, ``version``
        (:data:`COMPUTATION_VERSIONS`), ``model``, ``loss_fn``, ``batch_size_fn``,
        ``data``, ``cache_key`` (those given) and ``arguments``.

    Raises:
        UncacheableError: for a callable that cannot be identified, without ``cache_key``.
        TypeError: for an argument or ``cache_key`` value that cannot be hashed.
        ValueError: for an unknown ``kind``.
    """
    from hesslab.storage.cache import canonical_json

    if kind not in COMPUTATION_VERSIONS:
        raise ValueError(f"unknown computation kind {kind!r}; add it to COMPUTATION_VERSIONS "
                         f"(known: {sorted(COMPUTATION_VERSIONS)})")
    if cache_key is not None and not isinstance(cache_key, Mapping):
        raise TypeError(f"cache_key must be a str-keyed dict describing the computation, got "
                        f"{type(cache_key).__name__}")
    described = cache_key is not None
    key: dict = {"kind": kind, "version": COMPUTATION_VERSIONS[kind]}
    if model is not None:
        key["model"] = model_identity(model)
    if loss_fn is not None:
        key["loss_fn"] = callable_identity(loss_fn, "loss_fn", described=described)
    key["batch_size_fn"] = (None if batch_size_fn is None
                            else callable_identity(batch_size_fn, "batch_size_fn", described=described))
    if data is not None:
        key["data"] = data_fingerprint(data)
    if cache_key is not None:
        key["cache_key"] = dict(cache_key)
    key["arguments"] = dict(arguments)
    canonical_json(key)  # fail here, naming the offending entry, rather than at save time
    return key
