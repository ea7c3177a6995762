"""One store class per on-disk format, all with the same interface, chosen by name from STORES."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from bottleneck._io import fsync_path
from bottleneck.errors import one_of

_COPY_ROWS = 4096  # rows copied per step when a store must rewrite a split


def _copy_rows(old, new, rows: int) -> None:
    """``new[:rows] = old[:rows]`` a block at a time (the arrays may be larger than memory)."""
    for start in range(0, rows, _COPY_ROWS):
        stop = min(rows, start + _COPY_ROWS)
        new[start:stop] = old[start:stop]


def shard_size(n: int, chunk_rows: int, shard_rows: int) -> int:
    """Rows per zarr shard: ``shard_rows`` rounded up to whole chunks (zarr's rule), and no more chunks than the
    split needs (a split shorter than ``shard_rows`` is one shard)."""
    chunk = max(1, min(chunk_rows, n))
    return chunk * max(1, math.ceil(min(shard_rows, max(1, n)) / chunk))


def _fsync(path: Path, up_to: Path) -> None:
    """fsync a file and every folder from its own up to ``up_to``, so a new file's name is durable too. A file
    that is not there (zarr stores no object for rows that are all the fill value) reads back as zeros: only its
    folders are synced."""
    targets = [path] if path.exists() else []
    if os.name != "nt":  # Windows cannot open folders (NTFS journals names)
        folder = path.parent
        while folder.is_dir():
            targets.append(folder)
            if folder == up_to or folder == folder.parent:
                break
            folder = folder.parent
    for target in targets:
        fsync_path(target)


# Labels and ids are small and known before any compute, so they are written when a split is created;
# only features are written chunk by chunk.


class Store:
    """Common interface. Layout per split: features (N, *shape), labels (N,) int64, ids (N,) str."""

    format: str = ""
    data_name: str = ""  # file or folder name under the cache directory

    def __init__(self, root: Path, mode: str = "r"):
        self.root = Path(root)
        self.mode = mode

    def create_split(
        self, split, n, feature_shape, dtype, labels, ids, chunk_rows, shard_rows: int | None = None
    ) -> None:
        """``shard_rows`` (zarr only) stores that many rows per object; see ``shard_size``."""
        raise NotImplementedError

    def shard_rows(self, split: str) -> int | None:
        """Rows per stored object of a sharded split (each written whole, once); None when not sharded."""
        return None

    def write(self, split: str, start: int, batch: np.ndarray) -> None:
        """Write rows [start, start + len(batch)) of a split's features."""
        raise NotImplementedError

    def shrink_split(self, split: str, n: int, labels, ids, keep: int) -> None:
        """Make a split ``n`` rows long (fewer than now) with new labels and ids; feature rows [0, keep) stay.

        Used when an image of the split turns out unreadable after the split was created (rows are compact).
        """
        raise NotImplementedError

    def flush(self) -> None:
        """Make everything written so far durable (called at each chunk commit)."""

    def features(self, split: str):
        """A lazily-read array-like (supports len, .shape, .dtype and slicing to NumPy)."""
        raise NotImplementedError

    def labels(self, split: str) -> np.ndarray:
        raise NotImplementedError

    def ids(self, split: str) -> np.ndarray:
        raise NotImplementedError

    def set_attrs(self, attrs: dict) -> None:
        """Mirror the cache's metadata inside the data file for readers that use plain zarr/h5py."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _no_shards(fmt: str, shard_rows) -> None:
    if shard_rows:  # ExtractConfig refuses it first, in the user's words
        raise ValueError(f"shard_rows is for zarr stores, not {fmt}")


class ZarrStore(Store):
    format = "zarr"
    data_name = "features.zarr"

    def __init__(self, root, mode="r"):
        import zarr

        super().__init__(root, mode)
        self.group = zarr.open_group(str(self.root / self.data_name), mode="a" if mode != "r" else "r")
        self._unsynced: set[Path] = set()  # shard files written since the last flush

    def create_split(self, split, n, feature_shape, dtype, labels, ids, chunk_rows, shard_rows=None):
        import zarr

        g = self.group.require_group(split)
        for name in ("features", "labels", "ids"):
            if name in g:
                del g[name]
        chunk = max(1, min(chunk_rows, n))
        g.create_array(
            "features",
            shape=(n, *feature_shape),
            chunks=(chunk, *feature_shape),
            # zarr v3 sharding: many chunks in one object, each readable alone through the shard's index.
            shards=(shard_size(n, chunk_rows, shard_rows), *feature_shape) if shard_rows else None,
            dtype=dtype,
            compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
            fill_value=0,
        )
        g.create_array("labels", data=np.asarray(labels, dtype=np.int64))
        g.create_array("ids", data=np.asarray(ids, dtype=np.dtypes.StringDType()))

    def shard_rows(self, split):
        shards = self.group[f"{split}/features"].shards
        return int(shards[0]) if shards else None

    def write(self, split, start, batch):
        # Every chunk stored, zeros too: a chunk file missing later is damage, never rows of the fill value.
        features = self.group[f"{split}/features"].with_config({"write_empty_chunks": True})
        features[start : start + len(batch)] = batch
        if features.shards and len(batch):
            # Shards are written whole and once (CacheWriter), and made durable before their rows are committed.
            rows = features.shards[0]
            for i in range(start // rows, (start + len(batch) - 1) // rows + 1):
                key = features.metadata.encode_chunk_key((i,) + (0,) * (features.ndim - 1))
                self._unsynced.add(self.root / self.data_name / split / "features" / key)

    def flush(self):
        for path in self._unsynced:
            _fsync(path, self.root / self.data_name)
        self._unsynced.clear()

    def shrink_split(self, split, n, labels, ids, keep):
        g = self.group[split]
        features = g["features"]
        # Whole chunks (shards, when sharded) below n are untouched: zarr deletes only those wholly past n.
        features.resize((n, *features.shape[1:]))
        for name in ("labels", "ids"):
            del g[name]
        g.create_array("labels", data=np.asarray(labels, dtype=np.int64))
        g.create_array("ids", data=np.asarray(ids, dtype=np.dtypes.StringDType()))

    def features(self, split):
        return self.group[f"{split}/features"]

    def labels(self, split):
        return self.group[f"{split}/labels"][:]

    def ids(self, split):
        return np.array(self.group[f"{split}/ids"][:].tolist(), dtype=str)

    def set_attrs(self, attrs):
        self.group.attrs.update(json.loads(json.dumps(attrs, default=str)))


class NpyStore(Store):
    """Plain .npy files per split; features open as a read-only memory map."""

    format = "npy"
    data_name = "npy"

    def __init__(self, root, mode="r"):
        super().__init__(root, mode)
        self.dir = self.root / self.data_name
        self._open: dict[str, np.memmap] = {}

    def _path(self, split, name):
        return self.dir / split / f"{name}.npy"

    def create_split(self, split, n, feature_shape, dtype, labels, ids, chunk_rows, shard_rows=None):
        _no_shards(self.format, shard_rows)
        (self.dir / split).mkdir(parents=True, exist_ok=True)
        self._open[split] = np.lib.format.open_memmap(
            self._path(split, "features"), mode="w+", dtype=dtype, shape=(n, *feature_shape)
        )
        np.save(self._path(split, "labels"), np.asarray(labels, dtype=np.int64))
        # Fixed-width unicode, not object: loadable without allow_pickle.
        np.save(self._path(split, "ids"), np.asarray(ids, dtype=str))

    def _writable(self, split):
        if split not in self._open:
            self._open[split] = np.load(self._path(split, "features"), mmap_mode="r+")
        return self._open[split]

    def write(self, split, start, batch):
        self._writable(split)[start : start + len(batch)] = batch

    def shrink_split(self, split, n, labels, ids, keep):
        old = self._writable(split)
        path = self._path(split, "features")
        tmp = path.with_name("features.shrink.npy")
        new = np.lib.format.open_memmap(tmp, mode="w+", dtype=old.dtype, shape=(n, *old.shape[1:]))
        _copy_rows(old, new, min(keep, n))
        new.flush()
        del self._open[split], old
        tmp.replace(path)
        self._open[split] = new
        np.save(self._path(split, "labels"), np.asarray(labels, dtype=np.int64))
        np.save(self._path(split, "ids"), np.asarray(ids, dtype=str))

    def flush(self):
        for mm in self._open.values():
            mm.flush()

    def features(self, split):
        return np.load(self._path(split, "features"), mmap_mode="r")

    def labels(self, split):
        return np.load(self._path(split, "labels"))

    def ids(self, split):
        return np.load(self._path(split, "ids"))

    def close(self):
        self.flush()
        self._open.clear()


class H5Store(Store):
    format = "h5"
    data_name = "features.h5"

    def __init__(self, root, mode="r"):
        import h5py

        super().__init__(root, mode)
        self.file = h5py.File(self.root / self.data_name, "a" if mode != "r" else "r")

    def create_split(self, split, n, feature_shape, dtype, labels, ids, chunk_rows, shard_rows=None):
        import h5py

        _no_shards(self.format, shard_rows)
        if split in self.file:
            del self.file[split]
        g = self.file.create_group(split)
        g.create_dataset(
            "features",
            shape=(n, *feature_shape),
            dtype=dtype,
            chunks=(max(1, min(chunk_rows, n)), *feature_shape) if n else None,
            compression="gzip" if n else None,
            compression_opts=1 if n else None,
        )
        g.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        g.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())

    def write(self, split, start, batch):
        self.file[f"{split}/features"][start : start + len(batch)] = batch

    def shrink_split(self, split, n, labels, ids, keep):
        import h5py

        g = self.file[split]
        old = g["features"]
        # A fixed-shape dataset cannot shrink: copy the kept rows into a new one (a rare path; the file keeps
        # the old one's space until it is repacked).
        new = g.create_dataset(
            "features.shrink",
            shape=(n, *old.shape[1:]),
            dtype=old.dtype,
            chunks=(max(1, min(old.chunks[0], n)), *old.shape[1:]) if n and old.chunks else None,
            compression="gzip" if n else None,
            compression_opts=1 if n else None,
        )
        _copy_rows(old, new, min(keep, n))
        del g["features"], g["labels"], g["ids"]
        g.move("features.shrink", "features")
        g.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        g.create_dataset("ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())

    def flush(self):
        self.file.flush()

    def features(self, split):
        return self.file[f"{split}/features"]

    def labels(self, split):
        return self.file[f"{split}/labels"][:]

    def ids(self, split):
        return np.asarray(self.file[f"{split}/ids"].asstr()[:], dtype=str)

    def set_attrs(self, attrs):
        for k, v in attrs.items():
            self.file.attrs[k] = (
                json.dumps(v, default=str) if not isinstance(v, str | int | float | bool) else v
            )

    def close(self):
        if self.file.id.valid:
            self.file.close()


class FeatureArray:
    """One split's features as the same kind of array whatever the store: read-only, read from disk on slicing.

    ``shape``, ``dtype``, ``ndim``, ``chunks`` (rows per stored chunk first) and ``len``; indexing returns NumPy
    arrays; ``np.asarray(features)`` reads it whole. A zarr array, a memory map and an h5py dataset differ in
    what indexing returns and which indexes they accept; users and heads should not have to care which.
    """

    def __init__(self, data, chunks: tuple[int, ...] | None = None):
        self._data = data
        self.shape = tuple(int(d) for d in data.shape)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)
        self.chunks = chunks if chunks is not None else getattr(data, "chunks", None)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        return (
            np.array(self._data[index], copy=True)
            if isinstance(self._data, np.memmap)
            else np.asarray(self._data[index])
        )

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"FeatureArray(shape={self.shape}, dtype={self.dtype})"


STORES: dict[str, type[Store]] = {s.format: s for s in (ZarrStore, NpyStore, H5Store)}


def open_store(fmt: str, root, mode: str = "r") -> Store:
    """The store class for a format name; ValueError listing valid names for an unknown one."""
    if fmt not in STORES:
        raise one_of("format", fmt, STORES)
    return STORES[fmt](root, mode)
