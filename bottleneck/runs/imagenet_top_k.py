"""ImageNet top-k of the full pretrained network: the user's check that weights and preprocessing are right."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bottleneck.backbones.build import build_classifier
from bottleneck.backbones.imagenet import NUM_CLASSES, class_name
from bottleneck.constraints import validate_params
from bottleneck.data import load_image, resize_image
from bottleneck.errors import SourceError
from bottleneck.job_settings import CLASSIFY

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

    validate_params(
        {"top": top, "image_size": image_size, "resize": resize, "batch_size": batch_size}, CLASSIFY
    )
    paths = [Path(p) for p in images]
    if not paths:
        raise SourceError("no images given; pass one or more image files.")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SourceError(f"image file(s) not found: {', '.join(missing[:5])}; check the paths.")

    model = build_classifier(backbone, weights=weights, image_size=image_size, preprocess=preprocess)
    n_classes = int(model.output_shape[-1])
    top = min(top, n_classes)
    size = int(model.input_shape[1])

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


def _probabilities(out: np.ndarray) -> np.ndarray:
    out = out.astype(np.float64)
    looks_like_probs = (out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-3)
    if looks_like_probs:
        return out
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _name(index: int, n_classes: int) -> str:

    return class_name(index) if n_classes == NUM_CLASSES else f"class {index}"
