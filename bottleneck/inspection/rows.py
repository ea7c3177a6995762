"""A cache's rows as one table across splits: split, row, id, label, content hash and the source item."""

from __future__ import annotations

import numpy as np

from bottleneck.data.manifest import SPLIT_ORDER
from bottleneck.errors import CacheError


class Rows:
    """Every row of every split of a cache, numbered 0..N-1 in split order (the cache's ``splits``).

    Columns: ``split`` (N,) index into ``splits``, ``row`` (N,) row within its split, ``id`` (N,) str,
    ``label`` (N,) int; ``hash`` (N,) hex bytes or None when the cache records no manifest (``write_arrays``);
    ``manifest`` and ``manifest_rows`` (N,): the source item of each row, for thumbnails (None without one).
    """

    def __init__(self, cache):
        self.splits = list(cache.splits)
        self.class_names = list(cache.class_names)
        sizes = [cache.n(s) for s in self.splits]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.split = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        self.row = (
            np.concatenate([np.arange(n, dtype=np.int64) for n in sizes]) if sizes else np.zeros(0, int)
        )
        self.id = np.array([str(i) for s in self.splits for i in np.asarray(cache.ids(s)).tolist()])
        self.label = np.concatenate([np.asarray(cache.labels(s), np.int64) for s in self.splits])
        self.manifest, self.manifest_rows, self.hash = _aligned_manifest(cache, self)

    def __len__(self) -> int:
        return len(self.split)

    def of(self, split: str) -> np.ndarray:
        """The global row numbers of ``split``."""
        i = self.splits.index(split)
        return np.arange(self.starts[i], self.starts[i + 1])

    def split_name(self, i: int) -> str:
        return self.splits[int(self.split[i])]

    def class_name(self, label: int) -> str:
        label = int(label)
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)


def _aligned_manifest(cache, rows: Rows):
    """(manifest, manifest row of each cache row, hash of each cache row), or (None, None, None) when the cache
    holds no manifest of its rows. The stored manifest minus the skipped items lists each split's rows in
    cache order; its ids must equal the cache's ids."""
    manifest = cache.manifest()
    if len(manifest) == 0:
        return None, None, None
    skipped = {int(s["index"]) for s in cache.meta.get("skipped", [])}
    keep = np.ones(len(manifest), dtype=bool)
    keep[list(skipped)] = False

    found = []
    for s in rows.splits:
        at = np.flatnonzero(keep & (manifest.split == SPLIT_ORDER.index(s)))
        ids = manifest.id[at].tolist()
        want = rows.id[rows.of(s)].tolist()
        if ids != want:
            raise CacheError(
                f"cache {cache.path.name}: the {s} rows do not match its manifest; the cache is damaged. "
                "Run `bottleneck cache verify` or extract again."
            )
        found.append(at)
    at = np.concatenate(found) if found else np.zeros(0, np.int64)
    return manifest, at, manifest.hash[at]
