"""Reusing rows of other caches with the same per-row settings, found by image content hash."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bottleneck.cache.integrity import CacheDamaged
from bottleneck.cache.key import features_keys
from bottleneck.cache.lock import is_locked
from bottleneck.cache.meta import META, read_meta
from bottleneck.cache.reader import Cache, open_cache
from bottleneck.errors import CacheError


class Donors:
    """Rows of other caches with the same per-row settings, found by image content hash: every row of a
    complete cache, and the committed rows of an interrupted one that no extraction is writing.

    This is what makes re-running after adding, changing, fixing or removing images cheap: only new content is
    computed, also when the run that stopped on a bad image left its rows in an incomplete folder, or when a cache
    was found damaged (set aside as a hidden folder): rows are read through the donor's checksums, and a block
    that does not match them (or cannot be read) is computed instead, never copied.
    """

    def __init__(self, cache_dir: Path, fkey: str, exclude: Path):
        self._where: dict[str, tuple] = {}
        self._open: list[Cache] = []
        self._blocks: dict[tuple, np.ndarray] = {}
        self._usable: dict[tuple, bool] = {}  # block key -> whether its rows match their checksums
        if not Path(cache_dir).is_dir():
            return
        for d in sorted(Path(cache_dir).iterdir()):
            if d == exclude or not (d / META).is_file():
                continue
            try:
                meta = read_meta(d)
                # Recomputed from what the donor's key hashed, so caches written before a change of the per-row
                # key's form still share their rows.
                if fkey not in features_keys(meta.get("key_material") or {}):
                    continue
                complete = bool(meta.get("complete"))
                if not complete and is_locked(d):
                    continue  # being written: its committed rows are safe, but h5 files are not while open
                cache = open_cache(d, allow_incomplete=True)
                manifest = cache.manifest()
                skipped = [s["index"] for s in cache.meta.get("skipped", [])]
                if skipped:
                    manifest = manifest.without(skipped)
            except (
                CacheError,
                OSError,
                ValueError,
                KeyError,
            ):  # an unreadable donor is a missed shortcut only
                continue
            self._open.append(cache)
            for split in cache.splits:
                hashes = manifest.hash[manifest.rows_of(split)].tolist()
                # Of an interrupted cache, the rows its checksums cover: the committed prefix, and the ranges a
                # cluster run recorded out of order.
                rows = range(len(hashes)) if complete else _recorded_rows(cache, split)
                for row in rows:
                    self._where.setdefault(hashes[row].decode(), (cache, split, row))

    def __len__(self):
        return len(self._where)

    def _block(self, cache: Cache, split: str, row: int) -> tuple[tuple, int]:
        block_rows = int(cache.meta["splits"][split].get("chunk_rows") or 1024)
        return (id(cache), split, row // block_rows), block_rows

    def _read(self, cache: Cache, split: str, row: int) -> np.ndarray | None:
        """The stored chunk holding ``row`` (checked against its checksums when first read), or None when damaged."""
        key, block_rows = self._block(cache, split, row)
        if self._usable.get(key) is False:
            return None
        block = self._blocks.get(key)
        if block is None:
            start = key[2] * block_rows
            try:
                block = np.asarray(cache.features(split)[start : start + block_rows])
            except CacheDamaged:
                self._usable[key] = False
                return None
            self._usable[key] = True
            if len(self._blocks) >= 8:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[key] = block
        return block

    def get(self, content_hash: str):
        """The stored row of an image with this content hash, or None (no donor has it, or its chunk is damaged)."""
        hit = self._where.get(content_hash)
        if hit is None:
            return None
        cache, split, row = hit
        # Read whole stored chunks and keep a few: reading row by row would decompress each chunk per row.
        block = self._read(cache, split, row)
        return None if block is None else block[row % self._block(cache, split, row)[1]]

    def missing(self, hashes) -> list[int]:
        """The positions of ``hashes`` that no donor has whole (what ``fill`` will leave to compute); the donors'
        chunks are checked here, so ``fill`` copies exactly the other rows."""
        out = []
        for i, h in enumerate(hashes):
            hit = self._where.get(h)
            if hit is None:
                out.append(i)
                continue
            key, _ = self._block(*hit)
            if key not in self._usable:
                self._read(*hit)
            if not self._usable[key]:
                out.append(i)
        return out

    def fill(self, out, hashes) -> list[int]:
        """Copy the known rows of ``hashes`` into ``out`` (same length); the positions still to compute."""
        todo = []
        for i, h in enumerate(hashes):
            row = self.get(h)
            if row is None:
                todo.append(i)
            else:
                out[i] = row
        return todo

    def close(self):
        for c in self._open:
            c.close()


def _recorded_rows(cache: Cache, split: str):
    """The rows of a split of an interrupted cache that a recorded checksum covers."""
    regions = cache.regions(split)
    n = cache.n(split)
    for start, stop in zip(regions.starts.tolist(), regions.stops.tolist(), strict=True):
        yield from range(start, min(stop, n))
