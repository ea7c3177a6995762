"""Keras weights files of registry backbones: the path checked before anything opens it, loaded only with an exact
fit, and EfficientNet's ImageNet rescaling folded in so a weights file computes what weights="imagenet" does."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.errors import BackboneError, first_line

# Keras weights files: Keras 3 `save_weights` (.weights.h5), legacy Keras 2 / hand-downloaded `*_notop.h5`,
# and a whole-model .keras archive (load_weights reads the weights from it).
WEIGHTS_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")

# keras.applications.efficientnet.IMAGENET_STDDEV_RGB (copied so this module can be read without Keras).
_EFFICIENTNET_STDDEV_RGB = (0.229, 0.224, 0.225)


def weights_file(weights: str, name: str) -> Path:
    """The weights file ``weights`` of backbone ``name``: a regular file with a Keras weights suffix (a folder,
    FIFO or device is refused before anything opens it), else one BackboneError line."""
    path = Path(weights)
    if not path.is_file():
        raise BackboneError(
            f"weights file {weights} does not exist; pass weights='imagenet', 'none', or the path of a Keras "
            f"weights file of {name} ({', '.join(WEIGHTS_SUFFIXES)})."
        )
    if not path.name.lower().endswith(WEIGHTS_SUFFIXES):
        raise BackboneError(
            f"weights file {weights} is not a Keras weights file; pass a {' / '.join(WEIGHTS_SUFFIXES)} file "
            f"saved from {name} (e.g. the *_notop.h5 file of keras.applications)."
        )
    return path


def load_weights(model, path: Path, name: str) -> None:
    """Load a weights file into ``model``; anything short of a full, exact fit is a one-line BackboneError."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
        except Exception as exc:
            raise BackboneError(
                f"weights file {path} does not fit {name}: {_mismatch(exc)}; pass a weights file saved from "
                f"{name} (its *_notop.h5 for include_top=False), weights='imagenet', or weights='none'."
            ) from None
    # Keras 3 leaves unmatched parts of a model at their random init with only a warning.
    partial = [w for w in caught if "could not be loaded" in str(w.message) or "retain" in str(w.message)]
    if partial:
        raise BackboneError(
            f"weights file {path} does not fit {name}: {first_line(partial[0].message)}; pass a weights file "
            f"saved from {name}, weights='imagenet', or weights='none'."
        )


def _mismatch(exc: Exception) -> str:
    """The useful part of a Keras weight-loading error, as one short clause (Keras embeds whole arrays)."""
    text = str(exc)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    if shapes:
        where = re.search(r"path=([\w./-]+)", text)
        at = f"{where.group(1)} " if where else ""
        return f"{at}has shape {shapes.group(1)} in the model but {shapes.group(2)} in the file"
    count = re.search(r"A total of (\d+) objects could not be loaded", text)
    detail = re.search(r"^(Layer '[^']*' expected .*?variables.*?)$", text, re.M)
    if count:
        return f"{count.group(1)} layers could not be loaded" + (f" ({detail.group(1)})" if detail else "")
    return first_line(exc)


def fold_efficientnet_rescaling(model) -> None:
    """Make a weights-file EfficientNet compute what Keras' weights="imagenet" EfficientNet computes.

    With weights="imagenet" Keras inserts a Rescaling by 1/sqrt(stddev) after the stem Normalization (whose
    stored "variance" is really the stddev: keras-team/keras#49930); it leaves that layer out for any other
    weights value. Both are per-channel affine maps, so multiplying the loaded variance by the stddev gives
    the same arithmetic without changing the layer graph.
    """
    keras = _tf.keras()
    norm = next(layer for layer in model.layers if isinstance(layer, keras.layers.Normalization))
    mean, variance, *rest = norm.get_weights()
    norm.set_weights([mean, variance * np.array(_EFFICIENTNET_STDDEV_RGB, variance.dtype), *rest])
    norm.finalize_state()  # the layer computes with tensors derived from its variables; refresh them
