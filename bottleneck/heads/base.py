"""What every head shares: the scikit-learn estimator contract, saving and loading, and cache matching."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as _SkNotFittedError

from bottleneck._io import file_hash, json_plain, seal_of, write_json_atomic
from bottleneck.cache.key import features_key, features_keys
from bottleneck.config import FEATURE_SETTINGS, ExtractConfig
from bottleneck.constraints import validate_params
from bottleneck.errors import HeadError
from bottleneck.heads.checks import check_features, check_finite, check_labels, label_kind, plain_value
from bottleneck.heads.feature_blocks import iter_blocks

HEAD_FILE = "head.json"


HEAD_FORMAT_VERSION = 1
# What reading a head's model file raises on a damaged or truncated one: NumPy's zip reader (BadZipFile, ValueError,
# EOFError), a key gone from the archive (KeyError), the file system (OSError).
READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


class NotFittedError(HeadError, _SkNotFittedError):
    """predict/predict_proba/save before fit (also an sklearn NotFittedError, so sklearn tools recognise it)."""


class Head(ClassifierMixin, BaseEstimator):
    """Base of all heads: the scikit-learn estimator contract plus saving and cache matching.

    Subclasses implement ``fit`` (setting ``classes_``, ``feature_shape_``, ``history_``), ``_proba(block)``
    (features block -> (n, n_classes) probabilities), ``_save_model(dir)`` and ``_load_model(dir, info)``.
    """

    name = ""
    model_file = ""  # the file ``_save_model`` writes beside head.json (its sha256 is recorded there)
    _fitted_attr = "classes_"  # set last by fit: its presence means the head is usable
    # {parameter: constraint} (``bottleneck.constraints``), every parameter of ``__init__`` declared once: ``fit``
    # checks them (``_validate_params``) and ``--param NAME=VALUE`` is read as the declared type.
    _parameter_constraints: dict = {}

    def _validate_params(self) -> None:
        """HeadError naming the first parameter outside its declared constraint; before any data is read."""
        validate_params(self.get_params(deep=False), self._parameter_constraints, HeadError)

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
            if label_kind(y_val) != label_kind(classes):
                raise HeadError(
                    f"y_val holds {label_kind(y_val)} labels ({plain_value(y_val[0])!r}, ...) but y holds "
                    f"{label_kind(classes)} labels ({plain_value(classes[0])!r}, ...); pass validation labels of the same "
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
        if not np.all(np.isfinite(out)):
            raise HeadError(
                f"this {self.name} head gives NaN or infinite probabilities (its weights overflowed while it was "
                "fitted); fit it again, e.g. with a lower --lr or standardised features."
            )
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
        features of another backbone setting later (``check_cache``). head.json records the sha256 of the model
        file (``files``) and is sealed (``seal``: the checksum of the rest of it), so ``load_head`` refuses an
        edited or damaged head before it reads it.
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
        info["files"] = {self.model_file: file_hash(path / self.model_file)} if self.model_file else {}
        info = json_plain(info)
        info["seal"] = seal_of(info)
        write_json_atomic(path / HEAD_FILE, info)
        self.trained_on_ = trained or None
        return path

    def _learned_json(self) -> dict:
        return {}

    def _save_model(self, path: Path) -> None:
        raise NotImplementedError

    def _load_model(self, path: Path, info: dict) -> None:
        raise NotImplementedError

    def _check_loaded(self) -> None:
        """HeadError when what ``_load_model`` read disagrees with head.json (classes, feature shape) or is not
        finite: a saved head whose files were edited or mixed up must not predict."""

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
                f"cache {cache.name} has feature shape {shape} but this {self.name} head was trained on "
                f"{self.feature_shape_} (cache {label}); evaluate it on a cache made with the same backbone "
                "settings, or fit a new head on this cache."
            )
        theirs = cache_identity(cache)
        diff = _settings_diff(mine.get("config") or {}, theirs["config"])
        if diff:
            raise HeadError(
                f"cache {cache.name} was extracted with other settings than the cache {label} this head was "
                f"trained on ({diff}); its features mean something else. Extract this data with the training "
                "settings, or fit a new head on this cache."
            )
        # The cache's per-row key in every form it has had, so heads saved before a change of form still match.
        their_keys = features_keys(cache.meta.get("key_material") or {}) | (
            {theirs["features_key"]} if theirs.get("features_key") else set()
        )
        if mine.get("features_key") and their_keys and mine["features_key"] not in their_keys:
            raise HeadError(
                f"cache {cache.name} has the same settings as the cache {label} this head was trained on, but "
                "other weights or TensorFlow/Keras/Pillow versions (its feature key differs), so its features "
                "differ. Extract this data again in the training environment, or fit a new head on this cache."
            )
        names = mine.get("class_names")
        if names and list(names) != list(cache.class_names):
            raise HeadError(
                f"cache {cache.name} has classes {list(cache.class_names)[:10]} but this head was trained on "
                f"{list(names)[:10]}; labels would be misread. Use a cache with the same class folders."
            )


def cache_identity(cache) -> dict:
    """What a saved head records about the cache it was trained on."""
    return {
        "cache_key": cache.key,
        "cache_name": cache.name,
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

    def value(d: dict, k: str):  # a config saved before a setting existed meant its default
        return d[k] if k in d else ExtractConfig.default_of(k)

    return "; ".join(
        f"{k} {value(other, k)} here, {value(trained, k)} when trained"
        for k in FEATURE_SETTINGS
        if value(trained, k) != value(other, k)
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
