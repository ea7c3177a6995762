"""Logistic regression on standardised features, C chosen on the validation split (CLIP linear-probe protocol)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bottleneck.callbacks import Progress
from bottleneck.constraints import (
    CLASS_WEIGHT,
    FRACTION,
    OPTIONAL_SEED,
    THREADS,
    Boolean,
    Interval,
    ListOf,
)
from bottleneck.errors import HeadError, first_line
from bottleneck.heads.base import READ_ERRORS, Head
from bottleneck.heads.checks import check_finite, class_weights, stratified_holdout
from bottleneck.heads.feature_blocks import to_memory

# Decades from strong to weak regularisation; on standardised features the best C of ImageNet features is
# usually 1e-3..1 (CLIP's sweep spans 1e-6..1e6, but the ends are never chosen on features scaled like ours).
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 7))
MIN_C = 1e-7
# The sweep solves in the row space of its train rows when they are at most half as many as the features and at
# most this many (``_RowSpace``): the same optimum, each lbfgs step d/n times cheaper. Above it the QR itself
# (2 d n^2 flops, two copies of the rows) costs more than it saves.
ROW_SPACE_UP_TO = 4096


class LogRegHead(Head):
    """scikit-learn ``LogisticRegression`` (lbfgs, multinomial) with C chosen on validation accuracy.

    Parameters
    ----------
    Cs : candidate inverse regularisation strengths. None: decades 1e-4..1e2 (further down to 1e-7 while
        the smallest is best), then half-decades either side of the best decade (a coarse-to-fine sweep like
        CLIP's). A list: exactly those values.
    refit : after choosing C, fit again on train + validation rows with that C.
    val_fraction : share of each class of train held out for the sweep when no validation data is passed.
    max_iter, tol : lbfgs limits per C.
    class_weight : None, "balanced" or a dict {label: weight} (labels it leaves out weigh 1).
    standardize : scale every feature to zero mean, unit variance on train (lbfgs converges far faster).
    patience : stop the sweep after this many C values in a row below the best (larger C only costs more
        iterations once accuracy falls).
    sweep_rows : the sweep fits on at most this many train rows (a stratified subset; None: all); the chosen
        C is then fitted once on all train rows, warm-started. Keeps 50k-row caches near a minute on 2 cores.
        C is kept as found, i.e. the same penalty per row-sum of the loss.
    blas_threads : BLAS threads during fitting (None: the library default). 1 avoids OpenBLAS threads
        spinning against each other and against TensorFlow's on small machines (measured 4x faster on
        2 busy cores).
    random_state : seed of the held-out part and of the sweep subset.

    Notes
    -----
    Learned: ``classes_``, ``C_``, ``coef_`` (K or 1, D), ``intercept_``, ``mean_``, ``scale_``, ``history_``
    ({"C", "val_accuracy", "val_loss"} of the sweep), ``holdout_`` (held-out train rows, or None),
    ``n_iter_`` (lbfgs iterations of the fit that gave ``coef_``).
    """

    name = "logreg"
    model_file = "logreg.npz"
    _fitted_attr = "coef_"
    _parameter_constraints = {
        "Cs": [
            None,
            ListOf(
                Interval(float, 0, None, closed="neither"),
                words="a non-empty list of positive numbers",
                example=[0.01, 0.1, 1.0],
            ),
        ],
        "refit": Boolean(),
        "val_fraction": FRACTION,
        "max_iter": Interval(int, 1, None, example=1000),
        "tol": Interval(float, 0, None, closed="neither", example=1e-4),
        "class_weight": CLASS_WEIGHT,
        "standardize": Boolean(),
        "patience": Interval(int, 1, None, example=2),
        "sweep_rows": [None, Interval(int, 1, None, example=10000)],
        "blas_threads": THREADS,
        "random_state": OPTIONAL_SEED,
    }

    def __init__(
        self,
        Cs=None,
        refit: bool = False,
        val_fraction: float = 0.1,
        max_iter: int = 1000,
        tol: float = 1e-4,
        class_weight: str | None = None,
        standardize: bool = True,
        patience: int = 2,
        sweep_rows: int | None = 10000,
        blas_threads: int | None = 1,
        random_state: int | None = 0,
    ):
        self.Cs = Cs
        self.refit = refit
        self.val_fraction = val_fraction
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.standardize = standardize
        self.patience = patience
        self.sweep_rows = sweep_rows
        self.blas_threads = blas_threads
        self.random_state = random_state

    def fit(self, X, y, X_val=None, y_val=None, progress: Progress | None = None):
        """Fit on train features X (N, ...) and labels y (N,); choose C on (X_val, y_val) or a held-out part
        of train. Test data must never be passed here: it is only for the final report.

        Steps: check the parameters, hold out validation rows, standardise, sweep C (``_Sweep``), final fit.
        """
        from threadpoolctl import threadpool_limits

        self._validate_params()  # before the thread pools are resized
        with threadpool_limits(self.blas_threads):
            return self._fit(X, y, X_val, y_val, progress)

    def _fit(self, X, y, X_val, y_val, progress):
        grid = self._check_params()
        X, yi, X_val, yvi = self._start_fit(X, y, X_val, y_val)
        seed = 0 if self.random_state is None else self.random_state
        X, yi, X_val, yvi = self._holdout(X, yi, X_val, yvi, seed)
        Xs, Xvs = self._standardize(X), self._scale(X_val)
        subset = self._sweep_subset(yi, seed)
        explicit = self.Cs is not None
        train = (Xs, yi) if subset is None else (Xs[subset], yi[subset])
        space = _RowSpace.of(train[0])
        sweep = _Sweep(
            self._classifier(grid[0], yi),
            train if space is None else (space.rows, train[1]),
            (Xvs, yvi) if space is None else (space.project(Xvs), yvi),
            progress,
            total=len(grid) + (0 if explicit else 2),
        )
        # Ascending C with warm starts: each fit starts from the previous solution, which is close.
        sweep.ascend(grid, None if explicit else self.patience)
        if not explicit:
            sweep.extend_down(min(grid), self.patience)
            sweep.refine()
        self.C_ = float(sweep.best.C)
        # the sweep's best solution back in feature space, for the final fit and the predictions
        if space is not None:
            sweep.to_features(space, Xvs)
        self.coef_, self.intercept_, self.n_iter_, final = self._final_fit(sweep, Xs, yi, Xvs, yvi, subset)
        self.history_ = sweep.sorted_history()
        self.history_["best_C"] = self.C_
        self.history_["sweep_rows"] = int(len(sweep.y))
        self.history_["sweep_dims"] = int(sweep.X.shape[1])  # the row space's when it was solved there
        self.history_.update(final)
        return self

    # --- the steps of fit ------------------------------------------------------------------------------
    def _check_params(self) -> list[float]:
        """Refuse bad hyper-parameters before any data is read (the declared constraints); the C grid to sweep."""
        self._validate_params()
        return [float(c) for c in (self.Cs if self.Cs is not None else DEFAULT_CS)]

    def _holdout(self, X, yi, X_val, yvi, seed):
        """Flat in-memory train and validation features; without validation data, a stratified part of train
        (``holdout_``) becomes the validation part."""
        X = _flat(to_memory(X))
        check_finite(X)
        self.holdout_ = None
        if X_val is None:
            tr, ho = stratified_holdout(yi, self.val_fraction, seed)
            X, X_val, yi, yvi = X[tr], X[ho], yi[tr], yi[ho]
            self.holdout_ = ho
        else:
            X_val = _flat(to_memory(X_val))
            check_finite(X_val, "X_val")
        if len(np.unique(yi)) < 2:
            raise HeadError(
                "after holding out validation rows, train has one class; pass more rows per class."
            )
        return X, yi, X_val, yvi

    def _standardize(self, X: np.ndarray) -> np.ndarray:
        """Set ``mean_`` and ``scale_`` from train; X scaled."""
        if self.standardize:
            self.mean_ = X.mean(axis=0, dtype=np.float64)
            std = X.std(axis=0, dtype=np.float64)
            self.scale_ = np.where(std > 1e-12, std, 1.0)  # constant features stay constant, not inf
        else:
            self.mean_ = np.zeros(X.shape[1])
            self.scale_ = np.ones(X.shape[1])
        return self._scale(X)

    def _sweep_subset(self, yi: np.ndarray, seed) -> np.ndarray | None:
        """The stratified train rows the sweep fits on, or None for all of them."""
        if self.sweep_rows is not None and len(yi) > self.sweep_rows:
            return stratified_holdout(yi, self.sweep_rows / len(yi), seed)[1]
        return None

    def _classifier(self, C: float, yi: np.ndarray):
        from sklearn.linear_model import LogisticRegression

        cw = self.class_weight
        if isinstance(cw, dict):
            # The classifier sees label indices, so a {label: weight} dict is re-keyed by index.
            cw = dict(enumerate(class_weights(cw, self.classes_, yi).tolist()))
        # "balanced" passes through: sklearn weighs the rows of each fit (sweep subset or all train).
        return LogisticRegression(C=C, max_iter=self.max_iter, tol=self.tol, class_weight=cw, warm_start=True)

    def _final_fit(self, sweep: _Sweep, Xs, yi, Xvs, yvi, subset):
        """(coef, intercept, n_iter, extra history) of the chosen C: the sweep's own solution, or, after a
        sweep on a subset or with ``refit``, one more fit on all train rows (plus validation with refit),
        started from the sweep's solution."""
        best, final = sweep.best, {}
        if subset is None and not self.refit:
            return best.coef, best.intercept, best.n_iter, final
        sweep.clf.C = best.C
        sweep.restore_best()
        if self.refit:
            sweep.fit(np.concatenate([Xs, Xvs]), np.concatenate([yi, yvi]))
        else:
            sweep.fit(Xs, yi)
            final["final_val_accuracy"], final["final_val_loss"] = sweep.val_scores()
        clf = sweep.clf
        return clf.coef_.copy(), clf.intercept_.copy(), int(np.max(clf.n_iter_)), final

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    def _proba(self, block: np.ndarray) -> np.ndarray:
        Xs = self._scale(_flat(block).astype(np.float64))
        return _softmax_proba(Xs.astype(np.float64) @ self.coef_.T + self.intercept_)

    def _learned_json(self) -> dict:
        return {"C": self.C_}

    def _save_model(self, path: Path) -> None:
        np.savez(
            path / self.model_file,
            coef=self.coef_,
            intercept=self.intercept_,
            mean=self.mean_,
            scale=self.scale_,
            holdout=self.holdout_ if self.holdout_ is not None else np.zeros(0, np.int64),
        )

    def _load_model(self, path: Path, info: dict) -> None:
        f = path / self.model_file
        if not f.is_file():
            raise HeadError(f"{f} is missing; the saved logreg head is incomplete. Fit it again.")
        try:
            with np.load(f, allow_pickle=False) as z:
                self.coef_, self.intercept_ = z["coef"], z["intercept"]
                self.mean_, self.scale_ = z["mean"], z["scale"]
                self.holdout_ = z["holdout"] if len(z["holdout"]) else None
        except READ_ERRORS as exc:  # damaged, truncated, an object array, a key gone (heads without digests)
            raise HeadError(
                f"{f} is damaged ({first_line(exc, with_type=True)}); fit the head again."
            ) from None
        self.C_ = float(info.get("learned", {}).get("C", np.nan))

    def _check_loaded(self) -> None:
        """Coefficients for ``classes_`` and ``feature_shape_``, all finite."""
        d, k = int(np.prod(self.feature_shape_)), len(self.classes_)
        rows = 1 if k == 2 else k
        shapes = (self.coef_.shape, self.intercept_.shape, self.mean_.shape, self.scale_.shape)
        if shapes != ((rows, d), (rows,), (d,), (d,)):
            raise HeadError(
                f"the saved logreg head's arrays have shapes {shapes}, but its head.json says {k} classes and "
                f"{d} features: the files do not belong together. Fit the head again."
            )
        if not all(np.all(np.isfinite(a)) for a in (self.coef_, self.intercept_, self.mean_, self.scale_)):
            raise HeadError("the saved logreg head has NaN or infinite coefficients; fit it again.")


