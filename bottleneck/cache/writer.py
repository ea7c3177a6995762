"""Writing caches: create a folder, commit features chunk by chunk, publish it complete; caches from arrays."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from bottleneck._io import write_json_atomic
from bottleneck.cache.reader import MANIFEST, META, Cache
from bottleneck.cache.stores import open_store
from bottleneck.config import ExtractConfig

FORMAT_VERSION = 1


def rows_digest(rows: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=16).hexdigest()


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

    def shrink_split(self, split: str, labels, ids, skipped: list, manifest_json: dict) -> None:
        """Images of a created split proved unreadable when decoded: the split becomes ``len(labels)`` rows with
        these labels and ids, its committed rows stay, and ``skipped`` (also in manifest.json) records why."""
        n = len(labels)
        self.store.shrink_split(split, n, labels, ids, keep=self.meta["progress"][split])
        self.store.flush()
        self.meta["splits"][split]["n"] = int(n)
        self.meta["skipped"] = skipped
        write_json_atomic(self.path / MANIFEST, manifest_json)
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
    path,
    splits: dict,
    *,
    class_names,
    config: ExtractConfig | None = None,
    key: str = "0" * 64,
    layers: list[tuple[str, int, int]] | None = None,
) -> Cache:
    """Write a complete cache from in-memory arrays: ``splits = {name: (features, labels[, ids])}``.

    For tests, synthetic benchmarks and users who computed features elsewhere. ``layers`` records which columns
    came from which layer, (name, start, stop) each, so subsets of them can be selected.
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
    if layers:
        writer.meta["layers"] = [{"name": n, "start": int(a), "stop": int(b)} for n, a, b in layers]
    for split, arrays in splits.items():
        x, y = np.asarray(arrays[0]), np.asarray(arrays[1])
        ids = arrays[2] if len(arrays) > 2 else [f"{split}/{i}" for i in range(len(x))]
        writer.create_split(split, len(x), x.shape[1:], np.dtype(config.dtype).name, y, ids, chunk_rows=1024)
        writer.write(split, 0, x.astype(config.dtype))
        writer.commit(split, len(x))
    return writer.finish()
