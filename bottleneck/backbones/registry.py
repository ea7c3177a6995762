"""Backbone registry: name -> frozen spec (constructor, preprocessing, input size, feature layer, shape).

Importing this module must never import TensorFlow: the cache-hit path reads specs only.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from bottleneck.backbones import keras_apps, offline
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
            f"or pass a path to a .keras/.h5 model file.{_local_model_hint(name)}"
        )
    return _REGISTRY[key]


def _local_model_hint(name: str) -> str:
    # A bare name is always a registry name (is_model_path), even when a file or folder of that name is here:
    # say how to use that one instead, since it is most likely what the user meant.
    path = Path(name)
    if not name or len(path.parts) != 1 or not path.exists():
        return ""
    kind = "folder" if path.is_dir() else "file"
    return f" A {kind} {name!r} is in the working directory: to use it as the model, pass ./{name}."


def list_backbones(pattern: str = "*") -> list[BackboneSpec]:
    """Registered specs whose name matches a shell-style pattern, sorted by name."""
    _load_all()
    return [s for n, s in sorted(_REGISTRY.items()) if fnmatch.fnmatch(n, pattern)]


def _load_all() -> None:
    # The tables only declare specs; registering them here (once) keeps imports one way: registry -> tables.
    global _LOADED
    if _LOADED:
        return

    for spec in (*keras_apps.SPECS, *offline.SPECS):
        register(spec)
    _LOADED = True
