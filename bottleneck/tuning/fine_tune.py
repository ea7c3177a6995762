"""Fine-tuning a run: its backbone and trained head as one model, the top blocks unfrozen, trained on images.

The recipe of the classic tutorials: start from the head trained on the cached features (a random head's
large gradients would wreck the pretrained weights), SGD with momentum 0.9 at a low learning rate, early
stopping on validation loss with the best weights restored, BatchNorm kept in inference mode.

When only the top of the network trains and nothing is augmented, everything below the cut is a fixed
function of the image: its output is computed once into a normal keyed cache (``pooling="none"``, float16)
and the top trains from there ("prefix cache"), several times faster per epoch than running the whole network.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.callbacks import Notify, Progress
from bottleneck.errors import CacheError, TuneError, one_of

OPTIMIZERS = ("sgd", "adam")
PREFIX_CACHE = ("auto", "off")
MODEL_FILE = "model.keras"
KIND = "fine-tune"
# Cached float16 activations against the network's own, relative to their scale: float16 rounding (2**-11) and
# an ONNX engine's differences pass, activations float16 cannot represent do not.
PREFIX_TOLERANCE = 1e-2


def fine_tune(
    run,
    *,
    unfreeze=1,
    unfreeze_from: str | None = None,
    optimizer: str = "sgd",
    lr: float = 1e-4,
    momentum: float = 0.9,
    epochs: int = 10,
    batch_size: int = 32,
    patience: int = 3,
    class_weight=None,
    seed: int = 0,
    augment=None,
    source=None,
    prefix_cache: str = "auto",
    cache_dir=None,
    val_fraction: float = 0.1,
    workers: int | None = None,
    out=None,
    runs_dir="runs",
    save: bool = True,
    progress: Progress | None = None,
    notify: Notify | None = None,
):
    """Fine-tune a frozen-head run (a folder of `fit-head`, or a Run) and return the new Run.

    ``unfreeze``: the top N blocks of the backbone (block names are known per family), or "all";
    ``unfreeze_from``: a layer name, trained with every layer after it (any model). ``augment``: names from
    ``AUGMENTATIONS`` ("flip,crop"), applied to training batches only. ``source``: where the cache's images are
    now, if they moved. ``prefix_cache``: "auto" trains the unfrozen top from cached activations of the cut
    whenever that is exact (no augmentation, one tensor crossing the cut), "off" always runs the whole
    network. Writes a run folder (``model.keras``, ``metrics.json`` with the frozen head's metrics beside the
    fine-tuned ones, ``report.md``, ``history.png``, ``confusion.png``) unless ``save`` is False.
    """
    from bottleneck.backbones.blocks import apply_cut, plan_cut
    from bottleneck.runs.folders import Run, load_run
    from bottleneck.tuning.assemble import assemble, check_start
    from bottleneck.tuning.images import _augment_names, augmentation, open_cache_images

    _check(optimizer, lr, momentum, epochs, batch_size, patience, prefix_cache)
    augment_names = _augment_names(augment)
    run = run if isinstance(run, Run) else load_run(run)
    if run.summary.get("kind") == KIND:
        raise TuneError(
            f"run {run.path} is already fine-tuned; fine-tune the frozen-head run it started from "
            f"({run.summary.get('start_run')}) with other settings instead."
        )
    cache = _open_run_cache(run)
    notify = notify or (lambda line: None)
    _tf.configure_threads()
    keras = _tf.keras()
    t0 = time.perf_counter()
    with open_cache_images(
        cache, source=source, workers=workers or _tf.cpu_count(), progress=progress
    ) as images:
        assembled = assemble(run)
        start = check_start(assembled, run, cache, images, seed=seed)
        notify(
            f"rebuilt {assembled.config.backbone} + {run.head.name} head: max difference {start['difference']:.2g} "
            f"from the run's predictions on {start['rows']} cached {start['split']} rows"
        )
        cut = plan_cut(
            assembled.base,
            assembled.family,
            unfreeze=None if unfreeze_from else unfreeze,
            unfreeze_from=unfreeze_from,
        )
        _set_trainable(assembled, cut, apply_cut)
        trainable = int(sum(int(np.prod(w.shape)) for w in assembled.model.trainable_weights))
        classes = assembled.classes
        yi = {s: _label_index(classes, cache.labels(s), s) for s in cache.splits}
        if "train" not in cache.splits:
            raise TuneError(f"cache {cache.path.name} has no train split; fine-tuning trains on train.")
        train_rows, val_split, val_rows = _validation(cache, yi, val_fraction, seed)
        weights = _class_weights(class_weight, classes, yi["train"][train_rows])
        use_prefix = prefix_cache == "auto" and not augment_names and cut.tensor_layer is not None
        prefix = None
        if use_prefix:
            prefix = _prefix_cache(cache, cut, images, cache_dir, progress, notify)
            difference = _prefix_difference(assembled, cut, images, prefix, seed)
            if difference > PREFIX_TOLERANCE:
                notify(
                    f"the cached activations of {cut.tensor_layer} differ from the network's by {difference:.2g} of "
                    "their scale (float16 cannot hold them); training the whole network instead"
                )
                use_prefix, prefix = False, None
        if use_prefix:
            model = _suffix_model(assembled, cut)
            x_train = _array(prefix, "train")
            x_val = x_train if val_split == "train" else _array(prefix, val_split)
        else:
            model = assembled.model
        _compile(keras, model, optimizer, lr, momentum)
        train, val = _batches(
            use_prefix,
            images,
            prefix and (x_train, x_val),
            yi,
            train_rows,
            val_split,
            val_rows,
            batch_size,
            seed,
            augmentation(augment_names, seed),
            weights,
        )
        timer = _EpochTimer.make()
        callbacks = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
            timer,
        ]
        if progress:
            from bottleneck.heads.keras_heads import _ProgressCallback

            callbacks.append(_ProgressCallback(progress, epochs))
        t_fit = time.perf_counter()
        hist = model.fit(
            train, validation_data=val, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False
        )
        fit_seconds = time.perf_counter() - t_fit
        history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        losses = history.get("val_loss", [])
        history["best_epoch"] = int(np.argmin(losses)) + 1 if losses else 0
        metrics = _evaluate(assembled, images, cache, yi, val_split, val_rows, batch_size, progress)
    summary = {
        "kind": KIND,
        "head": run.head.name,
        "path": None,
        "start_run": str(run.path) if run.path else None,
        "fit_seconds": round(fit_seconds, 3),
        "seconds": round(time.perf_counter() - t0, 3),
        "params": {
            "unfreeze": unfreeze_from and f"from {unfreeze_from}" or unfreeze,
            "optimizer": optimizer,
            "lr": lr,
            **({"momentum": momentum} if optimizer == "sgd" else {}),
            "epochs": epochs,
            "batch_size": batch_size,
            "patience": patience,
            "class_weight": class_weight,
            "seed": seed,
            "augment": ",".join(augment_names) or None,
        },
        "selection": {"best epoch": history["best_epoch"], "epochs run": len(losses)},
        "unfrozen": {
            "description": cut.description,
            "layers": len(cut.trainable),
            "first": cut.trainable[0] if cut.trainable else None,
            "trainable_parameters": trainable,
        },
        "start_check": start,
        "prefix_cache": None if prefix is None else str(prefix.path),
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
        "image_size": assembled.image_size,
        "classes": classes.tolist(),
        "class_names": assembled.class_names,
        "cache": run.summary["cache"],
        "source": images.source.manifest.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notes": []
        if val_split != "train"
        else [f"no val split: early stopping on {len(val_rows)} held-out train rows."],
        "history": history,
        "frozen_metrics": run.summary.get("metrics", {}),
        "metrics": metrics,
    }
    from bottleneck.runs.whole import WholeModel

    result = Run(None, WholeModel(assembled.model, summary), summary)
    if save:
        from bottleneck.runs.folders import unique_dir

        path = (
            Path(out)
            if out is not None
            else unique_dir(Path(runs_dir) / f"{Path(str(run.path)).name}-fine-tuned")
        )
        save_fine_tuned(result, path)
    return result


def save_fine_tuned(run, path) -> Path:
    """Write a fine-tuned run folder: model.keras (atomically), metrics.json, report.md and plots."""
    from bottleneck._io import replace_atomic, temp_path
    from bottleneck.runs.folders import write_reports

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    run.path = path
    run.summary["path"] = str(path)
    tmp = temp_path(path / MODEL_FILE, suffix=".keras")
    run.head.model.save(tmp)
    replace_atomic(tmp, path / MODEL_FILE)
    write_reports(run, f"fine-tuned {run.summary['head']} on {run.summary['cache']['name']}")
    return path


def _check(optimizer, lr, momentum, epochs, batch_size, patience, prefix_cache) -> None:
    if optimizer not in OPTIMIZERS:
        raise one_of("optimizer", optimizer, OPTIMIZERS)
    if prefix_cache not in PREFIX_CACHE:
        raise one_of("prefix_cache", prefix_cache, PREFIX_CACHE)
    if not (isinstance(lr, int | float) and lr > 0):
        raise TuneError(f"lr={lr!r} must be a positive number, e.g. lr=1e-4.")
    if not (isinstance(momentum, int | float) and 0 <= momentum < 1):
        raise TuneError(f"momentum={momentum!r} must be in [0, 1), e.g. momentum=0.9.")
    for name, v, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("patience", patience, 0)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
            raise TuneError(f"{name}={v!r} must be an integer of at least {low}.")


def _open_run_cache(run):
    from bottleneck.runs.folders import run_cache

    path = (run.summary.get("cache") or {}).get("path")
    try:
        return run_cache(run.summary)
    except CacheError as exc:
        raise TuneError(
            f"the cache {path} of run {run.path} cannot be opened ({exc}); fine-tuning checks its start against "
            "the cached rows. Extract the source again with the same settings (a hit if it exists elsewhere)."
        ) from None


def _set_trainable(assembled, cut, apply_cut) -> None:
    """The cut's layers of the backbone and the whole head train; preprocessing and fixed layers do not."""
    assembled.model.trainable = True
    for lyr in assembled.features.layers:
        if lyr is not assembled.base:
            lyr.trainable = False
    apply_cut(assembled.base, cut)
    assembled.head.trainable = True
    for lyr in assembled.head.layers:
        if lyr.name == "head_two_class":
            lyr.trainable = False


