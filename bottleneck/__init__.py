"""bottleneck: cache frozen-backbone image features once, then train and compare small heads in seconds."""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# TensorFlow's C++ start-up chatter (device probing, "no CUDA" on CPU machines) drowns progress output;
# real failures still surface as Python exceptions. setdefault: a user's own setting wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bottleneck import _quiet_tf  # noqa: E402

_quiet_tf.install()

# Public API is imported lazily so `import bottleneck` (and the cache-hit path) never imports TensorFlow.
_LAZY = {
    "extract": "bottleneck.extraction",
    "open_cache": "bottleneck.cache",
    "ExtractConfig": "bottleneck.config",
    "list_backbones": "bottleneck.backbones",
    "get_spec": "bottleneck.backbones",
    "open_source": "bottleneck.data",
    "BottleneckError": "bottleneck.errors",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bottleneck' has no attribute {name!r}")


__all__ = sorted(_LAZY)
