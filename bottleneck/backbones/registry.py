"""Backbone registry: name -> frozen spec (constructor, preprocessing, input size, feature layer, shape).

Importing this module must never import TensorFlow: the cache-hit path reads specs only.
"""

from __future__ import annotations

import fnmatch

from bottleneck.backbones.spec import PREPROCESS_MODES, BackboneSpec
from bottleneck.errors import BackboneError, suggest

_REGISTRY: dict[str, BackboneSpec] = {}
_LOADED = False


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} registered twice")
    if spec.preprocess not in PREPROCESS_MODES:
        raise ValueError(f"backbone {spec.name!r}: preprocess {spec.preprocess!r} not in {PREPROCESS_MODES}")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> BackboneSpec:
    """The spec of a registered backbone; a BackboneError with close names when unknown."""
    _load_all()
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise BackboneError(
            f"unknown backbone {name!r}.{suggest(key, _REGISTRY)} "
            f"Run `bottleneck backbones` to list the {len(_REGISTRY)} available ones, "
            "or pass a path to a .keras/.h5 model file."
        )
    return _REGISTRY[key]


def list_backbones(pattern: str = "*") -> list[BackboneSpec]:
    """Registered specs whose name matches a shell-style pattern, sorted by name."""
    _load_all()
    return [s for n, s in sorted(_REGISTRY.items()) if fnmatch.fnmatch(n, pattern)]


def _load_all() -> None:
    # The tables only declare specs; registering them here (once) keeps imports one way: registry -> tables.
    global _LOADED
    if _LOADED:
        return
    from bottleneck.backbones import keras_apps, offline

    for spec in (*keras_apps.SPECS, *offline.SPECS):
        register(spec)
    _LOADED = True
