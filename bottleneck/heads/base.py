"""What every head shares: input checks, label encoding, block-wise reading, save/load and cache matching."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as _SkNotFittedError

from bottleneck._io import read_json, write_json_atomic
from bottleneck.cache.key import features_key, features_keys
from bottleneck.callbacks import Progress  # noqa: F401  (re-exported for the heads)
from bottleneck.config import FEATURE_SETTINGS
from bottleneck.errors import HeadError

HEAD_FILE = "head.json"
HEAD_FORMAT_VERSION = 1

# Blocks read from a store at a time when a whole split is not loaded: big enough to amortise chunk
# decompression, small enough to stay far below RAM.
BLOCK_BYTES = 64 << 20


class NotFittedError(HeadError, _SkNotFittedError):
    """predict/predict_proba/save before fit (also an sklearn NotFittedError, so sklearn tools recognise it)."""


class FeatureTypeError(HeadError, TypeError):
    """Features that are not numbers (an object array holding strings or dicts). Also a TypeError, the type
    NumPy and scikit-learn raise for them, so code that catches that keeps working."""


def available_memory() -> int:
    """Bytes of RAM available now (Linux MemAvailable), or 2 GiB when that cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


def nbytes(X) -> int:
    return int(np.prod(X.shape)) * np.dtype(X.dtype).itemsize


def to_memory(X) -> np.ndarray:
    """The whole array in RAM (reads a zarr / h5 / memmap array-like once)."""
    if isinstance(X, np.ndarray) and not isinstance(X, np.memmap):
        return X
    return np.asarray(X[:])


