"""A per-source hash index, like git's: (path, size, mtime, ctime, inode) -> content hash, so that files that did
not change are not read again to confirm a cache hit. Cache keys still hash file contents; the index only says
which contents are already known."""

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


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class HashIndex:
    """Known content hashes of a source's files. ``lookup`` is thread-safe (reads only); ``record`` is called
    from the hashing threads too (dict writes are atomic in CPython)."""

    def __init__(self, path: Path | None = None, *, rehash: bool = False):
        self.path = path
        self._known: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self._new: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self.hits = 0
        self._dirty = False
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
        fresh = stamps[:, 1] < written - RACY_NS  # mtime well before the index was written: trustworthy
        for p, s, h in zip(
            paths[fresh].tolist(), stamps[fresh].tolist(), hashes[fresh].tolist(), strict=True
        ):
            self._known[p] = (tuple(s), h)

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        """The content hash of ``path`` when it is unchanged since it was hashed, else None."""
        entry = self._known.get(path)
        if entry is not None and entry[0] == _stamp(st):
            self._new[path] = entry
            self.hits += 1
            return entry[1]
        return None

    def record(self, path: str, st: os.stat_result, content_hash: str) -> None:
        self._new[path] = (_stamp(st), content_hash)
        self._dirty = True

    def save(self) -> None:
        """Write the entries of this run (files gone since are dropped) atomically; nothing to write when every
        file was known and none was removed (a plain cache hit writes nothing)."""
        if self.path is None or not self._new or (not self._dirty and len(self._new) == len(self._known)):
            return
        paths = sorted(self._new)
        stamps = np.array([self._new[p][0] for p in paths], dtype=np.uint64)
        hashes = np.array([self._new[p][1] for p in paths])
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.int64(FORMAT),
            written=np.int64(time.time_ns()),
            paths=np.array(paths),
            stamps=stamps,
            hashes=hashes,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path, buf.getvalue())
