"""Cached activations of the cut, what fine-tuning trains the unfrozen top from: the plain images' (a normal
extraction of the cut layer, "prefix cache") and K seeded augmented views of each train image (one keyed cache
per view), with the batches drawn from them.

Everything below the unfrozen blocks is a fixed function of the image, so it runs once per image (per view)
instead of once per epoch. A view cache is a normal cache (float16, committed chunk by chunk, resumed after an
interruption, a hit for any later run): its key is the plain prefix cache's key material plus the view's (index,
seed, augmentation names and the version of the augmentation code), and its meta.json records the view. View v of
seed s is the same cache for ``views=4`` and ``views=8``, so raising K computes only the new views.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bottleneck import _tf
from bottleneck.backbones.build import pool_outputs
from bottleneck.cache import CacheWriter, open_cache
from bottleneck.cache.health import hit_problems
from bottleneck.cache.integrity import set_aside
from bottleneck.cache.key import key_of
from bottleneck.cache.lock import cache_lock
from bottleneck.cache.meta import find_cache_path
from bottleneck.errors import TuneError
from bottleneck.heads.feature_blocks import available_memory, iter_blocks, nbytes, take_rows, to_memory
from bottleneck.inference.chooser import choose_engine
from bottleneck.inference.plan import chunk_rows_for, resumable_meta
from bottleneck.inference.runner import extract, is_complete
from bottleneck.tuning.images import augmentation

# Cached float16 activations against the network's own, relative to their scale: float16 rounding (2**-11) and
# an ONNX engine's differences pass, activations float16 cannot represent do not.
PREFIX_TOLERANCE = 1e-2
# Bump when the pixels of a view change for the same (index, seed, names): the augmentation layers or their seeding.
VIEW_VERSION = 1
# Images augmented together (one seed per batch, so the batch boundaries are part of a view's identity: in its key).
VIEW_BATCH = 32
# Rows per commit of a view cache, a multiple of VIEW_BATCH; None: a few MB per chunk, as extraction does.
VIEW_CHUNK_ROWS: int | None = None


def prefix_cache(cache, cut, images, cache_dir, progress, notify):
    """The activations of the cut tensor for every row, as a keyed float16 cache (a hit when it exists)."""

    config = cache.config.replace(layer=cut.tensor_layer, pooling="none", dtype="float16")
    options = dict(cache.meta.get("source_options") or {})
    options.pop("max_image_pixels", None)
    result = extract(
        images.source.manifest.source,
        config,
        cache_dir=cache_dir or cache.path.parent,
        progress=progress,
        notify=notify,
        **options,
    )
    prefix = result.cache
    notify(
        f"{'reused' if result.hit else 'computed'} the activations of {cut.tensor_layer} (below the unfrozen "
        f"blocks): cache {prefix.path.name}"
    )
    for split in cache.splits:
        if prefix.n(split) != cache.n(split) or not np.array_equal(prefix.ids(split), cache.ids(split)):
            raise TuneError(
                f"the activations cache {prefix.path.name} does not have the rows of cache {cache.path.name} "
                f"({split}); the source changed. Pass prefix_cache='off', or extract again."
            )
    return prefix


def lower_model(assembled, cut):
    """0..255 pixels -> the cut tensor: the preprocessing and the frozen part of the backbone."""
    keras = _tf.keras()
    base = assembled.base
    lower = keras.Model(base.inputs, base.get_layer(cut.tensor_layer).output, name="frozen_part")
    pre = assembled.features.get_layer("preprocess")
    inputs = keras.Input(tuple(assembled.model.input_shape[1:]), name="pixels")
    return keras.Model(inputs, lower(pre(inputs), training=False), name="below_cut")


def suffix_model(assembled, cut):
    """The trainable top alone: cut activations -> unfrozen blocks -> pooling -> head (layers shared with the
    whole model, so training it trains the whole model). The training flag reaches the unfrozen layers."""
    keras = _tf.keras()

    base = assembled.base
    tensor = base.get_layer(cut.tensor_layer).output
    upper = keras.Model(tensor, base.outputs, name="unfrozen_top")
    inputs = keras.Input(tuple(tensor.shape[1:]), name="activations")
    x = pool_outputs(upper(inputs), assembled.config.pooling, assembled.config.layer)
    return keras.Model(inputs, assembled.head(x), name="top_and_head")


def whole_training_model(assembled, cut):
    """Pixels -> probabilities for training through the whole network: the part below a single-tensor cut always
    in inference mode (as its cached activations are), the rest as trained. Without such a cut, the model itself."""
    if cut.tensor_layer is None:
        return assembled.model
    keras = _tf.keras()
    lower, upper = lower_model(assembled, cut), suffix_model(assembled, cut)
    inputs = keras.Input(tuple(assembled.model.input_shape[1:]), name="pixels")
    return keras.Model(inputs, upper(lower(inputs, training=False)), name="whole_for_training")


def prefix_difference(assembled, cut, images, prefix, seed: int, rows: int = 16) -> float:
    """Max |cached - computed| activation on a sample of train rows, relative to the computed scale: float16
    cannot hold activations far below its smallest normal number (random-weight networks) or above 65504."""

    n = images.n("train")
    pick = np.sort(np.random.default_rng(seed).choice(n, size=min(rows, n), replace=False))
    mine = np.asarray(lower_model(assembled, cut)(images.pixels("train", pick), training=False), np.float64)
    stored = take_rows(prefix.features("train"), pick).astype(np.float64)
    scale = float(np.abs(mine).max())
    if not np.isfinite(stored).all() or scale == 0.0:
        return float("inf") if scale or not np.isfinite(stored).all() else 0.0
    return float(np.abs(stored - mine).max()) / scale


class Augmenter:
    """The augmentation layers of ``names``, applied to a batch with an explicit seed (so a batch's view is the same
    whenever it is computed: a resumed cache continues exactly, a recomputed chunk equals the lost one)."""

    def __init__(self, names):

        self.names = tuple(names)
        self.layers = list(augmentation(self.names, 0).layers)

    def __call__(self, x: np.ndarray, seed: int) -> np.ndarray:
        for i, layer in enumerate(self.layers):
            t = layer.get_random_transformation(x, training=True, seed=seed + 7919 * i)
            x = layer.transform_images(x, t, training=True)
        return np.asarray(x, np.float32)


def batch_seed(seed: int, view: int, start: int) -> int:
    return int(np.random.SeedSequence([seed, view, start]).generate_state(1)[0] % (2**31 - 1))


def view_material(prefix, index: int, seed: int, names) -> dict:
    """What a view cache's key hashes: the plain prefix cache's material plus the view's identity."""
    material = dict(prefix.meta["key_material"])
    material["view"] = {
        "index": int(index),
        "seed": int(seed),
        "augment": list(names),
        "version": VIEW_VERSION,
        "batch": VIEW_BATCH,
        "split": "train",
    }
    return material


