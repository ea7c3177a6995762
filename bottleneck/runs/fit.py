"""Fitting a head on a cache: train on train, select on val, report val and test metrics."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bottleneck._ownership import check_out
from bottleneck.cache.reader import as_cache
from bottleneck.callbacks import Notify, Progress
from bottleneck.constraints import SEED, check
from bottleneck.errors import HeadError
from bottleneck.heads import Head, make_head
from bottleneck.heads.feature_blocks import take_rows
from bottleneck.report import classification_metrics
from bottleneck.runs.folders import Run, cache_summary, load_run, matching_layers, save_run, unique_dir


def split_metrics(head, cache, split: str, rows: np.ndarray | None = None, X=None) -> dict:
    """Metrics of a fitted head on a split of a cache (or on ``rows`` of it), with the cache's class names."""
    X = cache.features(split) if X is None else X
    y = cache.labels(split)
    if rows is not None:
        X, y = take_rows(X, rows), y[rows]
    return classification_metrics(
        y, head.predict_proba(X), classes=head.classes_, class_names=cache.class_names
    )


def selection_summary(head) -> dict:
    h = getattr(head, "history_", {}) or {}
    if "best_C" in h:
        return {"C": h["best_C"], "C values tried": len(h["C"]), "sweep rows": h.get("sweep_rows")}
    if "best_epoch" in h:
        return {"best epoch": h["best_epoch"], "epochs run": len(h.get("loss", []))}
    return {}