def _label_index(classes: np.ndarray, labels: np.ndarray, split: str) -> np.ndarray:
    yi = np.searchsorted(classes, labels)
    yi = np.clip(yi, 0, len(classes) - 1)
    bad = classes[yi] != labels
    if bad.any():
        raise TuneError(
            f"the {split} split has labels {sorted(set(labels[bad].tolist()))[:10]} that the head was not trained "
            "on; fine-tune a head fitted on this cache."
        )
    return yi


def _validation(cache, yi, val_fraction, seed):
    """(train rows, split early stopping watches, its rows): val, or a stratified part of train."""
    from bottleneck.heads.checks import stratified_holdout

    n = cache.n("train")
    if "val" in cache.splits:
        return np.arange(n), "val", np.arange(cache.n("val"))
    try:
        rows, held = stratified_holdout(yi["train"], val_fraction, seed)
    except Exception as exc:
        raise TuneError(str(exc)) from None
    return rows, "train", held


def _class_weights(class_weight, classes, yi):
    from bottleneck.heads.checks import check_class_weight, class_weights

    try:
        check_class_weight(class_weight)
        return class_weights(class_weight, classes, yi)
    except Exception as exc:
        raise TuneError(str(exc)) from None


def _compile(keras, model, optimizer: str, lr: float, momentum: float) -> None:
    opt = keras.optimizers.SGD(lr, momentum=momentum) if optimizer == "sgd" else keras.optimizers.Adam(lr)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _batches(
    use_prefix, images, arrays, yi, train_rows, val_split, val_rows, batch_size, seed, augment, weights
):
    """(train, val) Keras datasets: of cached activations, or of images decoded from the source."""
    if use_prefix:
        from bottleneck.heads.streaming import ArrayBatches

        x_train, x_val = arrays
        train = ArrayBatches(
            x_train, yi["train"], train_rows, batch_size, shuffle=True, seed=seed, class_weights=weights
        )
        val = ArrayBatches(x_val, yi[val_split], val_rows, batch_size, shuffle=False, class_weights=weights)
        return train, val
    from bottleneck.tuning.batches import ImageBatches

    train = ImageBatches(
        images,
        "train",
        yi["train"],
        batch_size,
        rows=train_rows,
        shuffle=True,
        seed=seed,
        augment=augment,
        class_weights=weights,
    )
    val = ImageBatches(
        images, val_split, yi[val_split], batch_size, rows=val_rows, shuffle=False, class_weights=weights
    )
    return train, val