def view_caches(prefix, images, settings, cache_dir, progress, notify) -> tuple[list, dict]:
    """The ``settings.views`` view caches of the train split (hits where they exist), and timing
    {"computed": views built now, "seconds": their time}."""
    caches, built, seconds = [], 0, 0.0
    engine = None
    for v in range(settings.views):
        t0 = time.perf_counter()
        cache, engine, computed = _view_cache(
            prefix, images, v, settings, cache_dir or prefix.path.parent, engine, progress, notify
        )
        caches.append(cache)
        if computed:
            built += 1
            seconds += time.perf_counter() - t0
    return caches, {"computed": built, "seconds": round(seconds, 3)}


def _engine(config, images, cache_dir, notify, n_images):

    def probe(size: int) -> np.ndarray:
        return images.pixels("train", np.arange(min(VIEW_BATCH, images.n("train")))).astype(np.uint8)

    # The cut's activations come from the fp32 model, also under an int8 cache (its cut is not quantized).
    fp32 = config.replace(precision="fp32")
    return choose_engine(fp32, cache_dir, probe=probe, n_images=n_images, notify=notify)


def _view_cache(prefix, images, index, settings, cache_dir, engine, progress, notify):
    """(cache, engine, computed) of view ``index``: a complete cache of its key, or one computed (resumed)."""

    config = prefix.config
    material = view_material(prefix, index, settings.seed, settings.augment)
    key = key_of(material)
    path = find_cache_path(cache_dir, config, key)

    def hit():
        return is_complete(path) and not hit_problems(path)

    if hit():
        return open_cache(path), engine, False
    with cache_lock(path, notify):
        if hit():
            return open_cache(path), engine, False
        if is_complete(path):  # complete but damaged: computed again from the images
            set_aside(path)
        n = images.n("train")
        engine = engine or _engine(config, images, cache_dir, notify, settings.views * n)
        meta = resumable_meta(path, notify)
        if meta is None:
            writer = CacheWriter(
                path,
                key=key,
                key_material=material,
                config=config,
                class_names=prefix.class_names,
                manifest=prefix.manifest(),
                skipped=prefix.meta.get("skipped", []),
            )
            writer.describe_engine(engine)
            chunk_rows = VIEW_CHUNK_ROWS or chunk_rows_for(
                config.batch_size, engine.feature_shape, config.dtype
            )
            writer.create_split(
                "train",
                n,
                engine.feature_shape,
                config.dtype,
                prefix.labels("train"),
                prefix.ids("train"),
                chunk_rows,
            )
            done = 0
        else:
            writer = CacheWriter.reopen(path, meta)
            chunk_rows = writer.split("train")["chunk_rows"]
            done = writer.committed("train")
        notify(
            f"computing augmented view {index + 1} of {settings.views} ({','.join(settings.augment)}) of "
            f"{n} train images" + (f", resuming at row {done}" if done else "")
        )
        try:
            _fill(writer, images, engine, index, settings, done, n, chunk_rows, config, progress)
        except BaseException:
            writer.abort()
            raise
        cache = writer.finish(
            {
                "engine": engine.name,
                "view": material["view"],
                "source": prefix.meta.get("source"),
                "source_options": prefix.meta.get("source_options"),
            }
        )
    return cache, engine, True


