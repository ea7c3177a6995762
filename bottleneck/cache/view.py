"""A subset of a multi-layer cache's layers, read as the cache of those layers alone: a view, not a copy."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from bottleneck.cache.key import key_of
from bottleneck.cache.reader import Cache
from bottleneck.errors import CacheError, suggest


def layer_columns(cache) -> list[tuple[str, int, int]]:
    """(layer, start, stop) of every layer in a cache's feature vector; CacheError when it has none recorded."""
    layers = cache.meta.get("layers")
    if not layers:
        if len(cache.feature_shape) != 1:
            raise CacheError(
                f"cache {cache.path.name} holds spatial features (pooling={cache.config.pooling!r}); layer subsets "
                "need pooled features: extract with pooling='avg' or 'max'."
            )
        raise CacheError(
            f"cache {cache.path.name} has no per-layer column ranges (it was made before bottleneck recorded "
            "them, or from arrays); extract it again (e.g. `bottleneck extract SOURCE --layer blocks --force`) "
            "to read subsets of its layers."
        )
    return [(d["name"], int(d["start"]), int(d["stop"])) for d in layers]


def resolve_layers(cache, layers: str | Sequence[str]) -> tuple[str, ...]:
    """The layer names of a subset ("a,b", a list, or the presets "top", "multiscale", and on a cache extracted
    with them "blocks" and "wide"), in cache order. "top" is the backbone's feature layer, by name."""
    from bottleneck.backbones.presets import MULTISCALE_NAME, NETWORK_SETS, TOP, multiscale_layers

    columns = layer_columns(cache)
    have = [name for name, _, _ in columns]
    asked = [n.strip() for n in layers.split(",")] if isinstance(layers, str) else [str(n) for n in layers]
    names: list[str] = []
    for n in asked:
        if n == MULTISCALE_NAME:
            names += multiscale_layers(cache.config.backbone).split(",")
        elif n == TOP:
            names.append(top_layer(cache))
        elif n in NETWORK_SETS:
            names += set_layers(cache, n)
        elif n:
            names.append(n)
    if not names:
        raise CacheError(
            f"layers={layers!r} names no layer; pass layer names of the cache, e.g. {have[-1]!r}."
        )
    for n in names:
        if n not in have:
            listed = (
                ", ".join(have) if len(have) <= 20 else ", ".join(have[:8]) + ", ..., " + ", ".join(have[-8:])
            )
            raise CacheError(
                f"cache {cache.path.name} has no layer {n!r}.{suggest(n, have)} Its layers are: {listed}."
            )
    return tuple(n for n in have if n in set(names))


def top_layer(cache) -> str:
    """The name of the backbone's feature layer among a cache's columns; CacheError when it holds none.

    Not "the last column": a list such as ``multiscale`` puts the feature layer first. Known without building
    the network when the cache holds only it, when sets put it last, or when the list named it ``top``.
    """
    from bottleneck.backbones.presets import NETWORK_SETS, TOP
    from bottleneck.cache.key import is_model_path
    from bottleneck.config import layer_names

    have = [name for name, _, _ in layer_columns(cache)]
    listed = layer_names(cache.config.layer)
    if not listed:  # the default: the feature layer alone
        return have[0]
    if all(n in NETWORK_SETS for n in listed):  # every set ends with the feature layer
        return have[-1]
    if TOP in listed and len(listed) == len(have):
        return have[listed.index(TOP)]
    if is_model_path(cache.config.backbone):
        name = None
    else:
        from bottleneck.backbones.layers import feature_layer_name

        name = feature_layer_name(cache.config.backbone)
    if name not in have:
        raise CacheError(
            f"cache {cache.path.name} does not hold the top layer of {cache.config.backbone}"
            f"{f' ({name})' if name else ''}; its layers are {', '.join(have[:8])}"
            f"{', ...' if len(have) > 8 else ''}. Extract with --layer top, or name the layers to use."
        )
    return name


def set_layers(cache, name: str) -> list[str]:
    """The columns of a cache extracted with the network set ``name`` ("blocks" or "wide"; also within
    "blocks,wide"): wide points are told by their names (``presets.is_wide``), block outputs are the others."""
    from bottleneck.backbones.presets import WIDE, is_wide
    from bottleneck.backbones.registry import get_spec
    from bottleneck.cache.key import is_model_path
    from bottleneck.config import layer_names

    if name not in layer_names(cache.config.layer):
        raise CacheError(
            f"cache {cache.path.name} was not extracted with layer={name!r} (its layer setting is "
            f"{cache.config.layer!r}); extract with --layer {name}, or name the layers to use."
        )
    family = None if is_model_path(cache.config.backbone) else get_spec(cache.config.backbone).family
    have = [n for n, _, _ in layer_columns(cache)]
    top = have[-1]
    return [n for n in have[:-1] if is_wide(n, family) == (name == WIDE)] + [top]


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
