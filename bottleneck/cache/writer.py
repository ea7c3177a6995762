"""Writing caches: create a folder, commit features chunk by chunk, publish it complete; caches from arrays."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bottleneck._io import write_bytes_atomic, write_json_atomic
from bottleneck.cache import integrity
from bottleneck.cache.integrity import FORMAT_VERSION, ids_digest, labels_digest, rows_digest, write_meta
from bottleneck.cache.meta import MANIFEST
from bottleneck.cache.reader import Cache
from bottleneck.cache.stores import open_store
from bottleneck.config import ExtractConfig
from bottleneck.data.manifest import Manifest

__all__ = [
    "FORMAT_VERSION",
    "CacheWriter",
    "range_records",
    "rows_digest",
    "write_arrays",
    "write_range_record",
]

COMMITS = "commits"  # under a cache folder: one record per range a cluster task landed


class _ShardBuffer:
    """The rows of a sharded split that were written but are not in the store yet: [start, stop), where start is a
    shard boundary; and the checksum regions not yet recorded in meta.json."""

    def __init__(self, start: int):
        self.start = self.stop = start
        self.parts: list[np.ndarray] = []
        self.sums: list[list] = []


class CacheWriter:
    """Creates a cache folder and commits features chunk by chunk; ``finish`` publishes it as complete.

    A sharded zarr split (``ExtractConfig.shard_rows``) is held back a shard at a time: written rows wait here until
    their shard is whole (or the split ends), the shard goes to the store in one write, is made durable at the next
    commit, and only then does the split's progress pass it. Why: zarr rewrites a whole shard object to change any
    chunk in it, zarr-python's LocalStore wrote objects in place (truncate, then write) before 3.1.3 and still does
    not fsync them, so a shard rewritten at every chunk commit would put the rows committed in it earlier at risk
    (a crash or power loss mid-write). Written whole and once, a shard holds no committed row until it is durable.
    The cost: an interrupted run resumes after the last whole shard, so up to a shard of rows is computed again,
    and a split shrunk after a late bad image restarts there too (``write`` then starts a new buffer).
    """

    def __init__(
        self, path, *, key, key_material, config: ExtractConfig, class_names, manifest: Manifest, skipped
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
            # every row the cache will hold, splits not started yet included ("incomplete (k/n rows)" counts them)
            "rows_planned": len(manifest) - len(skipped),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "complete": False,
        }
        self.save()  # first: marks the folder as an (incomplete) cache
        self._write_manifest(manifest, skipped)
        self.store = open_store(config.format, self.path, "w")
        self._buffers: dict[str, _ShardBuffer] = {}

    @classmethod
    def reopen(cls, path, meta: dict) -> CacheWriter:
        """Continue an interrupted cache: committed rows stay, writing resumes after them."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.meta = meta
        self.store = open_store(meta["format"], self.path, "w")
        self._buffers = {}
        return self

    def save(self) -> None:
        """Write meta.json (sealed, atomically): the only way a cache's metadata reaches the disk."""
        write_meta(self.path, self.meta)

    def _write_manifest(self, manifest: Manifest, skipped: list) -> None:
        data = manifest.to_bytes(skipped)
        write_bytes_atomic(self.path / MANIFEST, data)
        self.meta["manifest_digest"] = integrity.digest(data)
        self.save()

    def describe_engine(self, engine) -> None:
        """Record what computes the rows of a new cache: the engine's name, its device, each layer's column range
        in the feature vector, and an int8 model's record (what rebuilds it for ``predict`` and ``verify``)."""
        self.meta["engine"] = engine.name
        self.meta["device"] = getattr(
            engine, "device", "cpu"
        )  # engines of tests and custom factories may not say
        self.meta["layers"] = [{"name": n, "start": a, "stop": b} for n, a, b in engine.columns] or None
        if getattr(engine, "int8", None) is not None:
            from dataclasses import asdict

            self.meta["int8"] = asdict(engine.int8)

    @property
    def engine_name(self) -> str | None:
        return self.meta.get("engine")

    def split(self, split: str) -> dict | None:
        """A created split's layout (a copy): ``n``, ``chunk_rows``, ``shard_rows``; None when not created yet."""
        info = self.meta["splits"].get(split)
        return (
            None
            if info is None
            else {"n": info["n"], "chunk_rows": info["chunk_rows"], "shard_rows": info.get("shard_rows")}
        )

    def committed(self, split: str) -> int:
        """Rows [0, committed) of a split are durable (what a resume starts after)."""
        return int(self.meta["progress"].get(split, 0))

    def rows_saved(self) -> int:
        return sum(int(v) for v in self.meta["progress"].values())

    def recorded_starts(self, split: str) -> set[int]:
        """Starts of the regions of a split whose checksums are recorded."""
        return {int(r[0]) for r in self.meta.get("checksums", {}).get(split, [])}

    def snapshot(self, keys) -> dict:
        """A copy of some metadata entries (what a cluster task needs to rebuild the engine)."""
        import copy

        return {k: copy.deepcopy(self.meta[k]) for k in keys if k in self.meta}

    def create_split(self, split, n, feature_shape, dtype, labels, ids, chunk_rows):
        shard_rows = self.meta["config"].get("shard_rows")
        self.store.create_split(
            split, n, tuple(feature_shape), dtype, labels, ids, chunk_rows, shard_rows=shard_rows
        )
        self.meta["splits"][split] = {
            "n": int(n),
            "feature_shape": list(feature_shape),
            "chunk_rows": chunk_rows,
            "labels_digest": labels_digest(labels),
            "ids_digest": ids_digest(ids),
        }
        if shard_rows:  # rows per shard as stored: whole chunks, never more than the split
            self.meta["splits"][split]["shard_rows"] = self.store.shard_rows(split)
        self.meta["progress"][split] = 0
        self.save()

    def shrink_split(self, split: str, labels, ids, skipped: list, manifest: Manifest) -> None:
        """Images of a created split proved unreadable when decoded: the split becomes ``len(labels)`` rows with
        these labels and ids, its committed rows stay, and ``skipped`` (also in the manifest) records why;
        ``manifest`` is every source item."""
        n = len(labels)
        keep = self.meta["progress"][split]
        self.store.shrink_split(split, n, labels, ids, keep=keep)
        self.store.flush()
        info = self.meta["splits"][split]
        if "rows_planned" in self.meta:
            self.meta["rows_planned"] -= info["n"] - int(n)
        info.update(n=int(n), labels_digest=labels_digest(labels), ids_digest=ids_digest(ids))
        sums = self.meta.get("checksums", {}).get(split)
        if sums:  # regions past the kept rows no longer hold what they were written with
            sums[:] = [r for r in sums if r[1] <= min(keep, n)]
        self.meta["skipped"] = skipped
        self._write_manifest(manifest, skipped)

    def write(self, split: str, start: int, batch: np.ndarray) -> None:
        if self.meta["splits"][split].get("shard_rows"):
            self._hold(split, start, batch)
            return
        self.store.write(split, start, batch)
        # A checksum per written region lets `cache verify` find a flipped byte without the source images.
        sums = self.meta.setdefault("checksums", {}).setdefault(split, [])
        sums.append([int(start), int(start + len(batch)), rows_digest(batch)])

    def _hold(self, split: str, start: int, batch: np.ndarray) -> None:
        """Buffer rows of a sharded split; store every shard they complete (see the class docstring)."""
        rows = self.meta["splits"][split]["shard_rows"]
        buf = self._buffers.get(split)
        if buf is None or start != buf.stop:  # the first write, a resume, or a restart after shrink_split
            if start % rows:
                raise ValueError(f"a sharded split is written from a shard boundary: {start=}, {rows=}")
            buf = self._buffers[split] = _ShardBuffer(start)
        buf.parts.append(np.array(batch, copy=True))  # the caller may reuse its array
        buf.sums.append([int(start), int(start + len(batch)), rows_digest(batch)])
        buf.stop = start + len(batch)
        whole = buf.start + (buf.stop - buf.start) // rows * rows
        if whole > buf.start:
            self._store_rows(split, buf, whole)

    def _store_rows(self, split: str, buf: _ShardBuffer, stop: int) -> None:
        """Write the buffered rows [buf.start, stop) (whole shards, or the split's last one) in one store write."""
        data = np.concatenate(buf.parts) if len(buf.parts) > 1 else buf.parts[0]
        self.store.write(split, buf.start, data[: stop - buf.start])
        buf.parts = [data[stop - buf.start :]] if stop < buf.stop else []
        buf.start = stop

    def commit(self, split: str, rows_done: int) -> None:
        """Record that rows [0, rows_done) of a split are durable; of a sharded split, only the rows of shards
        in the store (all of them once rows_done reaches the split's end)."""
        buf = self._buffers.get(split)
        if buf is not None:
            if rows_done >= self.meta["splits"][split]["n"] and buf.stop > buf.start:
                self._store_rows(split, buf, buf.stop)  # the split's last shard, shorter than the others
            rows_done = min(rows_done, buf.start)
            stored = [r for r in buf.sums if r[1] <= rows_done]
            buf.sums = [r for r in buf.sums if r[1] > rows_done]
            self.meta.setdefault("checksums", {}).setdefault(split, []).extend(stored)
        self.store.flush()
        self.meta["progress"][split] = int(rows_done)
        self.save()

    def record_range(self, split: str, start: int, stop: int, digest: str, *, save: bool = True) -> None:
        """Rows [start, stop) of a split landed in the store (a cluster task, or rows copied from donors): record
        their checksum, and move the committed prefix (rows [0, p) durable, what a resume reads) past them."""
        sums = self.meta.setdefault("checksums", {}).setdefault(split, [])
        sums.append([int(start), int(stop), digest])
        starts = {int(r[0]): int(r[1]) for r in sums}
        prefix = self.meta["progress"].get(split, 0)
        while prefix in starts:
            prefix = starts[prefix]
        self.meta["progress"][split] = prefix
        if save:
            self.save()

    def land(self, split: str, start: int, rows: np.ndarray) -> None:
        """Rows [start, start + len(rows)) written whole (a range of donors' rows on a cluster run), made durable
        and recorded."""
        self.store.write(split, start, rows)
        self.store.flush()
        self.record_range(split, start, start + len(rows), rows_digest(rows))

    def finish(self, extra: dict | None = None) -> Cache:
        self.meta.update(extra or {})
        self.store.set_attrs({k: self.meta[k] for k in ("key", "class_names", "config", "splits")})
        self.store.close()
        integrity.write_witness(self.path)  # the data as written: what later hits compare against
        self.meta["complete"] = True
        self.save()  # last: only now does the cache count as complete
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
    writer = CacheWriter(
        path,
        key=key,
        key_material={},
        config=config,
        class_names=class_names,
        manifest=Manifest([], [], [], [], class_names, "", "arrays"),
        skipped=[],
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


def write_range_record(path, split: str, start: int, rows: np.ndarray, *, computed: int) -> dict:
    """A cluster task's commit record for rows it wrote (and made durable) at ``start`` of ``split``: what the
    client records in meta.json, and what a resumed run adopts when the client never saw the task land."""

    record = {
        "start": int(start),
        "stop": int(start + len(rows)),
        "digest": rows_digest(rows),
        "computed": int(computed),
    }
    folder = Path(path) / COMMITS / split
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"{int(start):012d}.json", record)
    return record


def range_records(path, split: str) -> dict[int, tuple[int, str]]:
    """start -> (stop, checksum) of the ranges of ``split`` whose commit record a cluster task wrote."""
    import json

    out = {}
    folder = Path(path) / COMMITS / split
    if folder.is_dir():
        for f in folder.glob("*.json"):
            try:
                r = json.loads(f.read_text())
                out[int(r["start"])] = (int(r["stop"]), str(r["digest"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a record being written when the run stopped: its range is computed again
    return out
