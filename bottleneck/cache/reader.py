"""Reading caches: the read-only ``Cache`` (every read checked against what was written), a subset of its layers
read in place (``LayerView``), and ``open_cache``."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from bottleneck import storage
from bottleneck.cache import integrity
from bottleneck.cache.columns import layer_columns, resolve_layers
from bottleneck.cache.integrity import CacheDamaged, Regions, VerifiedArray
from bottleneck.cache.key import key_of
from bottleneck.cache.meta import MANIFEST, META, progress_text, read_manifest, read_meta
from bottleneck.cache.stores import FeatureArray, Store, open_store
from bottleneck.config import ExtractConfig
from bottleneck.data.manifest import Manifest
from bottleneck.errors import CacheError, first_line

__all__ = ["MANIFEST", "META", "Cache", "ColumnView", "LayerView", "as_cache", "open_cache", "select_layers"]


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
        self._regions: dict[str, Regions] = {}  # per split: checksummed regions and which were verified
        self._checked: set[tuple[str, str]] = set()  # (split, "labels" | "ids") whose digest matched

    @property
    def name(self) -> str:
        """How tables and run folders name this cache: its folder name (a layer subset adds its layers)."""
        return self.path.name

    @property
    def columns(self) -> list[tuple[str, int, int]] | None:
        """(layer, start, stop) of each layer in the feature vector, or None when the cache has no record."""
        layers = self.meta.get("layers")
        return [(d["name"], int(d["start"]), int(d["stop"])) for d in layers] if layers else None

    def select(self, layers) -> Cache:
        """This cache restricted to some of its layers ("a,b", a list, "top" or "multiscale"), read in place.

        The result reads as the cache an extraction of exactly those layers would give: heads fitted on it
        record those layers. CacheError for an unknown layer or a cache without per-layer ranges.
        """
        return select_layers(self, layers)

    @property
    def store(self) -> Store:
        if self._store is None:
            try:
                self._store = open_store(self.meta["format"], self.path, "r")
            except integrity.READ_ERRORS as exc:
                raise CacheDamaged(
                    f"cache {self.path} is damaged: its {self.meta['format']} data cannot be opened "
                    f"({first_line(exc, with_type=True)}). Run `bottleneck cache verify {self.path}`, then re-run the `bottleneck "
                    "extract` that made it."
                ) from None
        return self._store

    def _raw(self, split: str, what: str):
        """A store array of a split, a damaged or missing one as CacheDamaged."""
        try:
            return getattr(self.store, what)(split)
        except integrity.READ_ERRORS as exc:
            raise CacheDamaged(
                f"cache {self.path} is damaged: the {what} of split {split!r} cannot be read ({first_line(exc, with_type=True)}). "
                f"Run `bottleneck cache verify {self.path}`, then re-run the `bottleneck extract` that made it.",
                split,
            ) from None

    def regions(self, split: str) -> Regions:
        """The checksummed regions of a split's features (the rows that count as written must all have one)."""
        if split not in self._regions:
            covered = self.n(split) if self.complete else int(self.meta.get("progress", {}).get(split, 0))
            sums = self.meta.get("checksums", {}).get(split, [])
            self._regions[split] = Regions(str(self.path), split, sums, covered)
        return self._regions[split]

    def damaged(self, split: str, what: str, why: str) -> CacheDamaged:
        return CacheDamaged(
            f"cache {self.path} is damaged: the {what} of split {split!r} {why}. Run `bottleneck cache verify "
            f"{self.path}`, then re-run the `bottleneck extract` that made it.",
            split,
        )

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

    def features(self, split: str, *, verify: bool = True):
        """(N, *feature_shape) features, the same array-like for every format; slicing reads from disk (NumPy
        out). Each written region is checked against its checksum when first read (``verify=False``: raw reads,
        for ``cache verify``'s own pass); damage raises CacheDamaged naming the rows."""
        self._check(split)
        info = self.meta["splits"][split]
        chunk_rows = info.get("chunk_rows")
        data = self._raw(split, "features")
        shape = (self.n(split), *info["feature_shape"])
        if tuple(int(d) for d in data.shape) != shape:
            raise self.damaged(split, "features", f"have shape {tuple(data.shape)}, not the {shape} written")
        chunks = (int(chunk_rows), *data.shape[1:]) if chunk_rows else None
        array = FeatureArray(data, chunks)
        if not verify:
            return array
        return VerifiedArray(array, self.regions(split), on_damage=lambda: integrity.drop_witness(self.path))

    def labels(self, split: str) -> np.ndarray:
        """(N,) int64 label indices into ``class_names``, checked against the digest written with them."""
        self._check(split)
        labels = np.asarray(self._raw(split, "labels"))
        self._verify_column(split, "labels", labels, integrity.labels_digest)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise self.damaged(
                split,
                "labels",
                f"include {int(labels.max())}, outside the {len(self.class_names)} class names",
            )
        return labels

    def ids(self, split: str) -> np.ndarray:
        """(N,) image ids (relative paths, or "<split>/<row>" for arrays), checked against their digest."""
        self._check(split)
        ids = self._raw(split, "ids")
        self._verify_column(split, "ids", ids, integrity.ids_digest)
        return ids

    def _verify_column(self, split: str, what: str, values, digest_of) -> None:
        if (split, what) in self._checked:
            return
        n = self.n(split)
        if len(values) != n:
            raise self.damaged(split, what, f"have {len(values)} rows, not the {n} written")
        expected = self.meta["splits"][split].get(f"{what}_digest")
        if expected is None:
            expected = self._legacy_digest(split, what, digest_of)
        if expected is not None and digest_of(values) != expected:
            integrity.drop_witness(self.path)
            raise self.damaged(split, what, "do not match their checksum (changed or damaged on disk)")
        self._checked.add((split, what))

    def _legacy_digest(self, split: str, what: str, digest_of) -> str | None:
        """A cache written before labels and ids had digests: what its manifest says they are (None: no manifest)."""
        try:
            manifest, skipped = read_manifest(self.path)
        except (OSError, ValueError, KeyError):
            return None
        if not len(manifest):
            return None
        if skipped:
            manifest = manifest.without([s["index"] for s in skipped])
        rows = manifest.rows_of(split)
        return digest_of(manifest.label[rows] if what == "labels" else manifest.id[rows].tolist())

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of a split in memory."""
        return np.asarray(self.features(split)[:]), self.labels(split)

    def manifest(self) -> Manifest:
        """Every item of the source the cache was made from, skipped ones included (``meta["skipped"]``),
        checked against the digest written with it."""
        expected = self.meta.get("manifest_digest")
        try:
            if expected is not None:
                data = (self.path / MANIFEST).read_bytes()
                if integrity.digest(data) != expected:
                    raise CacheDamaged(
                        f"cache {self.path} is damaged: {MANIFEST} does not match its checksum. Re-run the "
                        "`bottleneck extract` that made it."
                    )
                return Manifest.from_bytes(data)[0]
            return read_manifest(self.path)[0]
        except (OSError, ValueError, KeyError) as exc:
            raise CacheDamaged(
                f"cache {self.path} is damaged: its manifest cannot be read ({first_line(exc, with_type=True)}). Re-run the "
                "`bottleneck extract` that made it."
            ) from None

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
            "device": self.meta.get(
                "device"
            ),  # where the features were computed (caches before: not recorded)
            "class_names": self.class_names,
            "splits": {
                s: {"n": v["n"], "feature_shape": v["feature_shape"]} for s, v in self.meta["splits"].items()
            },
            "skipped": len(self.meta.get("skipped", [])),
            "excluded": self.excluded(),
            "layers": self.meta.get("layers"),
            "created": self.meta.get("created"),
            "config": self.meta["config"],
        }

    def excluded(self) -> dict | None:
        """The exclusion list the cache was extracted with (``extract --exclude``): how many ids and the
        digest its key records; None without one."""
        ids = (self.meta.get("source_options") or {}).get("exclude")
        if ids is None:
            return None
        return {"ids": len(ids), "digest": (self.meta.get("key_material") or {}).get("exclude")}

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
    """Open a cache folder for reading. An incomplete cache raises CacheError unless allow_incomplete.

    ``path`` may be a URL (``s3://bucket/caches/<folder>``): the complete cache is copied into its local staging
    folder first (only what changed since the last copy) and read from there."""

    if storage.is_url(path):
        parent, name = str(path).rstrip("/").rsplit("/", 1)
        remote = storage.RemoteCaches(parent)
        if not remote.fetch(name):
            raise CacheError(
                f"no complete cache at {path}; run `bottleneck extract SOURCE --cache-dir {parent}` first."
            )
        path = remote.local / name
    path = storage.local_path(path)
    meta = read_meta(path)
    if not meta.get("complete") and not allow_incomplete:
        raise CacheError(
            f"cache {path} is {progress_text(meta)}: its extraction did not finish. "
            f"Re-run the same `bottleneck extract` command to resume it."
        )
    return Cache(path, meta)


def as_cache(cache) -> Cache:
    """A Cache as it is, or a cache folder opened with ``open_cache``."""
    return cache if isinstance(cache, Cache) else open_cache(cache)


class ColumnView:
    """Some columns of a (N, D) feature array, read row block by row block; the same interface as FeatureArray."""

    def __init__(self, data, index: np.ndarray):
        self._data = data
        self._index = index
        n = int(data.shape[0])
        self.shape = (n, len(index))
        self.dtype = np.dtype(data.dtype)
        self.ndim = 2
        chunks = getattr(data, "chunks", None)
        self.chunks = (chunks[0], len(index)) if chunks else None
        # One contiguous range reads as a slice (a NumPy view, no copy); several as a gather.
        contiguous = len(index) and index[-1] - index[0] + 1 == len(index)
        self._columns = slice(int(index[0]), int(index[-1]) + 1) if contiguous else index

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        block = np.asarray(self._data[rows])
        return block[..., self._columns]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"ColumnView(shape={self.shape}, dtype={self.dtype})"


class LayerView(Cache):
    """A cache's rows restricted to some of its layers; it reads as the cache a fresh extraction of exactly
    those layers would give (same config, key material and feature key), so heads fitted on it record those
    layers and are accepted on such a cache, and ``predict`` builds exactly those layers."""

    def __init__(self, parent: Cache, layers: tuple[str, ...]):
        columns = {name: (a, b) for name, a, b in layer_columns(parent)}
        meta = copy.deepcopy(parent.meta)
        joined = ",".join(layers)
        meta["config"]["layer"] = joined
        material = meta.get("key_material")
        if material and "config" in material:
            material["config"]["layer"] = joined
            meta["key"] = key_of(material)
        else:
            meta["key"] = f"{parent.key}:{joined}"
        ranges, start = [], 0
        for name in layers:
            a, b = columns[name]
            ranges.append({"name": name, "start": start, "stop": start + b - a})
            start += b - a
        meta["layers"] = ranges
        for split in meta["splits"].values():
            split["feature_shape"] = [start]
        meta["view_of"] = {"path": str(parent.path), "key": parent.key, "layers": list(layers)}
        super().__init__(parent.path, meta)
        self.parent = parent
        self.layers = layers
        self._index = np.concatenate([np.arange(*columns[n]) for n in layers])

    @property
    def name(self) -> str:
        # Unique per subset (table rows are keyed by it): the names when few, else a count and the key.
        label = (
            ",".join(self.layers) if len(self.layers) <= 3 else f"{len(self.layers)} layers {self.key[:6]}"
        )
        return f"{self.parent.name}[{label}]"

    @property
    def store(self):
        return self.parent.store

    def features(self, split: str, *, verify: bool = True) -> ColumnView:
        return ColumnView(self.parent.features(split, verify=verify), self._index)

    def close(self):
        self.parent.close()


def select_layers(cache, layers) -> Cache:
    """``cache`` restricted to ``layers`` (see ``resolve_layers``); the cache itself when that is all of it."""
    names = resolve_layers(cache, layers)
    if list(names) == [name for name, _, _ in layer_columns(cache)]:
        return cache
    parent = cache.parent if isinstance(cache, LayerView) else cache
    return LayerView(parent, names)
