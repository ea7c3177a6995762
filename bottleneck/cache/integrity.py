"""Trusting a cache's bytes: checksums of features (per written region), labels, ids and the manifest; the sealed
metadata; what marks a folder as a cache; and the witness of the last full check, which lets a hit skip re-reading.

Every read that feeds a head goes through ``VerifiedArray``: the first read of a written region hashes it and
compares the checksum recorded when it was written, so a flipped byte, a truncated or missing chunk (which zarr
would read as zeros) is one ``CacheDamaged`` error naming the split and rows, never wrong numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from bottleneck._io import seal_of, write_json_atomic
from bottleneck.errors import CacheDamaged

META = "meta.json"
WITNESS = "verified.json"
DAMAGED = ".damaged"  # a complete cache found damaged is renamed to the hidden ".<name>.damaged-<pid>"  # data files' (size, mtime) when the cache was last known whole; see ``changed_files``
DIGEST_BYTES = 16
CACHE_ROOT = "cache root"  # the kind of the sealed record (``_ownership.mark_root``) of a folder extract writes caches in
# 2: sealed meta.json, digests of labels, ids and the manifest, every chunk stored (none left to the fill value).
FORMAT_VERSION = 2
_KEY_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-")

# What the stores raise on damaged data: zarr's codecs (RuntimeError, ValueError), NumPy on a truncated .npy
# (ValueError), h5py on a truncated file (OSError, KeyError), a short read (EOFError).
READ_ERRORS = (OSError, ValueError, RuntimeError, EOFError, KeyError)


def digest(data) -> str:
    """blake2b-128 hex of a bytes-like object (a C-contiguous array counts)."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).hexdigest()


def rows_digest(rows: np.ndarray) -> str:
    """The checksum of written feature rows: their bytes as stored (C order, the stored dtype)."""
    return digest(np.ascontiguousarray(rows))


def labels_digest(labels) -> str:
    return digest(np.ascontiguousarray(np.asarray(labels), dtype="<i8"))


def ids_digest(ids) -> str:
    # NUL cannot occur in a path or an array id; the count guards against an id appended empty.
    text = f"{len(ids)}\0" + "\0".join(str(i) for i in ids)
    return digest(text.encode("utf-8", "surrogatepass"))


def write_meta(path, meta: dict) -> None:
    """Seal ``meta`` and write it as ``path/meta.json`` atomically: the one way a cache's metadata is written."""
    meta["seal"] = seal_of(meta)
    write_json_atomic(Path(path) / META, meta)


def marker_problem(meta) -> str | None:
    """Why ``meta`` is not a bottleneck cache's metadata, or None when it has the cache's marks: a format version,
    a key, a config and splits."""
    if not isinstance(meta, dict):
        return f"it holds a JSON {type(meta).__name__}, not an object"
    key = meta.get("key")
    if not isinstance(meta.get("format_version"), int) or isinstance(meta.get("format_version"), bool):
        return "it has no format_version"
    if (
        not isinstance(key, str) or len(key) < 8 or not set(key) <= _KEY_CHARS
    ):  # a sha256 hex digest, in practice
        return "it has no cache key"
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("splits"), dict):
        return "it has no config or splits"
    return None


def check_meta(path, meta) -> dict:
    """``meta`` when it is a cache's metadata whose seal matches; CacheDamaged (one line, with the fix) otherwise."""
    path = Path(path)
    problem = marker_problem(meta)
    if problem:
        raise CacheDamaged(
            f"{path / META} is not a bottleneck cache's metadata ({problem}): {path} is no cache, or its metadata "
            "was overwritten; delete that folder by hand if it held a cache, and extract again."
        )
    seal = meta.get("seal")
    if seal is None and meta["format_version"] < FORMAT_VERSION:
        return meta  # written before metadata was sealed
    if seal != seal_of(meta):
        raise CacheDamaged(
            f"{path / META} was changed after it was written (its seal does not match): its class names, row counts "
            f"or checksums cannot be trusted. Re-run the `bottleneck extract` that made {path.name} to rebuild it, "
            f"or remove it (`bottleneck cache rm {path}`)."
        )
    return meta


