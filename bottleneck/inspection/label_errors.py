"""Likely label errors: out-of-fold logistic-regression probabilities ranked by cleanlab's find_label_issues."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bottleneck.callbacks import Progress
from bottleneck.errors import BottleneckError, install_hint

EXTRA = install_hint("inspect")


@dataclass
class LabelIssues:
    """Rows whose label looks wrong, most suspicious first: ``rows`` (M,) global rows, ``suggested`` (M,) the
    label the out-of-fold model prefers, ``score`` (M,) the probability it gives the recorded label."""

    rows: np.ndarray
    suggested: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def out_of_fold_proba(
    X: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0, progress: Progress | None = None
) -> np.ndarray:
    """(N, K) probabilities of the K = max(y)+1 labels for each row of ``X`` (N, D), from a ``LogRegHead``
    fitted on the other folds (stratified ``folds``-fold): no row is scored by a model that saw it.

    C is swept (on validation rows held out of train) in the first fold and kept for the others.
    """
    from sklearn.model_selection import StratifiedKFold

    from bottleneck.heads import LogRegHead

    y = np.asarray(y, np.int64)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise BottleneckError(f"folds={folds!r} is not allowed; pass an integer >= 2, e.g. 5.")
    counts = np.bincount(y)
    present = counts[counts > 0]
    if len(present) < 2:
        raise BottleneckError("label errors need at least 2 classes with images; this cache has fewer.")
    k = int(min(folds, present.min())) if present.min() >= 2 else folds
    proba = np.zeros((len(y), len(counts)))
    C = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has only n members": tiny classes, expected
        splits = list(StratifiedKFold(max(2, k), shuffle=True, random_state=seed).split(X, y))
    for f, (train, held) in enumerate(splits):
        head = LogRegHead(random_state=seed, Cs=None if C is None else [C])
        head.fit(X[train], y[train])
        C = head.C_
        proba[np.ix_(held, np.asarray(head.classes_, np.int64))] = head.predict_proba(X[held])
        if progress:
            progress("out-of-fold fits", f + 1, len(splits))
    return proba


def find_label_issues(y: np.ndarray, proba: np.ndarray) -> LabelIssues:
    """Rows cleanlab's ``find_label_issues`` (confident learning) flags, ranked by self-confidence (lowest
    probability of the recorded label first). Needs the ``inspect`` extra (cleanlab)."""
    filt = cleanlab_filter()
    y = np.asarray(y, np.int64)
    proba = np.asarray(proba, np.float64)
    present = np.flatnonzero(np.bincount(y, minlength=proba.shape[1]) > 0)
    # cleanlab wants labels 0..K'-1 with every class present: squeeze out labels no row has.
    remap = np.full(proba.shape[1], -1)
    remap[present] = np.arange(len(present))
    p = proba[:, present]
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = filt.find_label_issues(remap[y], p, return_indices_ranked_by="self_confidence")
    rows = np.asarray(rows, np.int64)
    return LabelIssues(rows, np.argmax(proba[rows], axis=1), proba[rows, y[rows]].astype(np.float32))


def lowest_confidence(y: np.ndarray, proba: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` rows whose recorded label gets the lowest probability: the simplest baseline."""
    y = np.asarray(y, np.int64)
    return np.argsort(np.asarray(proba)[np.arange(len(y)), y], kind="stable")[:count]


def cleanlab_filter():
    """``cleanlab.filter``, or one line naming the extra that installs it."""
    try:
        with warnings.catch_warnings():
            # pandas (imported by cleanlab) mistakes this package for the numerics library of the same name.
            warnings.simplefilter("ignore")
            from cleanlab import filter as filt
    except ImportError:
        raise BottleneckError(
            f"finding label errors needs cleanlab: {EXTRA}, or turn label errors off (--no-label-errors)."
        ) from None
    return filt
