"""Which columns of a multi-layer cache's feature vector hold which layer, and layer names resolved to them: a
subset ("a,b"), "top" (the backbone's feature layer, by name), the presets "multiscale", "blocks" and "wide"."""

from __future__ import annotations

from collections.abc import Sequence

from bottleneck.backbones.layers import feature_layer_name
from bottleneck.backbones.model_file import is_model_path
from bottleneck.backbones.presets import MULTISCALE_NAME, NETWORK_SETS, TOP, WIDE, is_wide, multiscale_layers
from bottleneck.backbones.registry import get_spec
from bottleneck.config import layer_names
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

    if name not in layer_names(cache.config.layer):
        raise CacheError(
            f"cache {cache.path.name} was not extracted with layer={name!r} (its layer setting is "
            f"{cache.config.layer!r}); extract with --layer {name}, or name the layers to use."
        )
    family = None if is_model_path(cache.config.backbone) else get_spec(cache.config.backbone).family
    have = [n for n, _, _ in layer_columns(cache)]
    top = have[-1]
    return [n for n in have[:-1] if is_wide(n, family) == (name == WIDE)] + [top]
