"""Runs: fitting heads on caches into run folders, and the jobs on them (evaluate, compare, predict, classify).

Names load on first use, so the CLI's start-up (which imports ``bottleneck.runs.params``) stays light.
"""

from bottleneck._lazy import lazy_names

_NAMES = {
    "Comparison": "bottleneck.runs.comparison",
    "compare": "bottleneck.runs.comparison",
    "evaluate_run": "bottleneck.runs.fit",
    "fit_head": "bottleneck.runs.fit",
    "split_metrics": "bottleneck.runs.fit",
    "Run": "bottleneck.runs.folders",
    "load_run": "bottleneck.runs.folders",
    "save_run": "bottleneck.runs.folders",
    "parse_params": "bottleneck.runs.params",
    "list_images": "bottleneck.runs.predict",
    "predict_images": "bottleneck.runs.predict",
    "classify": "bottleneck.runs.imagenet_top_k",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES, globals())
