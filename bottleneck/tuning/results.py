"""What a fine-tuned run reports: its metrics on val and test (from cached activations, checked against the
whole model, or from images), and the summary that becomes its metrics.json."""

from __future__ import annotations

import time

import numpy as np

from bottleneck.heads.feature_blocks import take_rows
from bottleneck.report import classification_metrics
from bottleneck.tuning import views as cached

KIND = "fine-tune"
CHECK_ROWS = 16  # test rows on which the whole model is compared with the cached-activation scores


def evaluate(prep, images, cache, settings, progress) -> tuple[dict, dict]:
    """Metrics of val (or the held-out train rows) and test of a trained ``fine_tune.Prepared``: from the cached
    activations in cached mode (checked against the whole model on images of CHECK_ROWS test rows), else from
    images through the whole model."""
    from bottleneck.tuning.batches import ImageBatches, ImageData

    out, evaluation = {}, {}
    plan = [("val", prep.val_split, prep.val_rows)] + (
        [("test", "test", None)] if "test" in cache.splits else []
    )
    for name, split, rows in plan:
        rows = np.arange(cache.n(split)) if rows is None else rows
        if prep.cached:
            data = cached.CachedEval(prep.prefix.features(split), prep.yi[split], rows, settings.batch_size)
            predict = prep.trainer._forward
        else:
            data = ImageData(
                ImageBatches(images, split, prep.yi[split], settings.batch_size, rows=rows, shuffle=False)
            )
            predict = prep.assembled.model.predict_on_batch
        proba = np.concatenate([np.asarray(predict(x), np.float64) for x, _, _ in data.batches()])
        out[name] = classification_metrics(
            cache.labels(split)[rows], proba, classes=prep.assembled.classes, class_names=cache.class_names
        )
        if progress:
            progress("evaluate", len(out), len(plan))
    if prep.cached:
        split = "test" if "test" in cache.splits else prep.val_split
        pool = np.arange(cache.n(split)) if split != prep.val_split else prep.val_rows
        pick = np.sort(
            np.random.default_rng(settings.seed).choice(pool, min(CHECK_ROWS, len(pool)), replace=False)
        )

        whole = np.asarray(prep.assembled.model.predict_on_batch(images.pixels(split, pick)), np.float64)
        part = np.asarray(
            prep.trainer._forward(take_rows(prep.prefix.features(split), pick).astype(np.float32))
        )
        evaluation = {
            "on": f"cached activations of {prep.cut.tensor_layer} (float16)",
            "whole_model_difference": float(np.abs(whole - part).max()),
            "checked_rows": int(len(pick)),
        }
    else:
        evaluation = {"on": "images through the whole model"}
    return out, evaluation


def summarise(run, cache, images, prep, settings, outcome, metrics, evaluation, t0) -> dict:
    """The run's metrics.json: the recipe, the selection, timings, and the frozen head's metrics beside the new."""
    history = dict(outcome.history)
    history["best_epoch"] = outcome.best_epoch
    history["start_val_loss"] = outcome.start["val_loss"]
    history["start_val_accuracy"] = outcome.start["val_accuracy"]
    trainable = int(sum(int(np.prod(v.shape)) for g in prep.groups for v in g))
    notes = list(outcome.notes)
    if prep.val_split == "train":
        notes.append(
            f"no val split: selection and early stopping on {len(prep.val_rows)} held-out train rows."
        )
    return {
        "kind": KIND,
        "head": run.head.name,
        "path": None,
        "start_run": str(run.path) if run.path else None,
        "fit_seconds": round(float(sum(outcome.history["seconds"])), 3),
        "seconds": round(time.perf_counter() - t0, 3),
        "params": settings.recipe(),
        "selection": {
            "best epoch": outcome.best_epoch,
            "epochs run": len(outcome.history["loss"]),
            "kept start": outcome.best_epoch == 0,
            # the kept epoch's logits are divided by this (fitted on val, folded into the head); 1: the start
            "temperature": outcome.temperature,
            "rule": "calibrated val loss below the start's by more than one standard error, val accuracy not lower",
            "start": outcome.start,
            "stopped early after": outcome.stopped_early,
            "resumed after": outcome.resumed_from,
        },
        "unfrozen": {
            "description": prep.cut.description,
            "layers": len(prep.cut.trainable),
            "first": prep.cut.trainable[0] if prep.cut.trainable else None,
            "trainable_parameters": trainable,
            "depth_groups": len([g for g in prep.groups if g]),
        },
        "mode": "cached activations" if prep.cached else "whole network",
        "start_check": prep.start,
        "prefix_cache": None if prep.prefix is None else str(prep.prefix.path),
        "views": {
            "k": settings.views,
            "augment": ",".join(settings.augment) or None,
            "caches": [str(v.path) for v in prep.views],
            **prep.view_timing,
        }
        if settings.views
        else None,
        "epoch_seconds": list(outcome.history["seconds"]),
        "evaluation": evaluation,
        "image_size": prep.assembled.image_size,
        "classes": prep.assembled.classes.tolist(),
        "class_names": prep.assembled.class_names,
        "cache": run.summary["cache"],
        "source": images.source.manifest.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notes": notes,
        "history": history,
        "frozen_metrics": run.summary.get("metrics", {}),
        "metrics": metrics,
    }
