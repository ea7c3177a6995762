"""Backbone registry: name -> frozen spec (constructor, preprocessing, input size, feature layer, shape).

Importing this module must never import TensorFlow: the cache-hit path reads specs only.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from bottleneck.errors import BackboneError, suggest

PREPROCESS_MODES = ("caffe", "torch", "tf", "127", "none")


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # registry name, lower_snake_case
    constructor: (
        str  # "module:callable" resolved lazily; called as f(include_top=False, weights=..., input_shape=...)
    )
    preprocess: str  # one of PREPROCESS_MODES: how 0..255 RGB pixels become model input
    input_size: int  # default square input side in pixels
    feature_dim: int  # channels of the default feature layer (= pooled feature length)
    feature_hw: tuple[int, int]  # spatial size of the default feature map at input_size
    params: int  # parameter count of the headless network (for `bottleneck backbones`)
    family: str  # e.g. "vgg", "resnet", "efficientnet"
    feature_layer: str | None = None  # None: the output of the headless network
    min_size: int = 32  # smallest input side the architecture accepts
    weights: str = (
        "keras"  # where "imagenet" weights come from: "keras" (download) | "package:<dist>" | "file"
    )
    top_constructor: str | None = (
        None  # "module:callable" for the full classifier (for `classify`); None = constructor
    )

    def feature_shape(self, pooling: str = "avg") -> tuple[int, ...]:
        """Per-image feature shape at the default input size."""
        if pooling == "none":
            return (*self.feature_hw, self.feature_dim)
        return (self.feature_dim,)


_REGISTRY: dict[str, BackboneSpec] = {}


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
    # Registry entries live in modules of their own; importing them registers their specs.
    from bottleneck import registry_keras, registry_offline  # noqa: F401
