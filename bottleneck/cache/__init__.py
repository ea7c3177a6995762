"""Feature caches on disk: key, metadata, stores and readers.

Layout of ``cache/<backbone>-<key8>/`` (readable without bottleneck):

- ``meta.json``: key, full config, class names, splits ({name: {n, feature_shape}}), versions, weights identity,
  committed rows per split, and ``complete`` — true only after the final commit (written last, atomically).
- ``manifest.json``: every source item (index, split, id, label, class name, content hash) and skipped images.
- data, by format: ``features.zarr/<split>/{features,labels,ids}`` | ``npy/<split>/{features,labels,ids}.npy`` |
  ``features.h5:/<split>/{features,labels,ids}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from bottleneck.cache.key import cache_dir_name, compute_key
from bottleneck.cache.stores import STORES, Store, open_store
from bottleneck.config import ExtractConfig
from bottleneck.errors import CacheError

__all__ = [
    "META",
    "Cache",
    "CacheWriter",
    "STORES",
    "Store",
    "cache_dir_name",
    "compute_key",
    "open_cache",
    "read_meta",
    "write_arrays",
]

META = "meta.json"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON so that a crash leaves either the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def rows_digest(rows: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=16).hexdigest()


def read_meta(path) -> dict:
    path = Path(path)
    meta_file = path / META
    if not path.exists():
        raise CacheError(
            f"no cache at {path}: the folder does not exist. Run `bottleneck extract SOURCE` first."
        )
    if not meta_file.exists():
        raise CacheError(
            f"{path} is not a bottleneck cache (no {META}); pass a folder made by `bottleneck extract`."
        )
    try:
        return json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise CacheError(f"{meta_file} is corrupt ({exc}); remove the cache and extract again.") from None


def progress_text(meta: dict) -> str:
    done = sum(meta.get("progress", {}).values())
    total = sum(s["n"] for s in meta.get("splits", {}).values())
    return f"incomplete ({done}/{total} rows)"


class Cache:
    """A read-only view of a cache: per split ``features`` (array-like, N x ...), ``labels`` (N,), ``ids`` (N,)."""

    def __init__(self, path, meta: dict):
        self.path = Path(path)
        self.meta = meta
        self.key: str = meta["key"]
        self.config = ExtractConfig.from_dict(meta["config"])
        self.class_names: list[str] = list(meta["class_names"])
        self.splits: list[str] = list(meta["splits"])
        self.complete: bool = bool(meta.get("complete"))
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.meta["format"], self.path, "r")
        return self._store

    def _check(self, split):
        if split not in self.meta["splits"]:
            raise CacheError(
                f"cache {self.path.name} has no split {split!r}; it has: {', '.join(self.splits) or 'none'}."
            )

    def n(self, split: str) -> int:
        self._check(split)
        return int(self.meta["splits"][split]["n"])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        first = next(iter(self.meta["splits"].values()))
        return tuple(first["feature_shape"])

    def features(self, split: str):
        """Array-like (N, *feature_shape); slicing reads from disk, so a cache larger than RAM works."""
        self._check(split)
        return self.store.features(split)

    def labels(self, split: str) -> np.ndarray:
        self._check(split)
        return self.store.labels(split)

    def ids(self, split: str) -> np.ndarray:
        self._check(split)
        return self.store.ids(split)

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of a split in memory."""
        return np.asarray(self.features(split)[:]), self.labels(split)

    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text())

    def summary(self) -> dict:
        """The JSON shape used by `extract --json` and `info --json`."""
        return {
            "path": str(self.path),
            "key": self.key,
            "complete": self.complete,
            "status": "complete" if self.complete else progress_text(self.meta),
            "backbone": self.config.backbone,
            "format": self.meta["format"],
            "engine": self.meta.get("engine"),
            "class_names": self.class_names,
            "splits": {
                s: {"n": v["n"], "feature_shape": v["feature_shape"]} for s, v in self.meta["splits"].items()
            },
            "skipped": len(self.meta.get("skipped", [])),
            "created": self.meta.get("created"),
            "config": self.meta["config"],
        }

    def close(self):
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        status = "complete" if self.complete else progress_text(self.meta)
        return f"Cache({str(self.path)!r}, {status}, splits={ {s: self.n(s) for s in self.splits} })"


