"""``Embedder``: images to features from Python, as a scikit-learn transformer, without a cache folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from bottleneck import _tf
from bottleneck.config import ExtractConfig
from bottleneck.data.decode import array_to_rgb, draft_size, resize_image
from bottleneck.data.reads import load_image
from bottleneck.errors import BottleneckError
from bottleneck.inference.chooser import choose_engine
from bottleneck.inference.pipeline import iter_batches


class Embedder(TransformerMixin, BaseEstimator):
    """A frozen backbone as a transformer: ``transform(images)`` -> float32 features (N, D).

    The same engines, preprocessing, decoding and resizing as ``bottleneck.extract``, so features equal a
    cache's rows for the same settings (within the engines' verified tolerance). ``fit`` learns nothing; the
    network is built on the first ``transform`` and kept (not pickled). Usable in ``sklearn.pipeline.Pipeline``:

        Pipeline([("embed", Embedder()), ("clf", LogisticRegression(max_iter=1000))]).fit(paths, labels)

    Parameters are ExtractConfig's: ``backbone`` (registry name or model file), ``weights``, ``layer``
    (one or several comma-separated), ``pooling`` ("none" gives (N, h, w, C) maps, not usable by most
    estimators), ``image_size``, ``resize``, ``preprocess`` (model files only; an ONNX
    file's may instead be ``mean``/``std``/``channels``, or its MODEL.onnx.json), ``engine`` ("auto" uses an ONNX
    model that an earlier ``extract`` verified under ``cache_dir``, else TensorFlow; "onnx" converts and
    verifies one there), ``batch_size``, ``workers`` (decode threads), ``threads`` (compute threads) and
    ``fast_decode`` (JPEGs decoded at a reduced scale: faster on large photos, slightly different pixels).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        *,
        weights: str = "imagenet",
        layer: str | None = None,
        pooling: str = "avg",
        image_size: int | None = None,
        resize: str = "squash",
        preprocess: str | None = None,
        mean: str | None = None,
        std: str | None = None,
        channels: str | None = None,
        engine: str = "auto",
        batch_size: int = 32,
        workers: int | None = None,
        threads: int | None = None,
        fast_decode: bool = False,
        cache_dir="cache",
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.image_size = image_size
        self.resize = resize
        self.preprocess = preprocess
        self.mean = mean
        self.std = std
        self.channels = channels
        self.engine = engine
        self.batch_size = batch_size
        self.workers = workers
        self.threads = threads
        self.fast_decode = fast_decode
        self.cache_dir = cache_dir

    def config(self):
        """These settings as an ExtractConfig (raises BottleneckError on a bad value)."""

        return ExtractConfig(
            backbone=self.backbone,
            weights=self.weights,
            image_size=self.image_size,
            layer=self.layer,
            pooling=self.pooling,
            resize=self.resize,
            preprocess=self.preprocess,
            mean=self.mean,
            std=self.std,
            channels=self.channels,
            batch_size=self.batch_size,
            workers=self.workers,
            threads=self.threads,
            engine=self.engine,
            fast_decode=self.fast_decode,
        )

    def fit(self, X=None, y=None):
        """Nothing to learn: checks the settings and returns self."""
        self.config()
        return self

    def transform(self, X) -> np.ndarray:
        """Features of ``X``: a uint8 array (N, H, W[, C]) with C in 1, 3, 4, or a sequence of image paths.

        Returns float32 (N, *feature_shape): (N, D) for pooled features.
        """

        config = self.config()  # the settings (threads, batch size ...) refused before any image is read
        images, load = _image_reader(X)
        engine = self._get_engine(config, images, load)
        out = np.empty((len(images), *engine.feature_shape), np.float32)
        workers = config.workers or _tf.cpu_count()
        for start, batch in iter_batches(
            lambda im: _resized(load(im, config, engine.input_size), engine.input_size, config.resize),
            images,
            config.batch_size,
            workers=workers,
        ):
            out[start : start + len(batch)] = engine(batch)
        return out

    def _get_engine(self, config, images, load):
        key = tuple(sorted(config.to_dict().items()))
        cached = self.__dict__.get("_engine")
        if cached is not None and cached[0] == key:
            return cached[1]

        def probe(size: int) -> np.ndarray | None:
            if not len(images):
                return None
            return np.stack(
                [_resized(load(im, config, size), size, config.resize) for im in images[: config.batch_size]]
            )

        engine = choose_engine(config, self.cache_dir, probe=probe, n_images=len(images))
        self.__dict__["_engine"] = (key, engine)
        return engine

    def __getstate__(self):
        # The compiled network is rebuilt on demand; TensorFlow and ONNX Runtime sessions do not pickle.
        state = dict(self.__dict__)
        state.pop("_engine", None)
        return state

    def __sklearn_is_fitted__(self) -> bool:
        return True  # stateless: transform works without fit

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags


def _image_reader(X):
    """(a sequence of images, a function (image, config, input side) -> RGB uint8 (H, W, 3))."""

    def from_array(a, config, size):
        return array_to_rgb(a)

    def from_file(path, config, size):
        return load_image(path, draft_size(size, config.fast_decode))

    if isinstance(X, str | os.PathLike):
        raise BottleneckError(f"X is one path ({X}); pass a list of image paths, e.g. [{str(X)!r}].")
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.dtype != np.uint8:
            raise BottleneckError(
                f"X has dtype {X.dtype}; pass uint8 images with values 0..255 (e.g. X.astype(np.uint8) if they "
                "are already in that range), or a list of image paths."
            )
        if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[-1] not in (1, 3, 4)):
            raise BottleneckError(
                f"X has shape {X.shape}; pass images as (N, H, W), (N, H, W, 1), (N, H, W, 3) or (N, H, W, 4), "
                "or a list of image paths."
            )
        return X, from_array
    if isinstance(X, Sequence) or (isinstance(X, np.ndarray) and X.ndim == 1):
        items = list(X)
        wrong = [p for p in items if not isinstance(p, str | os.PathLike)]
        if wrong:
            raise BottleneckError(
                f"X holds {type(wrong[0]).__name__} items; pass a list of image paths or a uint8 array "
                "(N, H, W[, C])."
            )
        return [Path(p) for p in items], from_file
    raise BottleneckError(
        f"X is a {type(X).__name__}; pass a uint8 array (N, H, W[, C]) or a list of image paths."
    )


def _resized(img: np.ndarray, size: int, policy: str) -> np.ndarray:

    return resize_image(img, size, policy)