def fit_head(
    cache,
    head="logreg",
    *,
    params: dict | None = None,
    seed: int = 0,
    layers=None,
    out=None,
    runs_dir="runs",
    save: bool = True,
    force: bool = False,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> Run:
    """Fit a head on a cache's ``train`` split, select on ``val``, report ``val`` and ``test`` metrics.

    ``head`` is a name (see ``bottleneck.heads.HEADS``; ``params`` are its hyper-parameters, ``seed`` its
    random_state) or an unfitted Head. The test split is only predicted after fitting: nothing about it
    reaches the head. When the cache has no val split, the head holds out a stratified part of train and
    the "val" metrics are on those rows. ``layers`` ("a,b", "top", "multiscale") fits on those layers of a
    multi-layer cache (read in place); the run then predicts with exactly those layers. With ``save``, writes ``out`` (default ``runs_dir/<cache>-<head>``,
    made unique) holding head/, metrics.json, report.md, history.png and confusion.png. An existing ``out`` is
    replaced only when bottleneck wrote all of it (``_ownership.replace_problem``; refused before fitting otherwise);
    ``force`` moves such a folder aside instead (said through ``notify``).
    """
    check("seed", seed, SEED, HeadError)  # the seed and the head's parameters before the cache is opened
    if save and out is not None:
        check_out(out, force=force)
    head = _head_of(head, params, seed)
    cache = as_cache(cache)
    if layers is not None:
        cache = cache.select(layers)
    if "train" not in cache.splits:
        raise HeadError(
            f"cache {cache.path.name} has no train split (it has {', '.join(cache.splits)}); heads fit on train."
        )
    fit_args = {}
    if "val" in cache.splits:
        fit_args = {"X_val": cache.features("val"), "y_val": cache.labels("val")}
    t0 = time.perf_counter()
    head.fit(cache.features("train"), cache.labels("train"), progress=progress, **fit_args)
    fit_seconds = time.perf_counter() - t0
    metrics, notes = _fitted_metrics(head, cache)
    summary = {
        "head": head.name,
        "path": None,
        "fit_seconds": round(fit_seconds, 3),
        "params": head.get_params(),
        "selection": selection_summary(head),
        "streamed": bool(getattr(head, "streamed_", False)),
        "cache": cache_summary(cache),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notes": notes,
        "metrics": metrics,
    }
    run = Run(None, head, summary)
    if save:
        path = (
            Path(out)
            if out is not None
            else unique_dir(Path(runs_dir) / f"{_folder_name(cache)}-{head.name}")
        )
        save_run(run, path, cache=cache, force=force, notify=notify)
    return run


def _head_of(head, params: dict | None, seed: int):
    """The unfitted head to fit: a Head as given (its parameters checked), or one made by name."""
    if isinstance(head, Head):
        if params:
            raise HeadError("pass params only with a head name; set them on the Head instance instead.")
        head._validate_params()
        return head
    params = dict(params or {})
    params.setdefault("random_state", seed)
    return make_head(head, **params)


def _fitted_metrics(head, cache) -> tuple[dict, list[str]]:
    """(metrics on val (or the train rows the head held out) and test, notes on what val means here)."""
    metrics, notes = {}, []
    if "val" in cache.splits:
        metrics["val"] = split_metrics(head, cache, "val")
        if getattr(head, "refit", False):
            notes.append("refit on train + val: val metrics are on rows the head was trained on.")
    elif getattr(head, "holdout_", None) is not None:
        metrics["val"] = split_metrics(head, cache, "train", rows=head.holdout_)
        notes.append(
            f"no val split: val metrics are on {len(head.holdout_)} train rows held out from fitting."
        )
    if "test" in cache.splits:
        metrics["test"] = split_metrics(head, cache, "test")
    return metrics, notes


def _folder_name(cache) -> str:
    """A cache's name for a run folder: a layer subset adds its layer (one) or its layer count."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return cache.path.name
    return f"{cache.path.name}-{layers[0] if len(layers) == 1 else f'{len(layers)}layers-{cache.key[:6]}'}"


def evaluate_run(run, cache, split: str = "test") -> dict:
    """Metrics of a saved run's head on a split of a cache with the same feature settings and classes.

    A fine-tuned run changed its backbone, so the cache's features no longer apply: its model scores the
    images of the cache's rows (from the cache's source), resized as the run was trained.

    Returns ``{"run", "head", "cache", "split", "metrics": {split: {...}}}``; a cache of other features or
    classes raises HeadError before anything is predicted.
    """
    run = run if isinstance(run, Run) else load_run(run)
    cache = as_cache(cache)
    proba, classes, cache = run_proba(run, cache, split)
    m = classification_metrics(cache.labels(split), proba, classes=classes, class_names=cache.class_names)
    return {
        "run": str(run.path),
        "head": run.head.name,
        "cache": str(cache.path),
        "split": split,
        "metrics": {split: m},
    }


def run_proba(run, cache, split: str = "test") -> tuple[np.ndarray, np.ndarray, object]:
    """(probabilities (N, K), the K labels of their columns, the cache as scored) of a saved run on ``split``
    of ``cache``: its head on the cached features, or a fine-tuned run's model on the images of those rows.
    HeadError for a cache of other features or classes, before anything is predicted."""
    run = run if isinstance(run, Run) else load_run(run)
    cache = as_cache(cache)
    if run.summary.get("kind") == "fine-tune":
        return _image_proba(run, cache, split), np.asarray(run.head.classes_), cache
    cache = matching_layers(
        cache, ((getattr(run.head, "trained_on_", None) or {}).get("config") or {}).get("layer")
    )
    run.head.check_cache(cache)
    return run.head.predict_proba(cache.features(split)), np.asarray(run.head.classes_), cache


def _image_proba(run, cache, split: str) -> np.ndarray:
    from bottleneck.tuning.images import open_cache_images  # a later stage, composed lazily (ARCHITECTURE.md)

    names = list(run.summary["cache"]["class_names"])
    if list(cache.class_names) != names:
        raise HeadError(
            f"cache {cache.path.name} has classes {list(cache.class_names)[:10]} but this fine-tuned model was "
            f"trained on {names[:10]}; labels would be misread. Use a cache with the same class folders."
        )
    cache._check(split)
    head = run.head
    with open_cache_images(cache, size=head.image_size, resize=head.resize) as images:
        n = images.n(split)
        return np.concatenate(
            [head.predict_proba(images.pixels(split, np.arange(a, min(a + 64, n)))) for a in range(0, n, 64)]
        )
