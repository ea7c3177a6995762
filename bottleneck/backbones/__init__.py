"""Backbones: the registry of specs, the one model builder, preprocessing, layers, model files, architectures.

Importing this package reads specs only (no TensorFlow); ``build``, ``layers``, ``preprocess`` and the
architectures import Keras when they are used.
"""

from bottleneck.backbones.registry import get_spec, list_backbones, register
from bottleneck.backbones.spec import PREPROCESS_MODES, BackboneSpec

__all__ = ["PREPROCESS_MODES", "BackboneSpec", "get_spec", "list_backbones", "register"]
