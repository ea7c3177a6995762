"""Input checks of heads: features, labels, class weights, finiteness, and the stratified held-out part."""

from __future__ import annotations

import numpy as np

from bottleneck.callbacks import Progress  # noqa: F401  (re-exported for the heads)
from bottleneck.errors import HeadError


class FeatureTypeError(HeadError, TypeError):
    """Features that are not numbers (an object array holding strings or dicts). Also a TypeError, the type
    NumPy and scikit-learn raise for them, so code that catches that keeps working."""


def check_features(X, name: str = "X"):
    """X must look like an array of numbers, one feature row per image, (N, D) or (N, H, W, C).

    Lists, tuples and other sequences become NumPy arrays; stored arrays (zarr / h5 / memmap) stay where they
    are and are read in blocks later. An in-memory integer or object array becomes float64, as scikit-learn
    would make it.
    """
    if _is_sparse(X):
        raise HeadError(
            f"{name} is a sparse matrix ({type(X).__name__}); sparse input is not supported, heads need dense "
            "feature rows. Pass X.toarray()."
        )
    if not (hasattr(X, "shape") and hasattr(X, "dtype") and hasattr(X, "__getitem__")):
        X = np.asarray(X)
    shape = tuple(X.shape)
    if len(shape) < 2:
        raise HeadError(
            f"{name} has shape {shape}; features must be 2-D or more, one row per image: (N, D) or (N, H, W, C). "
            "Reshape your data: pass cache.features(split), or X[None] for a single row."
        )
    if shape[0] == 0:
        raise HeadError(f"{name} has no rows (shape {shape}); pass at least one feature row.")
    if 0 in shape[1:]:
        # sklearn's wording, which its estimator checks look for.
        raise HeadError(
            f"{name} has 0 feature(s) (shape={shape}) while a minimum of 1 is required; pass at least one "
            "feature per row."
        )
    kind = np.dtype(X.dtype).kind
    if kind == "c":
        raise HeadError(
            f"{name} has dtype {X.dtype}; Complex data not supported, features must be real numbers. "
            "Pass X.real if the imaginary parts are zero."
        )
    if kind == "O":
        try:
            return np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise FeatureTypeError(
                f"{name} has dtype object and holds something that is not a number ({exc}); features must be "
                "numbers. Pass a float array, e.g. cache.features(split)."
            ) from None
    if kind not in "fiub":
        raise HeadError(
            f"{name} has dtype {X.dtype}; features must be numbers (float32 or float16 from a cache). "
            "Pass the features, not file names or labels."
        )
    if kind != "f" and isinstance(X, np.ndarray) and not isinstance(X, np.memmap):
        X = X.astype(np.float64)  # exact for integers up to 2**53; stored arrays are converted block by block
    return X


def _is_sparse(X) -> bool:
    # scipy comes with scikit-learn; import it only when X is not a plain array anyway.
    if isinstance(X, np.ndarray) or not hasattr(X, "tocsr"):
        return False
    from scipy import sparse

    return sparse.issparse(X)


def check_labels(y, n: int, name: str = "y") -> np.ndarray:
    """y as one class label per row: integers (returned as int64, like a cache's labels), strings, or
    floats with whole values; whatever scikit-learn classifiers accept. HeadError otherwise."""
    from sklearn.utils.multiclass import type_of_target

    if y is None:
        # sklearn's wording, which its estimator checks look for.
        raise HeadError(
            f"this head requires y to be passed, but the target {name} is None; pass one label per feature row, "
            "e.g. cache.labels(split)."
        )
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise HeadError(
            f"{name} has shape {y.shape} but there are {n} feature rows; pass one label per row, shape ({n},)."
        )
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        # Before type_of_target, whose cast of NaN to int would warn.
        bad = int(len(y) - np.isfinite(y).sum())
        raise HeadError(
            f"{name} contains {bad} NaN or infinite label(s); labels must be classes, integers or strings. "
            "Drop the unlabelled rows."
        )
    try:
        target = type_of_target(y, input_name=name)
        np.unique(y)  # labels must sort: a mix of strings and numbers does not
    except (TypeError, ValueError) as exc:
        raise HeadError(
            f"{name} cannot be read as class labels ({exc}); pass integers or strings, one kind for all rows."
        ) from None
    if target not in ("binary", "multiclass"):
        # "Unknown label type" is scikit-learn's wording, which its checks and users search for.
        raise HeadError(
            f"{name} holds {target} values such as {plain_value(y[0])!r}; Unknown label type: {target}. Labels must be "
            "classes, integers or strings; bin a regression target into classes first."
        )
    return y


def plain_value(v):
    """A NumPy scalar as the Python value, so messages show 0.5 or 'cat', not np.float64(0.5)."""
    return v.item() if isinstance(v, np.generic) else v


def label_kind(labels: np.ndarray) -> str:
    # check_labels lets an object array through only when it holds strings (type_of_target calls an object
    # array of numbers "unknown").
    return "string" if labels.dtype.kind in "USO" else "number"


def class_weights(class_weight, classes: np.ndarray, y_index: np.ndarray) -> np.ndarray | None:
    """The weight of each class, in ``classes`` order, or None for unweighted. "balanced": rows / (classes *
    rows of the class) over ``y_index`` (label indices), as scikit-learn; a dict: its weight per label, and 1
    for labels it leaves out (also scikit-learn's rule)."""
    if class_weight is None:
        return None
    k = len(classes)
    if isinstance(class_weight, str):
        counts = np.bincount(y_index, minlength=k)
        return len(y_index) / (k * np.maximum(1, counts))
    index = {c: i for i, c in enumerate(classes.tolist())}
    weights = np.ones(k)
    unknown = []
    for label, w in class_weight.items():
        i = index.get(label.item() if isinstance(label, np.generic) else label)
        if i is None:
            unknown.append(label)
        else:
            weights[i] = float(w)
    if unknown:
        raise HeadError(
            f"class_weight has label(s) {unknown[:10]} that do not occur in y (classes "
            f"{classes[:10].tolist()}); key the weights by the training labels."
        )
    return weights


def check_finite(block: np.ndarray, name: str = "X") -> None:
    if not np.isfinite(block).all():
        bad = int(np.size(block) - np.isfinite(block).sum())
        raise HeadError(
            f"{name} contains {bad} NaN or infinite value(s); features must be finite. "
            "Re-extract the cache (`bottleneck cache verify` finds damaged chunks) or drop those rows."
        )


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows), sorted, holding out ``fraction`` of each class (at least one row of a
    class with two or more rows), so a train split without a validation split still gets a fair one."""
    if not 0.0 < fraction < 1.0:
        raise HeadError(f"val_fraction {fraction} must be between 0 and 1 (exclusive); e.g. 0.1.")
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        held.append(rng.permutation(idx)[:k])
    held = np.sort(np.concatenate(held)) if held else np.array([], np.int64)
    if len(held) == 0:
        raise HeadError("too few rows per class to hold out a validation part; pass a validation split.")
    mask = np.ones(len(y), bool)
    mask[held] = False
    return np.flatnonzero(mask), held
