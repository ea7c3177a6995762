"""A per-source hash index, like git's: (path, size, mtime, ctime, inode) -> content hash, so that files that did
not change are not read again to confirm a cache hit. Cache keys still hash file contents; the index only says
which contents are already known. Arrays, not one object per file: a hit on 200 000 files looks them all up at
once."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import numpy as np

from bottleneck._io import write_bytes_atomic

# Files changed within this long before the index was written are hashed again next time: a later change in
# the same timestamp tick would otherwise leave size and times equal (git's "racy" entries).
RACY_NS = 2_000_000_000
FORMAT = 1


def index_path(index_dir, source) -> Path:
    """The index file of a source (a folder or CSV, by its resolved path) under ``index_dir``."""
    digest = hashlib.blake2b(str(Path(source).resolve()).encode(), digest_size=8).hexdigest()
    return Path(index_dir) / f"{Path(source).name or 'root'}-{digest}.npz"


def _utf8(paths) -> np.ndarray:
    return (
        np.array([p.encode("utf-8", "surrogateescape") for p in paths], dtype="S")
        if paths
        else np.array([], dtype="S1")
    )


def stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """What says a file is unchanged: size, mtime, ctime (which no user can set back) and inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class HashIndex:
    """Known content hashes of one source's files; ``match`` finds the unchanged ones, ``save`` keeps this run's."""

    def __init__(self, path: Path | None = None, *, rehash: bool = False):
        self.path = path
        # UTF-8 bytes, not NumPy unicode (4 bytes per character): an ImageNet-sized index stays small.
        self._paths = np.array([], dtype="S1")  # sorted
        self._stamps = np.zeros((0, 4), np.uint64)
        self._hashes = np.array([], dtype="S1")
        self._run: tuple | None = None  # (paths, stamps, hashes) of this run, what save writes
        self._changed = True
        if path is not None and not rehash and path.is_file():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["format"]) != FORMAT:
                    return
                written = int(z["written"])
                paths, stamps, hashes = z["paths"], z["stamps"], z["hashes"]
        except (OSError, ValueError, KeyError):  # a damaged index is only a slower run: every file is read
            return
        fresh = stamps[:, 1].astype(np.int64) < written - RACY_NS  # changed well before it was written
        self._paths, self._stamps, self._hashes = paths[fresh], stamps[fresh], hashes[fresh]

    def match(self, paths: list[str], stamps: np.ndarray) -> list[str | None]:
        """The known content hash of each path whose stamp (``stamp(os.stat(path))`` rows) is unchanged, or None."""
        if not len(self._paths) or not paths:
            return [None] * len(paths)
        query = _utf8(paths)
        pos = np.minimum(np.searchsorted(self._paths, query), len(self._paths) - 1)
        same = (self._paths[pos] == query) & (self._stamps[pos] == stamps).all(axis=1)
        hashes = self._hashes[pos].tolist()
        return [h.decode() if s else None for h, s in zip(hashes, same.tolist(), strict=True)]

    def remember(self, paths: list[str], stamps: np.ndarray, hashes: list[str], read_any: bool) -> None:
        """This run's files, what ``save`` writes (files gone since the last run drop out); ``read_any``: some
        were read (new, changed or racy), so the index changes."""
        self._changed = (
            read_any
            or len(paths) != len(self._paths)
            or not np.array_equal(np.sort(_utf8(paths)), self._paths)
        )
        self._run = (paths, stamps, hashes)

    def save(self) -> None:
        """Write this run's entries atomically; nothing when every file was known and none was removed (a plain
        cache hit writes nothing)."""
        if self.path is None or self._run is None or not self._changed:
            return
        paths, stamps, hashes = self._run
        encoded = _utf8(paths)
        order = np.argsort(encoded)
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.int64(FORMAT),
            written=np.int64(time.time_ns()),
            paths=encoded[order],
            stamps=np.asarray(stamps, np.uint64).reshape(-1, 4)[order],
            hashes=np.array([h.encode() for h in hashes], dtype="S")[order] if hashes else encoded[:0],
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path, buf.getvalue())
