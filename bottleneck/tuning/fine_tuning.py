"""Fine-tuning a run, as steps: prepare (the start model, the cut, the data it trains on), train (`tuning.loop`),
summarise (metrics beside the frozen head's, the run folder).

The run's own trained head is the start (LP-FT: a random head's large gradients would wreck the pretrained
weights), and the start is epoch 0 of the selection: a run never ends below it on val. When a single tensor
crosses the cut, everything below it is computed once (``tuning.views``): the plain images' activations, and with
``views=K`` K augmented views of each train image, so each epoch runs only the unfrozen top.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bottleneck import _tf
from bottleneck._io import file_hash, replace_atomic, temp_path
from bottleneck._ownership import check_out, put_in_place, reseal, write_record
from bottleneck.backbones.blocks import BLOCK_PATTERNS, Cut, apply_cut, blocks, depth_groups, plan_cut
from bottleneck.backbones.onnx_file import is_onnx_path
from bottleneck.callbacks import Notify, Progress
from bottleneck.errors import CacheError, TuneError
from bottleneck.heads.checks import class_weights, stratified_holdout
from bottleneck.runs.fine_tuned_model import WholeModel
from bottleneck.runs.folders import (
    FILES,
    METRICS_FILE,
    Run,
    load_run,
    run_cache,
    unique_dir,
    write_metrics,
    write_reports,
)
from bottleneck.tuning import views as cached
from bottleneck.tuning.assembly import Assembled, assemble, check_start
from bottleneck.tuning.calibrate import fold_temperature, output_layer
from bottleneck.tuning.images import augmentation, open_cache_images
from bottleneck.tuning.loop import Trainer
from bottleneck.tuning.loop import train as run_loop
from bottleneck.tuning.recipe import TuneSettings
from bottleneck.tuning.results import KIND, evaluate, summarise
from bottleneck.tuning.selection import SELECTION, Checkpoint
from bottleneck.tuning.views import PREFIX_TOLERANCE

if TYPE_CHECKING:  # annotations only: Keras loads lazily, through _tf
    import keras

MODEL_FILE = "model.keras"


@dataclass
class Prepared:
    """Everything training needs, decided before the first step."""

    assembled: Assembled  # the whole model (trained in place)
    cut: Cut
    start: dict  # the start check (tuning.assemble.check_start)
    yi: dict  # split -> label index of every row
    train_rows: np.ndarray
    val_split: str  # "val", or "train" (held-out train rows)
    val_rows: np.ndarray
    weights: np.ndarray | None  # per class
    model: keras.Model  # what trains: the top on cached activations, or the whole network on pixels
    groups: list  # variables per depth group, the head first
    state: list  # every variable training changes
    train_data: object
    val_data: object
    prefix: object = None  # the plain activations cache (cached mode), else None
    views: list = field(default_factory=list)  # the view caches
    view_timing: dict = field(default_factory=dict)
    trainer: object = None  # tuning.loop.Trainer, once training starts
    settings: TuneSettings | None = (
        None  # the recipe as it trains (the default unfreeze fitted to the network)
    )

    @property
    def cached(self) -> bool:
        return self.prefix is not None


def fine_tune(
    run,
    settings: TuneSettings | None = None,
    *,
    source=None,
    cache_dir=None,
    out=None,
    runs_dir="runs",
    save: bool = True,
    force: bool = False,
    progress: Progress | None = None,
    notify: Notify | None = None,
    **overrides,
):
    """Fine-tune a frozen-head run (a folder of `fit-head`, or a Run) and return the new Run.

    ``settings`` (a ``TuneSettings``) and ``overrides`` (its fields by name: ``unfreeze=2, lr=1e-3, views=4``)
    give the recipe; the defaults are the measured one. ``source``: where the cache's images are now, if they
    moved. ``cache_dir``: where cached activations go (default: beside the run's cache). Writes a run folder
    (``model.keras``, ``metrics.json`` with the frozen head's metrics beside the fine-tuned ones, ``report.md``,
    ``history.png``, ``confusion.png``) unless ``save`` is False; it is built in a hidden sibling folder that
    holds a checkpoint after every epoch, so an interrupted run resumes there when started again.
    """

    settings = TuneSettings.build(settings, **overrides)
    notify = notify or (lambda line: None)
    t0 = time.perf_counter()
    run = run if isinstance(run, Run) else load_run(run)
    if run.summary.get("kind") == KIND:
        raise TuneError(
            f"run {run.path} is already fine-tuned; fine-tune the frozen-head run it started from "
            f"({run.summary.get('start_run')}) with other settings instead."
        )
    backbone = run.summary["cache"]["config"]["backbone"]
    if is_onnx_path(backbone):
        raise TuneError(
            f"{'run ' + str(run.path) if run.path else 'this run'} reads features of an ONNX model file ({backbone}), which ONNX Runtime runs but cannot "
            "train; compare heads on its features (fit-head, compare), or fine-tune a registry backbone or a "
            "Keras model file."
        )
    cache = _open_run_cache(run)
    partial, final = _folders(run, settings, out, runs_dir, force) if save else (None, None)
    workers = settings.workers or _tf.cpu_count()
    with open_cache_images(cache, source=source, workers=workers, progress=progress) as images:
        prep = prepare(run, cache, images, settings, cache_dir, progress, notify)
        settings = prep.settings
        checkpoint = None
        if partial is not None:
            checkpoint = Checkpoint(partial, _resume_digest(run, cache, settings))
        outcome = train(prep, settings, checkpoint, progress, notify)
        metrics, evaluation = evaluate(prep, images, cache, settings, progress)
    summary = summarise(run, cache, images, prep, settings, outcome, metrics, evaluation, t0)

    result = Run(None, WholeModel(prep.assembled.model, summary), summary)
    if save:
        save_fine_tuned(result, partial)
        checkpoint.remove()
        write_record(partial, "fine-tuned run")
        final = final or _unique_final(run, runs_dir)
        put_in_place(partial, final, force=force, notify=notify)
        result.path = final
        summary["path"] = str(final)
        _rewrite_summary(result)
    return result


def _fit_default_unfreeze(assembled, settings: TuneSettings, notify) -> TuneSettings:
    """The default ``unfreeze`` (top 3 blocks) on a network with fewer blocks: all of them, said in one line, and
    recorded so (a run's recipe repeats what trained). Any other count beyond the blocks stays an error."""

    default = TuneSettings().unfreeze
    if settings.unfreeze_from or settings.unfreeze != default or assembled.family not in BLOCK_PATTERNS:
        return settings
    n = len(blocks(assembled.base, assembled.family))
    if 0 < n < default:
        notify(f"this network has {n} block(s): training all of them (the default is the top {default})")
        return settings.replace(unfreeze=n)
    return settings


def prepare(run, cache, images, settings: TuneSettings, cache_dir, progress, notify) -> Prepared:
    """The start model checked against the run, the cut, labels and val rows, and the data of the chosen mode."""

    assembled = assemble(run)
    start = check_start(assembled, run, cache, images, seed=settings.seed)
    notify(
        f"rebuilt {assembled.config.backbone} + {run.head.name} head: max difference {start['difference']:.2g} "
        f"from the run's predictions on {start['rows']} cached {start['split']} rows"
    )
    unfreeze_from = settings.unfreeze_from
    settings = _fit_default_unfreeze(assembled, settings, notify)
    cut = plan_cut(
        assembled.base,
        assembled.family,
        unfreeze=None if unfreeze_from else settings.unfreeze,
        unfreeze_from=unfreeze_from,
    )
    auto_views = settings.views is None
    settings = settings.resolve_views(cut.tensor_layer is not None)
    if settings.views and cut.tensor_layer is None:
        raise TuneError(
            f"views={settings.views} caches activations below the cut, but several tensors cross the cut "
            f"({cut.description}); unfreeze whole blocks (unfreeze=N), or pass views=0 to augment on the fly."
        )
    _set_trainable(assembled, cut, apply_cut, settings.train_bn)
    if "train" not in cache.splits:
        raise TuneError(f"cache {cache.path.name} has no train split; fine-tuning trains on train.")
    yi = {s: _label_index(assembled.classes, cache.labels(s), s) for s in cache.splits}
    train_rows, val_split, val_rows = _validation(cache, yi, settings.val_fraction, settings.seed)
    weights = _class_weights(settings.class_weight, assembled.classes, yi["train"][train_rows])
    prefix = None
    if (
        settings.prefix_cache == "auto"
        and cut.tensor_layer is not None
        and (settings.views or not settings.augment)
    ):
        prefix = cached.prefix_cache(cache, cut, images, cache_dir, progress, notify)
        difference = cached.prefix_difference(assembled, cut, images, prefix, settings.seed)
        if difference > PREFIX_TOLERANCE:
            if settings.views and not auto_views:
                raise TuneError(
                    f"views={settings.views} needs cached activations of {cut.tensor_layer}, but they differ from "
                    f"the network's by {difference:.2g} of their scale (float16 cannot hold them); pass views=0."
                )
            notify(
                f"the cached activations of {cut.tensor_layer} differ from the network's by {difference:.2g} of "
                "their scale (float16 cannot hold them); training the whole network instead"
                + (f", augmenting on the fly ({','.join(settings.augment)})" if settings.augment else "")
            )
            prefix = None
            settings = settings.replace(views=0)
    depth = depth_groups(assembled.base, assembled.family, cut)
    groups = [list(assembled.head.trainable_variables)] + [[] for _ in range(max(depth.values(), default=0))]
    state = list(assembled.head.weights)
    for lyr in assembled.base.layers:
        if lyr.name in depth:
            groups[depth[lyr.name]].extend(lyr.trainable_variables)
            state.extend(lyr.weights)
    prep = Prepared(
        assembled, cut, start, yi, train_rows, val_split, val_rows, weights, None, groups, state, None, None,
        settings=settings,
    )  # fmt: skip
    if prefix is not None:
        _cached_data(prep, prefix, images, settings, cache_dir, progress, notify)
    else:
        _image_data(prep, images, settings)
    return prep


def _cached_data(prep, prefix, images, settings, cache_dir, progress, notify) -> None:

    prep.prefix = prefix
    prep.model = cached.suffix_model(prep.assembled, prep.cut)
    x_train = cached.in_memory(prefix.features("train"))
    x_val = x_train if prep.val_split == "train" else cached.in_memory(prefix.features(prep.val_split))
    arrays = [x_train]
    if settings.views:
        prep.views, prep.view_timing = cached.view_caches(
            prefix, images, settings, cache_dir, progress, notify
        )
        views = [cached.in_memory(v.features("train")) for v in prep.views]
        arrays = [x_train, *views] if settings.plain_view else views
    y = prep.yi["train"]
    prep.train_data = cached.CachedTrain(
        arrays, y, prep.train_rows, settings.batch_size, settings.seed, prep.weights
    )
    prep.val_data = cached.CachedEval(
        x_val, prep.yi[prep.val_split], prep.val_rows, settings.batch_size, prep.weights
    )


def _image_data(prep, images, settings) -> None:
    from bottleneck.tuning.batches import ImageBatches, ImageData

    prep.model = cached.whole_training_model(prep.assembled, prep.cut)
    train = ImageBatches(
        images,
        "train",
        prep.yi["train"],
        settings.batch_size,
        rows=prep.train_rows,
        shuffle=True,
        seed=settings.seed,
        augment=augmentation(settings.augment, settings.seed),
        class_weights=prep.weights,
    )
    val = ImageBatches(
        images,
        prep.val_split,
        prep.yi[prep.val_split],
        settings.batch_size,
        rows=prep.val_rows,
        shuffle=False,
        class_weights=prep.weights,
    )
    prep.train_data, prep.val_data = ImageData(train), ImageData(val)


def train(prep: Prepared, settings: TuneSettings, checkpoint, progress, notify):
    """Train ``prep.model`` (``tuning.loop``); the kept weights end up in the model, a kept epoch's temperature
    folded into the head's output layer (``tuning.calibrate``)."""

    output = output_layer(prep.assembled.head)
    trainer = Trainer(
        prep.model, prep.groups, prep.state, settings, prep.train_data.steps, calibrate=output is not None
    )
    prep.trainer = trainer
    outcome = run_loop(
        trainer,
        prep.train_data,
        prep.val_data,
        settings,
        checkpoint=checkpoint,
        progress=progress,
        notify=notify,
    )
    if outcome.temperature != 1.0:  # 1 when the start was kept
        fold_temperature(output, outcome.temperature)
    return outcome


def save_fine_tuned(run, path) -> Path:
    """Write a fine-tuned run folder: model.keras (atomically), metrics.json, report.md and plots."""

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    run.path = path
    run.summary["path"] = str(path)
    tmp = temp_path(path / MODEL_FILE, suffix=".keras")
    run.head.model.save(tmp)
    replace_atomic(tmp, path / MODEL_FILE)
    run.summary[FILES] = {MODEL_FILE: file_hash(path / MODEL_FILE)}  # checked by load_run before it is loaded
    write_reports(run, f"fine-tuned {run.summary['head']} on {run.summary['cache']['name']}")
    return path


def _rewrite_summary(run) -> None:

    write_metrics(run.path, run.summary)
    reseal(run.path, [METRICS_FILE])


def _folders(run, settings, out, runs_dir, force) -> tuple[Path, Path | None]:
    """(the hidden folder the run is built in and checkpointed to, the final folder or None for a unique one)."""
    if out is not None:
        final = Path(out)
        check_out(final, force=force)  # before the epochs, not after them
        return final.parent / f".{final.name}.partial", final
    name = f"{Path(str(run.path)).name}-fine-tuned"
    return Path(runs_dir) / f".{name}-{settings.digest()[:8]}.partial", None


def _unique_final(run, runs_dir) -> Path:

    return unique_dir(Path(runs_dir) / f"{Path(str(run.path)).name}-fine-tuned")


def _resume_digest(run, cache, settings) -> str:
    import hashlib

    # SELECTION: a checkpoint written under another selection rule holds history it cannot continue
    blob = f"{settings.digest()}|{Path(str(run.path)).resolve()}|{cache.key}|{SELECTION}"
    return hashlib.sha256(blob.encode()).hexdigest()


def _open_run_cache(run):

    path = (run.summary.get("cache") or {}).get("path")
    try:
        return run_cache(run.summary)
    except CacheError as exc:
        raise TuneError(
            f"the cache {path} of run {run.path} cannot be opened ({exc}); fine-tuning checks its start against "
            "the cached rows. Extract the source again with the same settings (a hit if it exists elsewhere)."
        ) from None


def _set_trainable(assembled, cut, apply_cut, train_bn: bool) -> None:
    """The cut's layers of the backbone and the whole head train; preprocessing and fixed layers do not."""
    assembled.model.trainable = True
    for lyr in assembled.features.layers:
        if lyr is not assembled.base:
            lyr.trainable = False
    apply_cut(assembled.base, cut, train_bn=train_bn)
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
    """(train rows, split the selection watches, its rows): val, or a stratified part of train."""

    n = cache.n("train")
    if "val" in cache.splits:
        return np.arange(n), "val", np.arange(cache.n("val"))
    rows, held = stratified_holdout(yi["train"], val_fraction, seed)
    return rows, "train", held


def _class_weights(class_weight, classes, yi):

    return class_weights(class_weight, classes, yi)