def block_rows_for(X, block_bytes: int = BLOCK_BYTES) -> int:
    row_bytes = max(1, nbytes(X) // max(1, int(X.shape[0])))
    rows = max(1, block_bytes // row_bytes)
    chunks = getattr(X, "chunks", None)
    if chunks and chunks[0]:
        # Whole stored chunks: a block that cuts a chunk would decompress it twice.
        rows = max(int(chunks[0]), rows // int(chunks[0]) * int(chunks[0]))
    return int(rows)


def iter_blocks(
    X, rows: np.ndarray | None = None, block_rows: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (row indices, features of those rows) in stored order, reading contiguous slabs.

    ``rows`` (sorted, unique) restricts to a subset; each slab read spans at most ``block_rows`` selected rows.
    """
    n = int(X.shape[0])
    block_rows = block_rows or block_rows_for(X)
    if rows is None:
        for a in range(0, n, block_rows):
            b = min(n, a + block_rows)
            yield np.arange(a, b), np.asarray(X[a:b])
        return
    for i in range(0, len(rows), block_rows):
        sel = rows[i : i + block_rows]
        lo, hi = int(sel[0]), int(sel[-1]) + 1
        yield sel, np.asarray(X[lo:hi])[sel - lo]


def take_rows(X, rows: np.ndarray) -> np.ndarray:
    """The features of ``rows`` (sorted, unique) of an array-like, read in contiguous slabs."""
    return np.concatenate([b for _, b in iter_blocks(X, np.asarray(rows))])


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
            f"{name} holds {target} values such as {_plain(y[0])!r}; Unknown label type: {target}. Labels must be "
            "classes, integers or strings; bin a regression target into classes first."
        )
    return y


def _plain(v):
    """A NumPy scalar as the Python value, so messages show 0.5 or 'cat', not np.float64(0.5)."""
    return v.item() if isinstance(v, np.generic) else v


def _label_kind(labels: np.ndarray) -> str:
    # check_labels lets an object array through only when it holds strings (type_of_target calls an object
    # array of numbers "unknown").
    return "string" if labels.dtype.kind in "USO" else "number"


def check_class_weight(class_weight) -> None:
    """None, "balanced", or a dict {label: weight} of non-negative numbers; HeadError otherwise."""
    if class_weight is None or (isinstance(class_weight, str) and class_weight == "balanced"):
        return
    if isinstance(class_weight, dict) and all(
        isinstance(w, int | float | np.number) and not isinstance(w, bool) and np.isfinite(w) and w >= 0
        for w in class_weight.values()
    ):
        return
    raise HeadError(
        f"class_weight {class_weight!r} is not allowed; use None, 'balanced' or a dict {{label: weight}} of "
        "non-negative numbers."
    )


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


class Head(ClassifierMixin, BaseEstimator):
    """Base of all heads: the scikit-learn estimator contract plus saving and cache matching.

    Subclasses implement ``fit`` (setting ``classes_``, ``feature_shape_``, ``history_``), ``_proba(block)``
    (features block -> (n, n_classes) probabilities), ``_save_model(dir)`` and ``_load_model(dir, info)``.
    """

    name = ""
    _fitted_attr = "classes_"  # set last by fit: its presence means the head is usable

    # --- fitting helpers -------------------------------------------------------------------------------
    def _start_fit(self, X, y, X_val=None, y_val=None):
        """Validate the training inputs; set classes_, feature_shape_; return (X, y_index, X_val, yv_index)."""
        # Forget an earlier fit first, so a fit that fails half-way leaves an unfitted head, not a mixed one.
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)
        X = check_features(X)
        y = check_labels(y, int(X.shape[0]))
        classes = np.unique(y)
        if len(classes) < 2:
            raise HeadError(
                f"y has a single class ({classes[0]}): rows of one class cannot train a classifier; pass rows "
                "of at least 2 classes."
            )
        self.classes_ = classes
        self.feature_shape_ = tuple(int(d) for d in X.shape[1:])
        self.n_features_in_ = int(np.prod(self.feature_shape_))
        yi = np.searchsorted(classes, y)
        if (X_val is None) != (y_val is None):
            raise HeadError("pass both X_val and y_val, or neither (then part of train is held out).")
        yvi = None
        if X_val is not None:
            X_val = check_features(X_val, "X_val")
            self._check_shape(X_val, "X_val")
            y_val = check_labels(y_val, int(X_val.shape[0]), "y_val")
            if _label_kind(y_val) != _label_kind(classes):
                raise HeadError(
                    f"y_val holds {_label_kind(y_val)} labels ({_plain(y_val[0])!r}, ...) but y holds "
                    f"{_label_kind(classes)} labels ({_plain(classes[0])!r}, ...); pass validation labels of the same "
                    "kind as the training labels."
                )
            unknown = np.setdiff1d(np.unique(y_val), classes)
            if len(unknown):
                raise HeadError(
                    f"y_val has class(es) {unknown.tolist()} that do not occur in y; every validation class "
                    "needs training rows."
                )
            yvi = np.searchsorted(classes, y_val)
        return X, yi, X_val, yvi

    def _check_shape(self, X, name="X"):
        shape = tuple(int(d) for d in X.shape[1:])
        if shape != self.feature_shape_:
            where = ""
            trained = getattr(self, "trained_on_", None) or {}
            if trained.get("cache_key"):
                where = f" from cache {trained.get('cache_name') or trained['cache_key'][:8]}"
            count = ""
            n = int(np.prod(shape))
            if n != self.n_features_in_:
                # Also scikit-learn's wording, which its estimator checks look for.
                count = (
                    f" ({name} has {n} features, but {type(self).__name__} is expecting {self.n_features_in_} "
                    "features as input)"
                )
            raise HeadError(
                f"{name} has feature shape {shape} but this {self.name} head was trained on {self.feature_shape_}"
                f"{where}{count}; pass features made with the same backbone, layer, image size and pooling."
            )

    def __sklearn_is_fitted__(self) -> bool:
        # sklearn's check_is_fitted would otherwise accept any attribute ending in "_".
        return hasattr(self, self._fitted_attr)

    def _check_fitted(self):
        if not hasattr(self, self._fitted_attr):
            raise NotFittedError(
                f"this {self.name} head is not fitted yet; call fit(X, y) first, or load a saved one with load_head."
            )

    # --- prediction ------------------------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, n_classes), float64; columns follow ``classes_``. X may be any array-like
        (a zarr/h5/memmap split is read block by block)."""
        self._check_fitted()
        X = check_features(X)
        self._check_shape(X)
        out = np.empty((int(X.shape[0]), len(self.classes_)), np.float64)
        for rows, block in iter_blocks(X):
            check_finite(block)
            out[rows] = self._proba(block)
        return out

    def predict(self, X) -> np.ndarray:
        """Predicted labels (N,), values from ``classes_``."""
        proba = self.predict_proba(X)  # checks fitted before classes_ is touched
        return self.classes_[np.argmax(proba, axis=1)]

    def _proba(self, block: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # --- saving ----------------------------------------------------------------------------------------
    def save(self, path, *, cache=None) -> Path:
        """Save to a folder (no pickle): ``head.json`` plus ``model.keras`` or ``logreg.npz``.

        With ``cache`` (a Cache), records its key, feature key and class names so the head can refuse
        features of another backbone setting later (``check_cache``).
        """
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        trained = dict(getattr(self, "trained_on_", None) or {})
        if cache is not None:
            trained = cache_identity(cache)
        if self.classes_.dtype.kind == "S":
            raise HeadError(
                f"classes {self.classes_[:5].tolist()} are bytes, which head.json cannot hold; fit with str labels "
                "(y.astype(str)) to save this head."
            )
        info = {
            "format_version": HEAD_FORMAT_VERSION,
            "head": self.name,
            "params": _json_params(self.get_params()),
            "classes": self.classes_.tolist(),
            "feature_shape": list(self.feature_shape_),
            "history": getattr(self, "history_", {}),
            "trained_on": trained or None,
            "learned": self._learned_json(),
        }
        self._save_model(path)
        write_json_atomic(path / HEAD_FILE, info)
        self.trained_on_ = trained or None
        return path

    def _learned_json(self) -> dict:
        return {}

    def _save_model(self, path: Path) -> None:
        raise NotImplementedError

    def _load_model(self, path: Path, info: dict) -> None:
        raise NotImplementedError

    # --- cache matching --------------------------------------------------------------------------------
    def check_cache(self, cache) -> None:
        """Refuse a cache whose features or classes differ from those this head was trained on.

        Caches of other images made with the same backbone settings are accepted (same feature key).
        """
        self._check_fitted()
        shape = tuple(int(d) for d in cache.feature_shape)
        mine = getattr(self, "trained_on_", None) or {}
        label = mine.get("cache_name") or (mine.get("cache_key") or "?")[:8]
        if shape != self.feature_shape_:
            raise HeadError(
                f"cache {cache.path.name} has feature shape {shape} but this {self.name} head was trained on "
                f"{self.feature_shape_} (cache {label}); evaluate it on a cache made with the same backbone "
                "settings, or fit a new head on this cache."
            )
        theirs = cache_identity(cache)
        diff = _settings_diff(mine.get("config") or {}, theirs["config"])
        if diff:
            raise HeadError(
                f"cache {cache.path.name} was extracted with other settings than the cache {label} this head was "
                f"trained on ({diff}); its features mean something else. Extract this data with the training "
                "settings, or fit a new head on this cache."
            )
        # The cache's per-row key in every form it has had, so heads saved before a change of form still match.
        their_keys = features_keys(cache.meta.get("key_material") or {}) | (
            {theirs["features_key"]} if theirs.get("features_key") else set()
        )
        if mine.get("features_key") and their_keys and mine["features_key"] not in their_keys:
            raise HeadError(
                f"cache {cache.path.name} has the same settings as the cache {label} this head was trained on, but "
                "other weights or TensorFlow/Keras/Pillow versions (its feature key differs), so its features "
                "differ. Extract this data again in the training environment, or fit a new head on this cache."
            )
        names = mine.get("class_names")
        if names and list(names) != list(cache.class_names):
            raise HeadError(
                f"cache {cache.path.name} has classes {list(cache.class_names)[:10]} but this head was trained on "
                f"{list(names)[:10]}; labels would be misread. Use a cache with the same class folders."
            )


def cache_identity(cache) -> dict:
    """What a saved head records about the cache it was trained on."""
    return {
        "cache_key": cache.key,
        "cache_name": cache.path.name,
        "cache_path": str(cache.path),
        "features_key": _current_features_key(cache),
        "class_names": list(cache.class_names),
        "feature_shape": [int(d) for d in cache.feature_shape],
        "config": cache.config.to_dict(),
    }


def _current_features_key(cache) -> str | None:
    material = cache.meta.get("key_material") or {}
    return features_key(material) if "config" in material else cache.meta.get("features_key")


def _settings_diff(trained: dict, other: dict) -> str:
    """'pooling max here, avg when trained' for every feature setting that differs ('' when none do)."""
    if not trained:
        return ""  # a head saved without its cache: only the feature shape can be checked
    return "; ".join(
        f"{k} {other.get(k)} here, {trained.get(k)} when trained"
        for k in FEATURE_SETTINGS
        if trained.get(k) != other.get(k)
    )


# head.json key of a dict parameter saved as [key, value] pairs (JSON object keys can only be strings).
DICT_ITEMS = "dict_items"


def _json_params(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, dict):
            # JSON object keys are strings: a {label: weight} dict is kept as pairs so integer labels stay
            # integers (_params_from_json turns it back).
            v = {DICT_ITEMS: [[_json_scalar(a), _json_scalar(b)] for a, b in v.items()]}
        out[k] = v
    return out


def _json_scalar(v):
    return v.item() if isinstance(v, np.generic) else v


def _params_from_json(params: dict) -> dict:
    return {
        k: {a: b for a, b in v[DICT_ITEMS]} if isinstance(v, dict) and list(v) == [DICT_ITEMS] else v
        for k, v in params.items()
    }


def load_head(path) -> Head:
    """Load a head saved with ``Head.save`` (a folder with head.json); HeadError when missing or foreign."""
    from bottleneck.heads import HEADS

    path = Path(path)
    info_file = path / HEAD_FILE
    info = read_json(
        info_file,
        HeadError,
        missing=f"no saved head at {path} (no {HEAD_FILE}); pass the head/ folder of a `fit-head` run.",
        redo="fit the head again.",
    )
    if info.get("format_version") != HEAD_FORMAT_VERSION or info.get("head") not in HEADS:
        raise HeadError(
            f"{info_file} is head format {info.get('format_version')!r} of head {info.get('head')!r}; this "
            f"bottleneck reads format {HEAD_FORMAT_VERSION} of {', '.join(HEADS)}. Fit the head again."
        )
    head = HEADS[info["head"]](**_params_from_json(info["params"]))
    head.classes_ = _classes_from_json(info["classes"])
    head.feature_shape_ = tuple(info["feature_shape"])
    head.n_features_in_ = int(np.prod(head.feature_shape_))
    head.history_ = info.get("history") or {}
    head.trained_on_ = info.get("trained_on")
    head._load_model(path, info)
    return head


def _classes_from_json(values: list) -> np.ndarray:
    """classes_ as saved in head.json: integers come back int64 (a cache's labels), strings as a str array,
    whole-valued float labels as float64."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values)