def _fill(writer, images, engine, index, settings, done, n, chunk_rows, config, progress) -> None:
    """Rows [done, n) of the train split: decoded (one batch ahead), augmented, through the engine, committed per
    chunk."""
    augment = Augmenter(settings.augment)
    bs = VIEW_BATCH
    starts = list(range(done, n, bs))
    stage = f"view {index + 1}/{settings.views}"
    with ThreadPoolExecutor(1, thread_name_prefix="view-decode") as pool:
        ahead = (
            pool.submit(images.pixels, "train", np.arange(starts[0], min(starts[0] + bs, n)))
            if starts
            else None
        )
        out, chunk_start = [], done
        for k, start in enumerate(starts):
            pixels = ahead.result()
            if k + 1 < len(starts):
                nxt = starts[k + 1]
                ahead = pool.submit(images.pixels, "train", np.arange(nxt, min(nxt + bs, n)))
            x = augment(pixels, batch_seed(settings.seed, index, start))
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
            out.append(np.asarray(engine(x)).astype(config.dtype))
            stop = start + len(x)
            if stop - chunk_start >= chunk_rows or stop == n:
                writer.write("train", chunk_start, np.concatenate(out))
                writer.commit("train", stop)
                out, chunk_start = [], stop
            if progress:
                progress(stage, stop, n)


class CachedTrain:
    """Train batches of cached activations: rows in the order ``np.random.default_rng([seed, epoch - 1])`` gives
    (the order of ``ImageBatches``), each row read from one of the ``arrays`` (a view drawn per row and epoch)."""

    def __init__(self, arrays, y, rows, batch_size: int, seed: int, class_weights=None):
        self.arrays = arrays
        self.y, self.rows = np.asarray(y), np.asarray(rows, np.int64)
        self.batch_size, self.seed = int(batch_size), seed
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)

    @property
    def steps(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    def epoch(self, epoch: int):

        order = np.random.default_rng([self.seed, epoch - 1]).permutation(self.rows)
        k = len(self.arrays)
        view = (
            np.random.default_rng([self.seed, epoch - 1, 1]).integers(k, size=len(order)) if k > 1 else None
        )
        for b in range(0, len(order), self.batch_size):
            sel = order[b : b + self.batch_size]
            if view is None:
                x = _take(self.arrays[0], sel, take_rows)
            else:
                v = view[b : b + self.batch_size]
                x = np.empty((len(sel), *self.arrays[0].shape[1:]), np.float32)
                for j in np.unique(v):
                    x[v == j] = _take(self.arrays[j], sel[v == j], take_rows)
            y = self.y[sel]
            yield (
                x.astype(np.float32, copy=False),
                y,
                None if self.class_weights is None else self.class_weights[y],
            )


def _take(X, rows, take_rows):
    if isinstance(X, np.ndarray) and not isinstance(X, np.memmap):
        return X[rows]
    order = np.argsort(rows)
    out = np.empty((len(rows), *X.shape[1:]), X.dtype)
    out[order] = take_rows(X, rows[order])
    return out


class CachedEval:
    """Val / test batches of cached activations in stored order."""

    def __init__(self, X, y, rows, batch_size: int, class_weights=None):
        self.X, self.y = X, np.asarray(y)
        self.rows = np.asarray(rows, np.int64)
        self.batch_size = int(batch_size)
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)

    def batches(self):

        for rows, x in iter_blocks(self.X, self.rows):
            for b in range(0, len(rows), self.batch_size):
                y = self.y[rows[b : b + self.batch_size]]
                w = None if self.class_weights is None else self.class_weights[y]
                yield np.asarray(x[b : b + self.batch_size], np.float32), y, w


def in_memory(X):
    """A cached split in RAM when it fits in half the free memory (true per-row shuffles), else on disk."""

    return to_memory(X) if nbytes(X) < available_memory() // 2 else X