def folder_problem(path, meta) -> str | None:
    """Why the folder ``path`` is not a cache `cache rm` / `cache gc` may delete, or None: its meta.json must be a
    cache's (see ``marker_problem``) and the folder's name must end in that key's prefix (as extract names it)."""
    problem = marker_problem(meta)
    if problem:
        return f"its {META} is not a bottleneck cache's ({problem})"
    key, name = meta["key"], Path(path).name
    if not any(name.endswith(f"-{key[:k]}") or name == key[:k] for k in (8, 16, 64)):
        return f"its name does not end in its key {key[:8]} (it was renamed, or is not a cache)"
    return None


# -- features ------------------------------------------------------------------------------------------------------
class Regions:
    """The checksummed regions of one split: sorted [start, stop) row ranges with their digests, and which of them
    this process has verified. ``covered`` rows from 0 must lie in regions (the split's committed rows)."""

    def __init__(self, where: str, split: str, sums: list, covered: int):
        self.where, self.split = where, split
        sums = sorted((int(a), int(b), str(d)) for a, b, d in sums)
        self.starts = np.array([s[0] for s in sums], dtype=np.int64)
        self.stops = np.array([s[1] for s in sums], dtype=np.int64)
        self.digests = [s[2] for s in sums]
        self.ok = np.zeros(len(sums), dtype=bool)
        self.covered = int(covered)

    def problems(self) -> list[tuple[int, int, str]]:
        """(start, stop, why) of rows that count as written but have no checksum, or two."""
        out = []
        for i in np.flatnonzero(self.starts[1:] < self.stops[:-1]):
            out.append((int(self.starts[i + 1]), int(self.stops[i]), "are recorded twice in the checksums"))
        at = 0
        while (gap := self.first_gap(at, self.covered)) is not None:
            out.append((*gap, "have no checksum although they count as written"))
            at = gap[1]
        return out

    def damaged(self, start: int, stop: int, why: str) -> CacheDamaged:
        return CacheDamaged(
            f"cache {self.where} is damaged: {self.split} rows {start}-{stop} {why}. Run `bottleneck cache verify "
            f"{self.where}` to list every damaged region, then re-run the `bottleneck extract` that made it: only "
            "those rows are computed again.",
            self.split,
            start,
            stop,
        )

    def first_gap(self, lo: int, hi: int) -> tuple[int, int] | None:
        """The first run of rows in [lo, hi) that no region holds, or None."""
        at = lo
        for i in range(self.index_of(lo), len(self.starts)):
            if at >= hi:
                break
            if self.starts[i] > at:
                return at, int(min(hi, self.starts[i]))
            at = max(at, int(self.stops[i]))
        return (at, hi) if at < hi else None

    def index_of(self, row: int) -> int:
        """The index of the first region whose stop is past ``row``."""
        return int(np.searchsorted(self.stops, row, side="right"))

    def overlapping(self, lo: int, hi: int) -> range:
        """Indices of the regions overlapping rows [lo, hi); CacheDamaged for rows in no region."""
        gap = self.first_gap(lo, hi)
        if gap is not None:
            raise self.damaged(*gap, "were never committed (no checksum covers them)")
        return range(self.index_of(lo), int(np.searchsorted(self.starts, hi, side="left")))


def _row_span(rows, n: int) -> tuple[int, int]:
    """[lo, hi) of the rows an index selects (a superset for steps and fancy indexes)."""
    if rows is Ellipsis:
        return 0, n
    if isinstance(rows, slice):
        start, stop, step = rows.indices(n)
        picked = range(start, stop, step)
        return (min(picked[0], picked[-1]), max(picked[0], picked[-1]) + 1) if len(picked) else (0, 0)
    if isinstance(rows, int | np.integer):
        i = int(rows) + n if rows < 0 else int(rows)
        if not 0 <= i < n:
            raise IndexError(f"row {rows} is out of range for {n} rows")
        return i, i + 1
    arr = np.asarray(rows)
    if arr.dtype == bool:
        arr = np.flatnonzero(arr)
    if not arr.size:
        return 0, 0
    arr = np.where(arr < 0, arr + n, arr)
    if arr.min() < 0 or arr.max() >= n:
        raise IndexError(f"rows {int(arr.min())}..{int(arr.max())} are out of range for {n} rows")
    return int(arr.min()), int(arr.max()) + 1


