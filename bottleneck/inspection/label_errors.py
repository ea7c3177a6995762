"""Likely label errors: out-of-fold logistic-regression probabilities, the images least likely under their own
label, as many as the estimated number of wrong labels (or cleanlab's find_label_issues)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bottleneck.callbacks import Progress
from bottleneck.errors import BottleneckError, install_hint, one_of
from bottleneck.heads import LogRegHead

EXTRA = install_hint("inspect")
# How many labels are wrong: "estimate" (estimated_error_counts, the default) or "cleanlab" (its find_label_issues).
METHODS = ("estimate", "cleanlab")
QUANTILES = (
    0.25,
    0.5,
)  # of the reference, where each share of wrong labels is estimated (estimated_error_counts)
MIN_REFERENCE = 5  # images a class needs to serve as the reference of the labels wrongly given to its images


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


def estimated_error_counts(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """(K,) float: for each class, the estimated number of its images whose recorded label is wrong.

    Out-of-fold probabilities do not depend on an image's own label, so an image of class j labelled i gets from
    the model the probability p_i that the images labelled j get. The images labelled i whose likeliest other
    class is j are therefore a mixture of right ones and of wrong ones distributed like the images labelled j
    (the reference); mixture proportion estimation (Scott, Blanchard & Handy 2013) counts the wrong ones: with m
    the q-quantile of p_i over the reference, count_ij = #{labelled i, likeliest other j, p_i <= m} /
    P(reference: likeliest other than i is j, p_i <= m). Each ratio over-counts by the right images below m,
    fewer at lower q but with a noisier ratio: the smaller of q = 1/4 and 1/2 is kept. Per source class j, so
    wrong labels from one look-alike class are counted as well as wrong labels spread over all classes; classes
    with fewer than ``MIN_REFERENCE`` images serve as no reference.
    """
    y = np.asarray(y, np.int64)
    proba = np.asarray(proba, np.float64)
    n, k = proba.shape
    sizes = np.bincount(y, minlength=k)
    if k < 2 or n == 0:
        return np.zeros(k)
    classes = np.arange(k)
    top = np.argsort(-proba, axis=1, kind="stable")[:, :2]
    top1, top2 = top[:, 0], top[:, 1]
    other = np.where(top1 == y, top2, top1)  # each image's likeliest class other than its label
    best = np.full((k, k), np.inf)  # [given label i, source class j]
    for q in QUANTILES:
        m = np.full((k, k), -np.inf)
        share = np.zeros((k, k))
        for j in np.flatnonzero(sizes >= MIN_REFERENCE):
            ref = y == j
            pj = proba[ref]  # (n_j, K): the reference of every pair (i, j) at once
            m[:, j] = np.quantile(pj, q, axis=0)
            t1, t2 = top1[ref], top2[ref]
            # j is the likeliest class other than i when j comes first, or i first and j second.
            src = (t1 == j)[:, None] | ((t1[:, None] == classes[None, :]) & (t2 == j)[:, None])
            share[:, j] = np.mean((pj <= m[:, j][None, :]) & src, axis=0)
        below = np.zeros((k, k))
        hit = proba[np.arange(n), y] <= m[y, other]
        np.add.at(below, (y[hit], other[hit]), 1.0)
        best = np.minimum(best, np.where(share > 0, below / np.where(share > 0, share, 1.0), np.inf))
    best[~np.isfinite(best)] = 0.0
    np.fill_diagonal(best, 0.0)
    return np.minimum(best.sum(axis=1), sizes)


def find_label_issues(y: np.ndarray, proba: np.ndarray, method: str = "estimate") -> LabelIssues:
    """Rows whose recorded label looks wrong, ranked by self-confidence (lowest probability of the recorded label
    first), each with the label the model prefers among the others.

    ``method="estimate"``: the ``round(sum(estimated_error_counts))`` rows of lowest self-confidence.
    ``method="cleanlab"``: the rows cleanlab's ``find_label_issues`` (confident learning) flags; it needs the
    ``inspect`` extra and counts the model's own confusions between look-alike classes as label errors too
    (more flagged: lower precision, and higher recall where wrong labels come from look-alike classes).
    """
    if method not in METHODS:
        raise one_of("label_method", method, METHODS)
    y = np.asarray(y, np.int64)
    proba = np.asarray(proba, np.float64)
    self_conf = proba[np.arange(len(y)), y]
    if method == "estimate":
        rows = np.argsort(self_conf, kind="stable")[: int(round(estimated_error_counts(y, proba).sum()))]
    else:
        rows = _cleanlab_rows(y, proba)
    others = proba[rows].copy()
    others[np.arange(len(rows)), y[rows]] = -1.0
    return LabelIssues(rows.astype(np.int64), np.argmax(others, axis=1), self_conf[rows].astype(np.float32))


def _cleanlab_rows(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    filt = cleanlab_filter()
    present = np.flatnonzero(np.bincount(y, minlength=proba.shape[1]) > 0)
    # cleanlab wants labels 0..K'-1 with every class present: squeeze out labels no row has.
    remap = np.full(proba.shape[1], -1)
    remap[present] = np.arange(len(present))
    p = proba[:, present]
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = filt.find_label_issues(remap[y], p, return_indices_ranked_by="self_confidence")
    return np.asarray(rows, np.int64)


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
            f"label_method='cleanlab' needs cleanlab: {EXTRA}, or use label_method='estimate' (the default)."
        ) from None
    return filt
