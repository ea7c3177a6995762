"""Reusing rows of other caches with the same per-row settings, found by image content hash."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bottleneck.cache.key import features_keys
from bottleneck.cache.lock import is_locked
from bottleneck.cache.reader import META, Cache, open_cache, read_meta


class Donors:
    """Rows of other caches with the same per-row settings, found by image content hash: every row of a
    complete cache, and the committed rows of an interrupted one that no extraction is writing.

    This is what makes re-running after adding, changing, fixing or removing images cheap: only new content is
    computed, also when the run that stopped on a bad image left its rows in an incomplete folder.
    """

    def __init__(self, cache_dir: Path, fkey: str, exclude: Path):
        self._where: dict[str, tuple] = {}
        self._open: list[Cache] = []
        self._blocks: dict[tuple, np.ndarray] = {}
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
            except Exception:  # an unreadable donor is only a missed shortcut, never an error
                continue
            self._open.append(cache)
            for split in cache.splits:
                committed = cache.meta["progress"].get(split, 0) if not complete else None
                hashes = manifest.hash[manifest.rows_of(split)[:committed]].tolist()
                for row, h in enumerate(hashes):
                    self._where.setdefault(h.decode(), (cache, split, row))

    def __len__(self):
        return len(self._where)

    def get(self, content_hash: str):
        hit = self._where.get(content_hash)
        if hit is None:
            return None
        cache, split, row = hit
        # Read whole stored chunks and keep a few: reading row by row would decompress each chunk per row.
        block_rows = int(cache.meta["splits"][split].get("chunk_rows", 1024))
        block_key = (id(cache), split, row // block_rows)
        block = self._blocks.get(block_key)
        if block is None:
            start = (row // block_rows) * block_rows
            block = np.asarray(cache.features(split)[start : start + block_rows])
            if len(self._blocks) >= 8:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[block_key] = block
        return block[row % block_rows]

    def missing(self, hashes) -> list[int]:
        """The positions of ``hashes`` that no donor has (what ``fill`` will leave to compute)."""
        return [i for i, h in enumerate(hashes) if h not in self._where]

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
