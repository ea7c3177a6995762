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
from typing import NamedTuple

import numpy as np

from bottleneck._io import write_bytes_atomic

# Files changed within this long before the index was written are hashed again next time: a later change in
# the same timestamp tick would otherwise leave size and times equal (git's "racy" entries).
RACY_NS = 2_000_000_000
FORMAT = 2  # 2 added what each file's header showed; a format-1 index still gives its hashes


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


class Match(NamedTuple):
    """What an index knows of the queried paths, in their order."""

    hashes: list  # content hash, or None when the file is new or changed
    heads: np.ndarray  # (N, 3) int64: checked (0 | 1), width, height of each file's header
    problems: list  # what a checked header showed ("" when fine), e.g. "not an image"


class HashIndex:
    """Known content hashes (and header checks) of one source's files; ``match`` finds the unchanged ones,
    ``save`` keeps this run's."""

    def __init__(self, path: Path | None = None, *, rehash: bool = False):
        self.path = path
        self.rehash = rehash  # also read by sources that keep indexes of their own (WebDataset shards)
        # UTF-8 bytes, not NumPy unicode (4 bytes per character): an ImageNet-sized index stays small.
        self._paths = np.array([], dtype="S1")  # sorted
        self._stamps = np.zeros((0, 4), np.uint64)
        self._hashes = np.array([], dtype="S1")
        self._heads = np.zeros((0, 3), np.int64)
        self._problems = np.array([], dtype="S1")
        self._run: list | None = (
            None  # [paths, stamps, hashes, heads, problems] of this run, what save writes
        )
        self._changed = True
        if path is not None and not rehash and path.is_file():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["format"]) not in (1, FORMAT):
                    return
                written = int(z["written"])
                paths, stamps, hashes = z["paths"], z["stamps"], z["hashes"]
                heads = z["heads"] if "heads" in z else np.zeros((len(paths), 3), np.int64)
                problems = z["problems"] if "problems" in z else np.full(len(paths), b"", dtype="S1")
        except (OSError, ValueError, KeyError):  # a damaged index is only a slower run: every file is read
            return
        fresh = stamps[:, 1].astype(np.int64) < written - RACY_NS  # changed well before it was written
        self._paths, self._stamps, self._hashes = paths[fresh], stamps[fresh], hashes[fresh]
        self._heads, self._problems = heads[fresh], problems[fresh]

    def match(self, paths: list[str], stamps: np.ndarray) -> Match:
        """What is known of each path whose stamp (``stamp(os.stat(path))`` rows) is unchanged; nothing of the
        others (hash None, header unchecked)."""
        if not len(self._paths) or not paths:
            return Match([None] * len(paths), np.zeros((len(paths), 3), np.int64), [""] * len(paths))
        query = _utf8(paths)
        pos = np.minimum(np.searchsorted(self._paths, query), len(self._paths) - 1)
        same = (self._paths[pos] == query) & (self._stamps[pos] == stamps).all(axis=1)
        hashes = self._hashes[pos].tolist()
        heads = np.where(same[:, None], self._heads[pos], 0)
        problems = [
            p.decode() if s else "" for p, s in zip(self._problems[pos].tolist(), same.tolist(), strict=True)
        ]
        return Match(
            [h.decode() if s else None for h, s in zip(hashes, same.tolist(), strict=True)], heads, problems
        )

    def remember(
        self,
        paths: list[str],
        stamps: np.ndarray,
        hashes: list[str],
        read_any: bool,
        heads=None,
        problems=None,
    ) -> None:
        """This run's files, what ``save`` writes (files gone since the last run drop out); ``read_any``: some
        were read (new, changed or racy), so the index changes; ``heads``/``problems``: their known headers."""
        # Every path unread was matched, so it is in the index; with no file read, equal counts (paths are
        # unique on both sides) mean the same files.
        self._changed = read_any or len(paths) != len(self._paths)
        if heads is None:
            heads, problems = np.zeros((len(paths), 3), np.int64), [""] * len(paths)
        self._run = [paths, stamps, hashes, heads, problems]

    def learn_headers(self, heads: np.ndarray, problems: list) -> None:
        """Header checks of this run's files (aligned with what ``remember`` got), kept for later runs."""
        if self._run is not None:
            self._changed = self._changed or not np.array_equal(heads[:, 0], self._run[3][:, 0])
            self._run[3], self._run[4] = heads, problems

    def save(self) -> None:
        """Write this run's entries atomically; nothing when every file was known and none was removed (a plain
        cache hit writes nothing)."""
        if self.path is None or self._run is None or not self._changed:
            return
        paths, stamps, hashes, heads, problems = self._run
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
            heads=np.asarray(heads, np.int64).reshape(-1, 3)[order],
            problems=np.array([p.encode() for p in problems], dtype="S")[order] if problems else encoded[:0],
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path, buf.getvalue())