def _shifted(rows, n: int, by: int):
    """``rows`` as an index into a block of rows that starts at row ``by``."""
    if rows is Ellipsis:
        return rows
    if isinstance(rows, slice):
        start, stop, step = rows.indices(n)
        if step == 1:
            return slice(start - by, max(start, stop) - by)
        return np.arange(start, stop, step) - by
    if isinstance(rows, int | np.integer):
        return (int(rows) + n if rows < 0 else int(rows)) - by
    arr = np.asarray(rows)
    if arr.dtype == bool:
        return np.flatnonzero(arr) - by
    return np.where(arr < 0, arr + n, arr) - by


class VerifiedArray:
    """One split's features, read from disk on slicing, each written region checked against its checksum the first
    time it is read (``regions`` keeps which are done). Same interface as ``stores.FeatureArray``."""

    def __init__(self, array, regions: Regions, on_damage=None):
        self._array = array  # a stores.FeatureArray
        self._regions = regions
        self._on_damage = on_damage
        self.shape, self.dtype, self.ndim, self.chunks = array.shape, array.dtype, array.ndim, array.chunks

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, index) -> np.ndarray:
        try:
            return self._array[index]
        except READ_ERRORS as exc:
            lo, hi = _row_span(index[0] if isinstance(index, tuple) else index, len(self))
            why = f"cannot be read ({type(exc).__name__}: {exc})"
            raise self._damage(self._regions.damaged(lo, hi, why)) from None

    def _damage(self, exc: CacheDamaged) -> CacheDamaged:
        if self._on_damage is not None:
            self._on_damage()
        return exc

    def __getitem__(self, index) -> np.ndarray:
        rows = index[0] if isinstance(index, tuple) else index
        n = len(self)
        lo, hi = _row_span(rows, n)
        regions = self._regions
        todo = [i for i in regions.overlapping(lo, hi) if not regions.ok[i]] if hi > lo else []
        if not todo:
            return self._read(index)
        a, b = min(lo, int(regions.starts[todo[0]])), max(hi, int(regions.stops[todo[-1]]))
        try:
            block = self._read(slice(a, b))
        except CacheDamaged:
            for i in todo:  # name the region that cannot be read, not the whole request
                self._read(slice(int(regions.starts[i]), int(regions.stops[i])))
            raise
        for i in todo:
            s, e = int(regions.starts[i]), int(regions.stops[i])
            if rows_digest(block[s - a : e - a]) != regions.digests[i]:
                raise self._damage(
                    regions.damaged(s, e, "do not match their checksum (changed or damaged on disk)")
                )
            regions.ok[i] = True
        shifted = _shifted(rows, n, a)
        return block[(shifted, *index[1:]) if isinstance(index, tuple) else shifted]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"VerifiedArray(shape={self.shape}, dtype={self.dtype})"


def set_aside(path) -> Path:
    """Move a damaged cache folder out of its key's way, to a hidden sibling: its rows that still match their
    checksums are reused by the extraction that replaces it (as a donor); ``cache gc`` collects it later."""
    path = Path(path)
    aside = path.with_name(f".{path.name}{DAMAGED}-{os.getpid()}")
    os.replace(path, aside)
    return aside


# -- the witness of the last full check ----------------------------------------------------------------------------
def data_files(path) -> dict[str, list[int]]:
    """Relative path -> [size, mtime_ns] of every file of a cache folder but its metadata and the witness."""
    path = Path(path)
    out = {}
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(path).as_posix()
            if rel in (META, WITNESS) or name.startswith("."):
                continue
            st = full.stat()
            out[rel] = [st.st_size, st.st_mtime_ns]
    return out


def write_witness(path) -> None:
    """Record the data files as they are now, after a full check (or the writer's last commit) found them whole."""
    try:
        write_json_atomic(Path(path) / WITNESS, {"files": data_files(path)}, indent=None)
    except OSError:  # a read-only cache: the next hit checks the data again, nothing worse
        pass


def drop_witness(path) -> None:
    """Forget the last full check (a read found damage): the next hit checks every changed region again."""
    try:
        (Path(path) / WITNESS).unlink(missing_ok=True)
    except OSError:
        pass


def changed_files(path) -> set[str] | None:
    """Data files added, removed or changed (size or mtime) since the witness was written; None without one."""
    try:
        known = json.loads((Path(path) / WITNESS).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = data_files(path)
    return {rel for rel in set(known) | set(now) if known.get(rel) != now.get(rel)}