def open_cache(path, *, allow_incomplete: bool = False) -> Cache:
    """Open a cache folder for reading. An incomplete cache raises CacheError unless allow_incomplete."""
    meta = read_meta(path)
    if not meta.get("complete") and not allow_incomplete:
        raise CacheError(
            f"cache {path} is {progress_text(meta)}: its extraction did not finish. "
            f"Re-run the same `bottleneck extract` command to resume it."
        )
    return Cache(path, meta)


class CacheWriter:
    """Creates a cache folder and commits features chunk by chunk; ``finish`` publishes it as complete."""

    def __init__(
        self, path, *, key, key_material, config: ExtractConfig, class_names, manifest_json, skipped
    ):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "key_material": key_material,
            "format": config.format,
            "config": config.to_dict(),
            "class_names": list(class_names),
            "splits": {},
            "progress": {},
            "skipped": skipped,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "complete": False,
        }
        write_json_atomic(self.path / META, self.meta)  # first: marks the folder as an (incomplete) cache
        write_json_atomic(self.path / MANIFEST, manifest_json)
        self.store = open_store(config.format, self.path, "w")

    @classmethod
    def reopen(cls, path, meta: dict) -> CacheWriter:
        """Continue an interrupted cache: committed rows stay, writing resumes after them."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.meta = meta
        self.store = open_store(meta["format"], self.path, "w")
        return self

    def create_split(self, split, n, feature_shape, dtype, labels, ids, chunk_rows):
        self.store.create_split(split, n, tuple(feature_shape), dtype, labels, ids, chunk_rows)
        self.meta["splits"][split] = {
            "n": int(n),
            "feature_shape": list(feature_shape),
            "chunk_rows": chunk_rows,
        }
        self.meta["progress"][split] = 0
        write_json_atomic(self.path / META, self.meta)

    def write(self, split: str, start: int, batch: np.ndarray) -> None:
        self.store.write(split, start, batch)
        # A checksum per written region lets `cache verify` find a flipped byte without the source images.
        sums = self.meta.setdefault("checksums", {}).setdefault(split, [])
        sums.append([int(start), int(start + len(batch)), rows_digest(batch)])

    def commit(self, split: str, rows_done: int) -> None:
        """Record that rows [0, rows_done) of a split are durable."""
        self.store.flush()
        self.meta["progress"][split] = int(rows_done)
        write_json_atomic(self.path / META, self.meta)

    def finish(self, extra: dict | None = None) -> Cache:
        self.meta.update(extra or {})
        self.store.set_attrs({k: self.meta[k] for k in ("key", "class_names", "config", "splits")})
        self.store.close()
        self.meta["complete"] = True
        write_json_atomic(self.path / META, self.meta)  # last: only now does the cache count as complete
        return Cache(self.path, self.meta)

    def abort(self) -> None:
        self.store.close()


def write_arrays(
    path, splits: dict, *, class_names, config: ExtractConfig | None = None, key: str = "0" * 64
) -> Cache:
    """Write a complete cache from in-memory arrays: ``splits = {name: (features, labels[, ids])}``.

    For tests, synthetic benchmarks and users who computed features elsewhere.
    """
    config = config or ExtractConfig(backbone="arrays", weights="none")
    items, skipped = [], []
    writer = CacheWriter(
        path,
        key=key,
        key_material={},
        config=config,
        class_names=class_names,
        manifest_json={"items": items, "class_names": list(class_names), "kind": "arrays"},
        skipped=skipped,
    )
    for split, arrays in splits.items():
        x, y = np.asarray(arrays[0]), np.asarray(arrays[1])
        ids = arrays[2] if len(arrays) > 2 else [f"{split}/{i}" for i in range(len(x))]
        writer.create_split(split, len(x), x.shape[1:], np.dtype(config.dtype).name, y, ids, chunk_rows=1024)
        writer.write(split, 0, x.astype(config.dtype))
        writer.commit(split, len(x))
    return writer.finish()
