"""An inspection's findings, made from a cache's features: duplicates (near ones confirmed by the images), label
errors, predictions and the map, carried as one ``Findings`` to the summary, the CSVs and the page."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bottleneck.callbacks import Progress
from bottleneck.heads.feature_blocks import iter_blocks
from bottleneck.inspection.duplicates import Pairs, exact_duplicates, normalized
from bottleneck.inspection.embedding_map import MAX_POINTS, embed_2d, sample_rows
from bottleneck.inspection.label_errors import (
    LabelIssues,
    cleanlab_filter,
    find_label_issues,
    out_of_fold_proba,
)
from bottleneck.inspection.pixel_check import near_duplicates_by_pixels
from bottleneck.inspection.rows import Rows
from bottleneck.report.sections import Predictions
from bottleneck.runs.fit import run_proba
from bottleneck.runs.folders import Run, load_run


def load_features(cache, rows: Rows, progress: Progress | None = None) -> np.ndarray:
    """Every row's features, flattened, L2-normalised, float32, (N, D) in global row order, read block by
    block (the store's own dtype is never held whole a second time)."""
    d = int(np.prod(cache.feature_shape))
    X = np.empty((len(rows), d), np.float32)
    for i, split in enumerate(rows.splits):
        start = int(rows.starts[i])
        for r, block in iter_blocks(cache.features(split)):
            X[start + r[0] : start + r[-1] + 1] = normalized(block)
            if progress:
                progress("features", start + int(r[-1]) + 1, len(rows))
    return X


class Timer:
    """Seconds per step of an inspection, each since the previous one, and the total."""

    def __init__(self):
        self.t0 = self._t = time.perf_counter()
        self.seconds: dict = {}

    def lap(self, name: str) -> None:
        self.seconds[name] = round(time.perf_counter() - self._t, 2)
        self._t = time.perf_counter()

    def total(self) -> dict:
        self.seconds["total"] = round(time.perf_counter() - self.t0, 2)
        return self.seconds


@dataclass(frozen=True)
class Findings:
    """What an inspection found, carried from step to step (summary, CSVs, page)."""

    rows: Rows
    split: str  # the split predicted
    exact: Pairs  # exact duplicates (equal content hashes)
    near: Pairs  # near duplicates (exact copies left out)
    near_rule: dict  # how near duplicates were told: by the pixels, or by the features alone (and why)
    issues: LabelIssues | None  # suspected label errors (None: not looked for)
    predictions: Predictions | None  # on ``split``: a run's head or the out-of-fold models (None: neither)
    picked: np.ndarray  # the rows on the map
    xy: np.ndarray  # (len(picked), 2) map coordinates
    method: str  # how the map was made ("tsne" | "umap" | "pca")

    def flags(self) -> np.ndarray:
        """Per row: 1 a mistake, 2 a suspected label error (or both)."""
        flags = np.zeros(len(self.rows), np.int64)
        if self.predictions is not None:
            flags[self.predictions.mistake_rows()] |= 1
        if self.issues is not None:
            flags[self.issues.rows] |= 2
        return flags

    def cross_split(self, pairs: Pairs) -> Pairs:
        return pairs.take(self.rows.split[pairs.a] != self.rows.split[pairs.b])


def duplicates_of(X, rows, cache, *, threshold, neighbours, pixel_check, source, progress, notify):
    """(exact pairs, near pairs, the near-duplicate rule): near ones confirmed by the images where they can be read."""
    exact = exact_duplicates(rows.hash) if rows.hash is not None else Pairs.empty()
    near, near_rule = near_duplicates_by_pixels(
        X, rows, exact, threshold=threshold, neighbours=neighbours, pixel_check=pixel_check, source=source,
        source_options=cache.meta.get("source_options"), resize=cache.config.resize, progress=progress,
    )  # fmt: skip
    if near_rule["rule"] == "features" and pixel_check and notify:
        notify(f"near duplicates by the features alone (cosine >= {threshold}): {near_rule['why']}.")
    return exact, near, near_rule


def predictions_of(rows, split, run, cache, oof, folds):
    sel = rows.of(split)
    if run is not None:
        run = run if isinstance(run, Run) else load_run(run)
        proba, classes, _ = run_proba(run, cache, split)
        return Predictions(rows, split, sel, proba, classes, f"{run.head.name} head of run {run.path}")
    if oof is None:
        return None
    return Predictions(
        rows, split, sel, oof[sel], np.arange(oof.shape[1]),
        f"out-of-fold logistic regression ({folds} folds over all rows: no row is scored by a model that saw it)",
    )  # fmt: skip


def find(cache, rows: Rows, split: str, *, run, source, threshold, neighbours, pixel_check, label_errors,
         label_method, folds, map_method, seed, timer: Timer, progress, notify) -> Findings:  # fmt: skip
    """Features read once and normalised, then duplicates, label errors, predictions and the map, each timed."""
    X = load_features(cache, rows, progress)
    timer.lap("features")
    exact, near, near_rule = duplicates_of(
        X, rows, cache, threshold=threshold, neighbours=neighbours, pixel_check=pixel_check, source=source,
        progress=progress, notify=notify,
    )  # fmt: skip
    timer.lap("duplicates")
    issues, oof = None, None
    if label_errors:
        if label_method == "cleanlab":
            cleanlab_filter()  # the missing extra is one line before minutes of fitting
        oof = out_of_fold_proba(X, rows.label, folds=folds, seed=seed, progress=progress)
        issues = find_label_issues(rows.label, oof, label_method)
        timer.lap("label_errors")
    predictions = predictions_of(rows, split, run, cache, oof, folds)
    timer.lap("predictions")
    picked = sample_rows(rows.label, MAX_POINTS, seed, keep=None if issues is None else issues.rows)
    xy, method = embed_2d(X[picked], map_method, seed)
    del X
    found = Findings(rows, split, exact, near, near_rule, issues, predictions, picked, xy, method)
    timer.lap("map")
    return found
