"""Inspection of a cache from its features: exact and near duplicates, cross-split leaks, likely label errors
and a 2-D map (``inspect_cache`` writes them as CSVs, a JSON summary and one offline page).

Submodules: ``rows`` (a cache's rows across splits), ``duplicates`` (exact, near and candidate pairs, block-wise),
``pixels`` (candidate pairs confirmed by their images), ``label_errors`` (out-of-fold logistic regression, the
estimated number of wrong labels, or cleanlab), ``embedding_map`` (UMAP or PCA), ``job``.
"""

from bottleneck.inspection.duplicates import DEFAULT_THRESHOLD, Pairs, exact_duplicates, near_duplicates
from bottleneck.inspection.job import Inspection, inspect_cache

__all__ = ["DEFAULT_THRESHOLD", "Inspection", "Pairs", "exact_duplicates", "inspect_cache", "near_duplicates"]
