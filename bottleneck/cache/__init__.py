"""Feature caches on disk: key, stores, reader, writer, reuse, lock and management.

Layout of ``cache/<backbone>-<key8>/`` (readable without bottleneck):

- ``meta.json``: key, full config, class names, splits ({name: {n, feature_shape}}), versions, weights identity,
  committed rows per split, and ``complete`` — true only after the final commit (written last, atomically).
- ``manifest.npz``: every source item as columns (split, id, label, content hash, path or row), class names and
  skipped images (``data.manifest.Manifest.to_bytes``); caches before it have ``manifest.json`` (read too).
- data, by format: ``features.zarr/<split>/{features,labels,ids}`` | ``npy/<split>/{features,labels,ids}.npy`` |
  ``features.h5:/<split>/{features,labels,ids}``.
"""

from bottleneck.cache.integrity import CacheDamaged, rows_digest
from bottleneck.cache.key import cache_dir_name, compute_key
from bottleneck.cache.meta import MANIFEST, META, progress_text, read_meta
from bottleneck.cache.reader import Cache, open_cache
from bottleneck.cache.stores import STORES, Store, open_store
from bottleneck.cache.writer import CacheWriter, write_arrays

__all__ = [
    "MANIFEST",
    "META",
    "STORES",
    "Cache",
    "CacheDamaged",
    "CacheWriter",
    "Store",
    "cache_dir_name",
    "compute_key",
    "open_cache",
    "open_store",
    "progress_text",
    "read_meta",
    "rows_digest",
    "write_arrays",
]