class _Best(NamedTuple):
    accuracy: float
    neg_loss: float
    C: float
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int


class _Sweep:
    """One C sweep: a warm-started LogisticRegression fitted on ``train`` for one C after another, every C
    tried with its validation scores (``history``), and the best so far (higher accuracy, then lower loss)."""

    def __init__(self, clf, train, val, progress: Progress | None, total: int):
        self.clf = clf
        self.X, self.y = train
        self.X_val, self.y_val = val
        self.progress = progress
        self.total = total  # for progress; grows as the sweep extends
        self.history = {"C": [], "val_accuracy": [], "val_loss": []}
        self.best: _Best | None = None

    def fit(self, X, y) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs max_iter warnings: the sweep itself judges C
            self.clf.fit(X, y)

    def val_scores(self) -> tuple[float, float]:
        """(accuracy, log loss) of the current solution on the validation rows."""
        p = _softmax_proba(self.X_val @ self.clf.coef_.T + self.clf.intercept_)
        acc = float(np.mean(np.argmax(p, 1) == self.y_val))
        loss = float(-np.mean(np.log(np.clip(p[np.arange(len(self.y_val)), self.y_val], 1e-15, None))))
        return acc, loss

    def try_c(self, c: float) -> bool:
        """Fit with C=c from the current solution and record it; whether it beat the best."""
        self.clf.C = c
        self.fit(self.X, self.y)
        acc, loss = self.val_scores()
        self.history["C"].append(c)
        self.history["val_accuracy"].append(acc)
        self.history["val_loss"].append(loss)
        improved = self.best is None or (acc, -loss) > (self.best.accuracy, self.best.neg_loss)
        if improved:
            clf = self.clf
            self.best = _Best(
                acc, -loss, c, clf.coef_.copy(), clf.intercept_.copy(), int(np.max(clf.n_iter_))
            )
        if self.progress:
            self.progress("C sweep", len(self.history["C"]), self.total)
        return improved

    def restore_best(self) -> None:
        """Start the next fit from the best solution rather than the last one."""
        self.clf.coef_, self.clf.intercept_ = self.best.coef.copy(), self.best.intercept.copy()

    def to_features(self, space: _RowSpace, X_val: np.ndarray) -> None:
        """After a sweep in ``space``: the best solution as feature-space coefficients (a later fit starts from
        it through ``restore_best``), scored on the feature-space ``X_val`` from now on."""
        self.best = self.best._replace(coef=space.lift(self.best.coef))
        self.X_val = X_val

    def ascend(self, grid, patience: int | None) -> None:
        """Try the grid in ascending C; stop after ``patience`` C values in a row below the best (None: try
        them all)."""
        worse = 0
        for c in sorted(grid):
            worse = 0 if self.try_c(c) else worse + 1
            if patience is not None and worse >= patience:
                break

    def extend_down(self, c: float, patience: int) -> None:
        """While the smallest C tried (``c``, the grid's edge) is the best, keep going down by decades
        (CLIP's sweep reaches 1e-6) until accuracy stops improving, so the edge of the grid is never chosen."""
        worse = 0
        while self.best.C == min(self.history["C"]) and c > MIN_C and worse < patience:
            c /= 10
            self.restore_best()
            self.total += 1
            worse = 0 if self.try_c(c) else worse + 1

    def refine(self) -> None:
        """Half-decades either side of the best decade, each from the best coefficients."""
        c0 = self.best.C
        for c in (c0 / 10**0.5, c0 * 10**0.5):
            self.restore_best()
            self.try_c(c)

    def sorted_history(self) -> dict:
        order = np.argsort(self.history["C"], kind="stable")
        return {k: [v[i] for i in order] for k, v in self.history.items()}