def _array(cache, split):
    """A prefix cache split in RAM when it fits in half the free memory (true per-row shuffles), else on disk."""
    from bottleneck.heads.feature_blocks import available_memory, nbytes, to_memory

    x = cache.features(split)
    return to_memory(x) if nbytes(x) < available_memory() // 2 else x


def _prefix_cache(cache, cut, images, cache_dir, progress, notify):
    """The activations of the cut tensor for every row, as a keyed float16 cache (a hit when it exists)."""
    from bottleneck.inference.runner import extract

    config = cache.config.replace(layer=cut.tensor_layer, pooling="none", dtype="float16")
    options = dict(cache.meta.get("source_options") or {})
    options.pop("max_image_pixels", None)
    notify(f"caching the activations of {cut.tensor_layer} (below the unfrozen blocks) once")
    result = extract(
        images.source.manifest.source,
        config,
        cache_dir=cache_dir or cache.path.parent,
        progress=progress,
        notify=notify,
        **options,
    )
    prefix = result.cache
    for split in cache.splits:
        if prefix.n(split) != cache.n(split) or not np.array_equal(prefix.ids(split), cache.ids(split)):
            raise TuneError(
                f"the activations cache {prefix.path.name} does not have the rows of cache {cache.path.name} "
                f"({split}); the source changed. Pass prefix_cache='off', or extract again."
            )
    return prefix


