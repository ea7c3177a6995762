"""Logistic regression on standardised features, C chosen on the validation split (CLIP linear-probe protocol)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from bottleneck.errors import HeadError
from bottleneck.heads.base import (
    Head,
    Progress,
    check_finite,
    stratified_holdout,
    to_memory,
)

# Decades from strong to weak regularisation; on standardised features the best C of ImageNet features is
# usually 1e-3..1 (CLIP's sweep spans 1e-6..1e6, but the ends are never chosen on features scaled like ours).
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 7))
MIN_C = 1e-7


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
    class_weight : None or "balanced".
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

    Learned: ``classes_``, ``C_``, ``coef_`` (K or 1, D), ``intercept_``, ``mean_``, ``scale_``, ``history_``
    ({"C", "val_accuracy", "val_loss"} of the sweep), ``holdout_`` (held-out train rows, or None).
    """

    name = "logreg"
    _fitted_attr = "coef_"

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
        of train. Test data must never be passed here: it is only for the final report."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.blas_threads):
            return self._fit(X, y, X_val, y_val, progress)

    def _fit(self, X, y, X_val, y_val, progress):
        from sklearn.linear_model import LogisticRegression

        if self.class_weight not in (None, "balanced"):
            raise HeadError(f"class_weight {self.class_weight!r} is not allowed; use None or 'balanced'.")
        X, yi, X_val, yvi = self._start_fit(X, y, X_val, y_val)
        X = _flat(to_memory(X))
        check_finite(X)
        self.holdout_ = None
        seed = 0 if self.random_state is None else self.random_state
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

        if self.standardize:
            self.mean_ = X.mean(axis=0, dtype=np.float64)
            std = X.std(axis=0, dtype=np.float64)
            self.scale_ = np.where(std > 1e-12, std, 1.0)  # constant features stay constant, not inf
        else:
            self.mean_ = np.zeros(X.shape[1])
            self.scale_ = np.ones(X.shape[1])
        Xs, Xvs = self._scale(X), self._scale(X_val)

        explicit = self.Cs is not None
        grid = [float(c) for c in (self.Cs if explicit else DEFAULT_CS)]
        if not grid or any(not c > 0 for c in grid):
            raise HeadError(f"Cs {self.Cs!r} must be positive numbers, e.g. [0.01, 0.1, 1].")
        clf = LogisticRegression(
            C=grid[0], max_iter=self.max_iter, tol=self.tol, class_weight=self.class_weight, warm_start=True
        )
        if self.sweep_rows is not None and self.sweep_rows < 1:
            raise HeadError(f"sweep_rows {self.sweep_rows!r} must be a positive integer or None.")
        subset = None
        if self.sweep_rows is not None and len(yi) > self.sweep_rows:
            _, subset = stratified_holdout(yi, self.sweep_rows / len(yi), seed)
        Xsw, ysw = (Xs, yi) if subset is None else (Xs[subset], yi[subset])
        history = {"C": [], "val_accuracy": [], "val_loss": []}
        best = None  # (accuracy, -loss, C, coef, intercept)

        def fit_quietly(Xf, yf):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # lbfgs max_iter warnings: the sweep itself judges C
                clf.fit(Xf, yf)

        def val_scores():
            p = _softmax_proba(Xvs @ clf.coef_.T + clf.intercept_)
            acc = float(np.mean(np.argmax(p, 1) == yvi))
            loss = float(-np.mean(np.log(np.clip(p[np.arange(len(yvi)), yvi], 1e-15, None))))
            return acc, loss

        def try_c(c):
            nonlocal best
            clf.C = c
            fit_quietly(Xsw, ysw)
            acc, loss = val_scores()
            history["C"].append(c)
            history["val_accuracy"].append(acc)
            history["val_loss"].append(loss)
            score = (acc, -loss)
            improved = best is None or score > best[:2]
            if improved:
                best = (acc, -loss, c, clf.coef_.copy(), clf.intercept_.copy())
            if progress:
                progress("C sweep", len(history["C"]), total)
            return improved

        # Ascending C with warm starts: each fit starts from the previous solution, which is close.
        total = len(grid) + (0 if explicit else 2)
        worse = 0
        for c in sorted(grid):
            worse = 0 if try_c(c) else worse + 1
            if worse >= self.patience and not explicit:
                break
        if not explicit:
            # The best C at the strong-regularisation end of the grid: keep going down by decades (CLIP's
            # sweep reaches 1e-6) until accuracy stops improving, so the edge of the grid is never chosen.
            c, worse = min(grid), 0
            while best[2] == min(history["C"]) and c > MIN_C and worse < self.patience:
                c /= 10
                clf.coef_, clf.intercept_ = best[3].copy(), best[4].copy()
                total += 1
                worse = 0 if try_c(c) else worse + 1
            c0 = best[2]
            # Half-decade refinement either side of the best decade; restart from the best coefficients.
            for c in (c0 / 10**0.5, c0 * 10**0.5):
                clf.coef_, clf.intercept_ = best[3].copy(), best[4].copy()
                try_c(c)
        self.C_ = float(best[2])
        coef, intercept = best[3], best[4]
        final = {}
        if subset is not None or self.refit:
            # The chosen C on all train rows (plus val with refit), starting from the sweep's solution.
            clf.C = self.C_
            clf.coef_, clf.intercept_ = coef.copy(), intercept.copy()
            if self.refit:
                fit_quietly(np.concatenate([Xs, Xvs]), np.concatenate([yi, yvi]))
            else:
                fit_quietly(Xs, yi)
                final["final_val_accuracy"], final["final_val_loss"] = val_scores()
            coef, intercept = clf.coef_.copy(), clf.intercept_.copy()
        self.coef_, self.intercept_ = coef, intercept
        order = np.argsort(history["C"], kind="stable")
        self.history_ = {k: [v[i] for i in order] for k, v in history.items()}
        self.history_["best_C"] = self.C_
        self.history_["sweep_rows"] = int(len(ysw))
        self.history_.update(final)
        return self

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    def _proba(self, block: np.ndarray) -> np.ndarray:
        Xs = self._scale(_flat(block).astype(np.float64))
        return _softmax_proba(Xs.astype(np.float64) @ self.coef_.T + self.intercept_)

    def _learned_json(self) -> dict:
        return {"C": self.C_}

    def _save_model(self, path: Path) -> None:
        np.savez(
            path / "logreg.npz",
            coef=self.coef_,
            intercept=self.intercept_,
            mean=self.mean_,
            scale=self.scale_,
            holdout=self.holdout_ if self.holdout_ is not None else np.zeros(0, np.int64),
        )

    def _load_model(self, path: Path, info: dict) -> None:
        f = path / "logreg.npz"
        if not f.is_file():
            raise HeadError(f"{f} is missing; the saved logreg head is incomplete. Fit it again.")
        with np.load(f, allow_pickle=False) as z:
            self.coef_, self.intercept_ = z["coef"], z["intercept"]
            self.mean_, self.scale_ = z["mean"], z["scale"]
            self.holdout_ = z["holdout"] if len(z["holdout"]) else None
        self.C_ = float(info.get("learned", {}).get("C", np.nan))


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
