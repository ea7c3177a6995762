"""ImageNet top-k of the full pretrained network: the user's check that weights and preprocessing are right."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.errors import BackboneError, BottleneckError, SourceError

Prediction = tuple[int, str, float]  # (class index, class name, probability)


def classify(
    images: Sequence[str | os.PathLike],
    backbone: str = "efficientnet_lite0",
    top: int = 5,
    weights: str = "imagenet",
    *,
    image_size: int | None = None,
    resize: str = "squash",
    preprocess: str | None = None,
    batch_size: int = 32,
) -> list[list[Prediction]]:
    """The ``top`` most probable classes of each image, most probable first.

    ``backbone`` is a registry name (the network is built with its classifier, ``include_top=True``) or a
    saved Keras classifier (then ``preprocess`` is required). Images are decoded and resized exactly as
    ``extract`` does (``resize``: squash | crop | pad). Probabilities are softmax outputs; a model file that
    returns logits is passed through a softmax. Names are ImageNet's for 1000-way outputs, else "class <i>".
    """
    from bottleneck.config import RESIZES
    from bottleneck.errors import one_of

    paths = [Path(p) for p in images]
    if not paths:
        raise SourceError("no images given; pass one or more image files.")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SourceError(f"image file(s) not found: {', '.join(missing[:5])}; check the paths.")
    if resize not in RESIZES:
        raise one_of("resize", resize, RESIZES)
    if top < 1:
        raise BottleneckError(f"--top {top} must be at least 1; e.g. --top 5.")

    model = build_classifier(backbone, weights=weights, image_size=image_size, preprocess=preprocess)
    n_classes = int(model.output_shape[-1])
    top = min(top, n_classes)
    size = int(model.input_shape[1])

    from bottleneck.data import load_image, resize_image

    results = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack(
            [resize_image(load_image(p), size, resize) for p in paths[start : start + batch_size]]
        )
        probs = _probabilities(np.asarray(model(batch.astype(np.float32), training=False)))
        for row in probs:
            best = np.argsort(-row, kind="stable")[:top]
            results.append([(int(i), _name(int(i), n_classes), float(row[i])) for i in best])
    return results


def build_classifier(
    backbone: str, *, weights: str = "imagenet", image_size: int | None = None, preprocess: str | None = None
):
    """A keras classifier from float 0..255 RGB (N, S, S, 3) to (N, classes), its preprocessing in the graph.

    Preprocessing is ``bottleneck.backbones.preprocess``, the same layer the feature graphs of extraction use.
    """
    model, mode = _bare_classifier(backbone, weights=weights, image_size=image_size, preprocess=preprocess)
    keras = _tf.keras()

    from bottleneck.backbones.preprocess import Preprocess

    inputs = keras.Input(model.input_shape[1:], name="pixels")
    outputs = model(Preprocess(mode, name="preprocess")(inputs))
    return keras.Model(inputs, outputs, name=f"{model.name}_classifier")


def _bare_classifier(backbone: str, *, weights: str, image_size: int | None, preprocess: str | None):
    """(classifier taking preprocessed input, preprocess mode) for a registry name or a model file."""
    from bottleneck.backbones import PREPROCESS_MODES, get_spec
    from bottleneck.cache.key import is_model_path
    from bottleneck.errors import one_of

    if is_model_path(backbone):
        if preprocess is None:
            raise BackboneError(
                f"--preprocess is required for a model file ({backbone}): choose caffe, torch, tf, 127 or none."
            )
        if preprocess not in PREPROCESS_MODES:
            raise one_of("preprocess", preprocess, PREPROCESS_MODES)
        from bottleneck.backbones.model_file import load_model_file

        model = load_model_file(backbone)
        if len(model.output_shape) != 2:
            raise BackboneError(
                f"{backbone} outputs shape {model.output_shape}; classify needs a classifier with (batch, classes) output."
            )
        if model.input_shape[1] is None and image_size is None:
            raise BackboneError(f"{backbone} accepts any input size; pass --image-size.")
        if image_size is not None and model.input_shape[1] not in (None, image_size):
            raise BackboneError(
                f"{backbone} takes {model.input_shape[1]}-pixel inputs, not --image-size {image_size}; drop the option."
            )
        if model.input_shape[1] is None:
            keras = _tf.keras()

            inputs = keras.Input((image_size, image_size, model.input_shape[-1]))
            model = keras.Model(inputs, model(inputs))
        return model, preprocess

    spec = get_spec(backbone)
    if preprocess is not None and preprocess != spec.preprocess:
        raise BackboneError(
            f"--preprocess is fixed by the backbone ({backbone} uses {spec.preprocess}); drop the option."
        )
    size = image_size or spec.input_size
    ctor = _resolve(spec.top_constructor or spec.constructor)
    w = None if weights == "none" else weights
    try:
        model = ctor(include_top=True, weights=w, input_shape=(size, size, 3))
    except BottleneckError:
        raise
    except ValueError as exc:  # e.g. Keras: include_top with imagenet weights needs the default size
        raise BackboneError(f"cannot build the {backbone} classifier at {size} px: {exc}") from None
    if w not in (None, "imagenet") and spec.weights == "keras" and spec.family == "efficientnet":
        # Keras leaves out EfficientNet's stem rescale for a weights path, as in feature extraction.
        from bottleneck.backbones.build import _fold_efficientnet_rescaling

        _fold_efficientnet_rescaling(model)
    return model, spec.preprocess


def _probabilities(out: np.ndarray) -> np.ndarray:
    out = out.astype(np.float64)
    looks_like_probs = (out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-3)
    if looks_like_probs:
        return out
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _name(index: int, n_classes: int) -> str:
    from bottleneck.backbones.imagenet import NUM_CLASSES, class_name

    return class_name(index) if n_classes == NUM_CLASSES else f"class {index}"


def _resolve(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
