"""Heads: small classifiers fitted on cached features, all with one scikit-learn-style API.

``make_head("logreg" | "linear" | "mlp" | "sigmoid" | "pool-dense", **params)`` builds one; every head has
``fit(X, y, X_val=None, y_val=None, progress=None)``, ``predict``, ``predict_proba``, ``save(path, cache=)``,
and ``load_head(path)`` reads it back. X may be a cache's on-disk array: heads read it in blocks. Labels y
may be integers (a cache's class indices) or strings; ``classes_`` holds them sorted and ``predict`` returns
them. Fitting is seeded by ``random_state`` alone and leaves the process's global random state untouched.
"""

from bottleneck._lazy import lazy_names

# Names load on first use: the CLI reads the heads' declarations without importing scikit-learn at start-up.
_NAMES = {
    "Head": "bottleneck.heads.base",
    "NotFittedError": "bottleneck.heads.base",
    "cache_identity": "bottleneck.heads.base",
    "KerasHead": "bottleneck.heads.keras_heads",
    "LinearHead": "bottleneck.heads.keras_heads",
    "MLPHead": "bottleneck.heads.keras_heads",
    "PoolDenseHead": "bottleneck.heads.keras_heads",
    "SigmoidHead": "bottleneck.heads.keras_heads",
    "LogRegHead": "bottleneck.heads.logreg",
    "HEADS": "bottleneck.heads.registry",
    "canonical_name": "bottleneck.heads.registry",
    "head_constraints": "bottleneck.heads.registry",
    "head_params": "bottleneck.heads.registry",
    "make_head": "bottleneck.heads.registry",
    "unknown_parameter": "bottleneck.heads.registry",
    "load_head": "bottleneck.heads.saved",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES, globals())
