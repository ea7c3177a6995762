"""Lazy public names for a package: listed in ``__all__`` and ``dir()``, imported on first use.

Keeps ``import bottleneck`` (and the CLI's cache-hit path) free of TensorFlow, scikit-learn and matplotlib.
"""

from __future__ import annotations

import importlib


def lazy_names(package: str, names: dict[str, str], namespace: dict):
    """(__getattr__, __dir__) for a package whose public ``names`` map to the modules that define them."""

    def __getattr__(name):
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value  # later lookups skip __getattr__
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted({*namespace, *names})

    return __getattr__, __dir__
