"""Classification metrics of heads as JSON-ready dicts (numbers from scikit-learn)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from bottleneck.errors import BottleneckError


def classification_metrics(
    y_true, proba, *, classes: Sequence[int] | None = None, class_names: Sequence[str] | None = None
) -> dict:
    """Accuracy, balanced accuracy, top-5 accuracy (more than 5 classes), log loss, per-class precision /
    recall / F1 / support and the confusion matrix, as a JSON-ready dict.

    ``y_true`` (N,) integer labels; ``proba`` (N, K) probabilities whose columns are the labels ``classes``
    (default 0..K-1); ``class_names[label]`` names a label (default its number). Labels of ``y_true`` that are
    not among ``classes`` count as errors (the head cannot predict them).
    """
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(proba, np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise BottleneckError(
            f"proba has shape {p.shape} for {len(y)} labels; pass (N, n_classes) probabilities, one row per label."
        )
    if len(y) == 0:
        raise BottleneckError("no rows to evaluate; pass at least one labelled row.")
    classes = np.arange(p.shape[1]) if classes is None else np.asarray(classes, np.int64)
    if len(classes) != p.shape[1]:
        raise BottleneckError(
            f"{len(classes)} classes for {p.shape[1]} probability columns; they must match."
        )
    labels = np.union1d(classes, np.unique(y))
    if len(labels) > len(classes):  # labels the head never saw get zero-probability columns
        full = np.zeros((len(p), len(labels)))
        full[:, np.searchsorted(labels, classes)] = p
        p = full
    else:
        p = p[:, np.argsort(classes)]
    p = np.clip(p, 0.0, None)
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    pred = labels[np.argmax(p, axis=1)]

    from sklearn import metrics as skm

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # e.g. "y_pred contains classes not in y_true": expected on small splits
        out = {
            "n": int(len(y)),
            "accuracy": float(skm.accuracy_score(y, pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)),
        }
        if len(labels) > 5:
            out["top5_accuracy"] = float(skm.top_k_accuracy_score(y, p, k=5, labels=labels))
        out["log_loss"] = float(skm.log_loss(y, p, labels=labels))
        prec, rec, f1, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
        cm = skm.confusion_matrix(y, pred, labels=labels)
    names = [_name(int(label), class_names) for label in labels]
    out["per_class"] = {
        n: {"precision": float(a), "recall": float(b), "f1": float(c), "support": int(d)}
        for n, a, b, c, d in zip(names, prec, rec, f1, support, strict=True)
    }
    out["labels"] = names
    out["confusion"] = cm.tolist()
    return out


def _name(label: int, class_names) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)
