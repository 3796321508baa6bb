"""Results on disk: a service the experiments use; the numerical core never imports it.

- :mod:`hesslab.storage.fingerprint`: content hashes of models, losses and data, and
  :func:`~hesslab.storage.fingerprint.computation_key`, the one key builder;
- :mod:`hesslab.storage.cache`: :class:`~hesslab.storage.cache.ResultCache`, results as
  arrays plus JSON under a key, written atomically, with provenance.
"""

from hesslab.storage.cache import CachedResult, CacheFormatError, CacheWarning, ResultCache, open_cache, provenance
from hesslab.storage.fingerprint import UncacheableError, computation_key, data_fingerprint, model_fingerprint

__all__ = [
    "ResultCache", "CachedResult", "CacheWarning", "CacheFormatError", "open_cache", "provenance",
    "computation_key", "model_fingerprint", "data_fingerprint", "UncacheableError",
]
