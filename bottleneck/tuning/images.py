"""The images behind a cache's rows, read again from its source for training: same decode, same resize.

The source is reopened as extraction opened it (its recorded options) and its files are matched to the
cache's manifest by id and content hash, so row i of a split is exactly the image whose features the cache
holds at row i. Unaugmented pixels are what extraction fed the backbone.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.backbones import get_spec
from bottleneck.backbones.model_file import input_size, is_model_path, load_model_file
from bottleneck.data import open_source
from bottleneck.errors import TuneError
from bottleneck.tuning.recipe import AUGMENTATIONS, augment_names

__all__ = ["AUGMENTATIONS", "CacheImages", "augmentation", "open_cache_images"]
LISTED = 5  # changed or missing files named in an error


class CacheImages:
    """Per split, the source items of a cache's rows, in row order; ``pixels(split, rows)`` decodes them."""

    def __init__(
        self, source, items: dict, labels: dict, size: int, resize: str, workers: int = 2, fast: bool = False
    ):
        self.source = source
        self.items = items  # split -> [Item] in row order
        self.labels = labels  # split -> (N,) cache labels
        self.size = size
        self.resize = resize
        self.fast = fast  # the cache's fast JPEG decoding, so tuned features see the pixels the cache saw
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")

    def n(self, split: str) -> int:
        return len(self.items[split])

    def load(self, item) -> np.ndarray:
        return self.source.load(item, self.size, self.resize, self.fast)

    def pixels(self, split: str, rows) -> np.ndarray:
        """float32 (len(rows), S, S, 3) pixels in 0..255 of ``rows`` of ``split``."""
        items = [self.items[split][int(r)] for r in rows]
        return np.stack(list(self._pool.map(self.load, items))).astype(np.float32)

    def close(self) -> None:
        self._pool.shutdown()
        self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_cache_images(
    cache, *, source=None, size: int | None = None, resize: str | None = None, workers: int = 2, progress=None
):
    """The images of ``cache``'s rows from its recorded source, or from ``source`` (the same files, moved),
    resized to ``size`` with ``resize`` (default: as the cache was extracted).

    Every row's file must still be there with the content it had: otherwise one TuneError says how many
    differ and names the first few.
    """

    recorded = cache.meta.get("source")
    path = Path(source) if source is not None else Path(recorded or "")
    if not recorded and source is None:
        raise TuneError(f"cache {cache.path.name} does not record its source; pass source=PATH (the images).")
    if not path.exists():
        raise TuneError(
            f"the source {path} of cache {cache.path.name} does not exist here; pass source=PATH where its images "
            "are now."
        )
    src = open_source(path, progress=progress, **cache.meta.get("source_options", {}))
    try:
        items, labels = _match(cache, src.manifest)
    except BaseException:
        src.close()
        raise
    size = size or _input_size(cache)
    return CacheImages(
        src, items, labels, size, resize or cache.config.resize, workers, cache.config.fast_decode
    )


def _input_size(cache) -> int:

    config = cache.config
    if config.image_size:
        return int(config.image_size)
    if is_model_path(config.backbone):
        return int(input_size(load_model_file(config.backbone)))
    return get_spec(config.backbone).input_size


def _match(cache, manifest) -> tuple[dict, dict]:
    stored = cache.manifest()
    skipped = [int(s["index"]) for s in cache.meta.get("skipped", [])]
    found = {it.id: it for it in manifest.items}
    items: dict[str, list] = {s: [] for s in cache.splits}
    changed, missing = [], []
    for x in stored.without(skipped).items:
        it = found.get(x.id)
        if it is None:
            missing.append(x.id)
        elif it.hash != x.hash:
            changed.append(x.id)
        elif x.split in items:
            items[x.split].append(it)
    if changed or missing:
        parts = []
        if changed:
            parts.append(
                f"{len(changed)} changed ({', '.join(changed[:LISTED])}{' ...' if len(changed) > LISTED else ''})"
            )
        if missing:
            parts.append(
                f"{len(missing)} missing ({', '.join(missing[:LISTED])}{' ...' if len(missing) > LISTED else ''})"
            )
        raise TuneError(
            f"{len(changed) + len(missing)} image(s) of source {manifest.source} differ from cache "
            f"{cache.path.name}: {'; '.join(parts)}. Restore them, or extract the source again and fit a new head."
        )
    for split in cache.splits:
        if len(items[split]) != cache.n(split):
            raise TuneError(
                f"cache {cache.path.name} has {cache.n(split)} {split} rows but its manifest lists "
                f"{len(items[split])}; the cache is damaged. Extract again."
            )
    return items, {s: cache.labels(s) for s in cache.splits}


def augmentation(names, seed: int = 0):
    """A keras.Sequential of random layers for ``names`` (a subset of AUGMENTATIONS), each seeded; applied
    to float 0..255 batches with training=True. None for no augmentation."""

    names = augment_names(names)
    if not names:
        return None
    keras = _tf.keras()
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])

    def s():
        return int(rng.integers(2**31 - 1))

    layers = []
    for name in names:
        if name == "flip":
            layers.append(keras.layers.RandomFlip("horizontal", seed=s()))
        elif name == "crop":
            layers.append(keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=s()))
        elif name == "rotate":
            layers.append(keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=s()))
        elif name == "zoom":
            layers.append(keras.layers.RandomZoom((-0.15, 0.0), fill_mode="reflect", seed=s()))
        elif name == "contrast":
            layers.append(keras.layers.RandomContrast(0.2, seed=s()))
    return keras.Sequential(layers, name="augment")