class _RowSpace:
    """An orthonormal basis Q (d, n) of the span of n train rows X (n, d), n well under d. An L2-penalised linear
    model's optimum lies in that span (its loss gradient is a sum of rows, its penalty's is the weights), and
    W = A Q^T keeps the penalty (|W| = |A|) and the logits (X W^T = (X Q) A^T), so lbfgs on X Q (n columns)
    finds the same optimum as on X, each step d/n times cheaper. From X^T = Q R, X Q is R^T."""

    def __init__(self, rows: np.ndarray, basis: np.ndarray):
        self.rows, self.basis = rows, basis

    @classmethod
    def of(cls, X: np.ndarray) -> _RowSpace | None:
        n, d = X.shape
        if n > ROW_SPACE_UP_TO or 2 * n > d:
            return None
        q, r = np.linalg.qr(np.asarray(X, np.float32).T)  # float32: Householder QR is backward stable
        return cls(np.ascontiguousarray(r.T), q)

    def project(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, np.float32) @ self.basis

    def lift(self, coef: np.ndarray) -> np.ndarray:
        return np.asarray(coef, np.float64) @ self.basis.T.astype(np.float64)


def _flat(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1)


def _softmax_proba(logits: np.ndarray) -> np.ndarray:
    """sklearn's probabilities from decision values: sigmoid for one column (binary), softmax otherwise."""
    logits = np.asarray(logits, np.float64)
    if logits.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