def _prefix_difference(assembled, cut, images, prefix, seed: int, rows: int = 16) -> float:
    """Max |cached - computed| activation on a sample of train rows, relative to the computed scale: float16
    cannot hold activations far below its smallest normal number (random-weight networks) or above 65504."""
    keras = _tf.keras()
    from bottleneck.heads.feature_blocks import take_rows

    n = images.n("train")
    pick = np.sort(np.random.default_rng(seed).choice(n, size=min(rows, n), replace=False))
    base = assembled.base
    lower = keras.Model(base.inputs, base.get_layer(cut.tensor_layer).output)
    pre = assembled.features.get_layer("preprocess")
    mine = np.asarray(lower(pre(images.pixels("train", pick)), training=False), np.float64)
    stored = take_rows(prefix.features("train"), pick).astype(np.float64)
    scale = float(np.abs(mine).max())
    if not np.isfinite(stored).all() or scale == 0.0:
        return float("inf") if scale or not np.isfinite(stored).all() else 0.0
    return float(np.abs(stored - mine).max()) / scale


def _suffix_model(assembled, cut):
    """The trainable top alone: cut activations -> unfrozen blocks -> pooling -> head (layers shared with the
    whole model, so training it trains the whole model)."""
    keras = _tf.keras()
    from bottleneck.backbones.build import pool_outputs

    base = assembled.base
    tensor = base.get_layer(cut.tensor_layer).output
    upper = keras.Model(tensor, base.outputs, name="unfrozen_top")
    inputs = keras.Input(tuple(tensor.shape[1:]), name="activations")
    x = pool_outputs(upper(inputs, training=False), assembled.config.pooling, assembled.config.layer)
    return keras.Model(inputs, assembled.head(x), name="top_and_head")


def _evaluate(assembled, images, cache, yi, val_split, val_rows, batch_size, progress) -> dict:
    """Metrics of the whole fine-tuned model on the images of val (or the held-out train rows) and test."""
    from bottleneck.report import classification_metrics
    from bottleneck.tuning.batches import ImageBatches

    out = {}
    plan = [("val", val_split, val_rows)] + ([("test", "test", None)] if "test" in cache.splits else [])
    for name, split, rows in plan:
        data = ImageBatches(images, split, yi[split], batch_size, rows=rows, shuffle=False)
        proba = np.concatenate([assembled.model.predict_on_batch(data[i][0]) for i in range(len(data))])
        labels = cache.labels(split) if rows is None else cache.labels(split)[rows]
        out[name] = classification_metrics(
            labels, np.asarray(proba, np.float64), classes=assembled.classes, class_names=cache.class_names
        )
        if progress:
            progress("evaluate", len(out), len(plan))
    return out


class _EpochTimer:
    """Seconds per epoch (a keras Callback built lazily)."""

    @staticmethod
    def make():
        keras = _tf.keras()

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._t)

        return Timer()
