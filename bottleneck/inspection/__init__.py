"""Inspection of a cache from its features: exact and near duplicates, cross-split leaks, likely label errors
and a 2-D map (``inspect_cache`` writes them as CSVs, a JSON summary and one offline page).

Submodules: ``rows`` (a cache's rows across splits), ``duplicates`` (exact, near and candidate pairs, block-wise),
``pixel_check`` (candidate pairs confirmed by their images), ``label_errors`` (out-of-fold logistic regression, the
estimated number of wrong labels, or cleanlab), ``embedding_map`` (t-SNE, UMAP or PCA), ``job``, ``similar`` (nearest
images of a query).
"""

from bottleneck._lazy import lazy_names

# Names load on first use (the CLI's start-up stays light).
_NAMES = {
    "DEFAULT_THRESHOLD": "bottleneck.inspection.duplicates",
    "Pairs": "bottleneck.inspection.duplicates",
    "exact_duplicates": "bottleneck.inspection.duplicates",
    "near_duplicates": "bottleneck.inspection.duplicates",
    "Inspection": "bottleneck.inspection.job",
    "inspect_cache": "bottleneck.inspection.job",
    "find_similar": "bottleneck.inspection.similar",
    "write_run_page": "bottleneck.inspection.run_page",
    "write_compare_page": "bottleneck.inspection.run_page",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES, globals())
