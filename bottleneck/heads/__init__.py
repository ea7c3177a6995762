"""Heads: small classifiers fitted on cached features, all with one scikit-learn-style API.

``make_head("logreg" | "linear" | "mlp" | "sigmoid" | "pool-dense", **params)`` builds one; every head has
``fit(X, y, X_val=None, y_val=None, progress=None)``, ``predict``, ``predict_proba``, ``save(path, cache=)``,
and ``load_head(path)`` reads it back. X may be a cache's on-disk array: heads read it in blocks. Labels y
may be integers (a cache's class indices) or strings; ``classes_`` holds them sorted and ``predict`` returns
them. Fitting is seeded by ``random_state`` alone and leaves the process's global random state untouched.
"""

from __future__ import annotations

from bottleneck.heads.base import Head, NotFittedError, cache_identity
from bottleneck.heads.keras_heads import KerasHead, LinearHead, MLPHead, PoolDenseHead, SigmoidHead
from bottleneck.heads.logreg import LogRegHead
from bottleneck.heads.registry import (
    HEADS,
    canonical_name,
    head_constraints,
    head_params,
    make_head,
    unknown_parameter,
)
from bottleneck.heads.saved import load_head

__all__ = [
    "HEADS",
    "Head",
    "KerasHead",
    "LinearHead",
    "LogRegHead",
    "MLPHead",
    "NotFittedError",
    "PoolDenseHead",
    "SigmoidHead",
    "cache_identity",
    "canonical_name",
    "head_constraints",
    "head_params",
    "load_head",
    "make_head",
    "unknown_parameter",
]
