"""A run as one Keras model: 0..255 pixels -> the cache's backbone settings -> the run's trained head.

The model is what fine-tuning starts from and what `export` writes. It is built from built-in Keras layers only
(the preprocessing is a fixed Dense layer, see ``portable_preprocess``), so a saved copy loads with plain
Keras. ``check_start`` proves, on images of cached rows, that it gives the run's own predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bottleneck import _tf
from bottleneck.backbones import get_spec
from bottleneck.backbones.build import feature_model_of
from bottleneck.backbones.model_file import is_model_path
from bottleneck.config import ExtractConfig
from bottleneck.errors import TuneError
from bottleneck.heads.feature_blocks import take_rows
from bottleneck.runs.predict import class_names_of

if TYPE_CHECKING:  # annotations only: Keras loads lazily, through _tf
    import keras

# Largest difference in probability between the assembled model and the run's head on cached rows.
START_TOLERANCE = 1e-4
# A float16 cache holds rounded features (relative rounding 2**-11); an engine's own difference comes on top.
FLOAT16_FEATURE_TOLERANCE = 2e-3


@dataclass
class Assembled:
    """The end-to-end model of a run and its parts (the parts share their layers with ``model``)."""

    model: keras.Model  # float32 (N, S, S, 3) pixels in 0..255 -> (N, classes) probabilities
    base: keras.Model  # the backbone network inside ``model``, cut at the cache's layer(s)
    head: keras.Model  # features -> probabilities
    features: keras.Model  # pixels -> features (the cache's rows)
    config: ExtractConfig
    classes: np.ndarray  # label of each output column
    class_names: list[str]  # name of each output column
    family: str | None  # backbone family (block names), None for a model file

    @property
    def image_size(self) -> int:
        return int(self.model.input_shape[1])


def head_network(head):
    """A fitted head as a keras.Model from its features to (N, n_classes) probabilities, columns in
    ``head.classes_`` order. Keras heads are copied (fine-tuning trains the copy); ``logreg``
    becomes one Dense softmax layer with its standardisation folded into the weights."""
    keras = _tf.keras()

    if head.name == "logreg":
        return _logreg_network(head)
    model = getattr(head, "model_", None)
    if model is None:
        raise TuneError(
            f"a {head.name!r} head cannot be turned into Keras layers; fine-tune and export take runs of "
            "logreg, linear, mlp, sigmoid and pool-dense heads."
        )
    # A copy: training the assembled model must never change the run's own head (a second fine-tune of the same
    # Run object, or its frozen metrics, would start from the trained weights).
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    model = copy
    if head.name != "sigmoid":
        return model
    inputs = keras.Input(tuple(head.feature_shape_), name="features")
    p = model(inputs)
    # [1 - p, p], the head's predict_proba, as a fixed Dense layer (built-in, exportable).
    two = keras.layers.Dense(
        2,
        name="head_two_class",
        kernel_initializer=keras.initializers.Constant(np.array([[-1.0, 1.0]], np.float32)),
        bias_initializer=keras.initializers.Constant(np.array([1.0, 0.0], np.float32)),
        trainable=False,
    )(p)
    return keras.Model(inputs, two, name="sigmoid_head")


def _logreg_network(head):
    keras = _tf.keras()

    coef = np.asarray(head.coef_, np.float64) / np.asarray(head.scale_, np.float64)
    bias = np.asarray(head.intercept_, np.float64) - coef @ np.asarray(head.mean_, np.float64)
    if coef.shape[0] == 1:
        # Binary: sklearn's [1 - sigmoid(z), sigmoid(z)] is softmax([0, z]).
        coef = np.concatenate([np.zeros_like(coef), coef])
        bias = np.concatenate([[0.0], bias])
    inputs = keras.Input(tuple(head.feature_shape_), name="features")
    x = keras.layers.Flatten(name="head_flatten")(inputs) if len(head.feature_shape_) > 1 else inputs
    out = keras.layers.Dense(
        coef.shape[0],
        activation="softmax",
        name="head_logreg",
        kernel_initializer=keras.initializers.Constant(coef.T.astype(np.float32)),
        bias_initializer=keras.initializers.Constant(bias.astype(np.float32)),
    )(x)
    return keras.Model(inputs, out, name="logreg_head")


def assemble(run) -> Assembled:
    """The run's whole model: its cache's backbone (same weights, image size, layers, pooling, preprocessing)
    and its head on top. Nothing is trainable yet (fine-tuning chooses what to unfreeze)."""
    keras = _tf.keras()

    cache = run.summary["cache"]
    config = ExtractConfig.from_dict(cache["config"])
    features = feature_model_of(config, portable=True)
    shape = tuple(int(d) for d in features.output_shape[1:])
    if shape != tuple(run.head.feature_shape_):
        raise TuneError(
            f"the backbone rebuilt from the run's cache settings gives features of shape {shape}, but the head was "
            f"trained on {tuple(run.head.feature_shape_)}; the backbone files changed since the cache was made."
        )
    head = head_network(run.head)
    model = keras.Model(features.input, head(features.output), name="bottleneck_model")
    model.trainable = False
    base = next(lyr for lyr in features.layers if isinstance(lyr, keras.Model))
    family = None if is_model_path(config.backbone) else get_spec(config.backbone).family
    classes = np.asarray(run.head.classes_)
    return Assembled(
        model, base, head, features, config, classes, class_names_of(classes, cache["class_names"]), family
    )


def check_start(assembled: Assembled, run, cache, images, *, rows: int = 32, seed: int = 0) -> dict:
    """Compare the assembled model with the run's head on cached rows: the images of ``rows`` sampled rows
    (val when the cache has it, else train) through the model, against the head on their cached features.

    Returns {"split", "rows", "difference"} (max |probability difference|). Raises TuneError above
    ``START_TOLERANCE`` on float32 caches. A float16 cache stores rounded features, so there the head part is
    checked exactly (the head network against the head on the model's own features) and the features
    against the cache within float16 rounding.
    """

    split = "val" if "val" in cache.splits else "train"
    n = cache.n(split)
    pick = np.sort(np.random.default_rng(seed).choice(n, size=min(rows, n), replace=False))
    pixels = images.pixels(split, pick)
    stored = take_rows(cache.features(split), pick).astype(np.float32)
    probs = np.asarray(assembled.model.predict_on_batch(pixels), np.float64)
    expected = run.head.predict_proba(stored)
    difference = float(np.abs(probs - expected).max())
    result = {"split": split, "rows": int(len(pick)), "difference": difference}
    if cache.config.dtype == "float32":
        if not difference <= START_TOLERANCE:  # NaN fails too
            raise TuneError(
                f"the model rebuilt from run {run.path} differs from its head on cached rows by {difference:.2g} "
                f"in probability (allowed {START_TOLERANCE:g}); {_CHANGED}"
            )
        return result
    mine = np.asarray(assembled.features.predict_on_batch(pixels), np.float32)
    head_difference = float(
        np.abs(assembled.head.predict_on_batch(mine) - run.head.predict_proba(mine)).max()
    )
    scale = max(float(np.abs(stored).max()), 1e-12)
    feature_difference = float(np.abs(mine.astype(np.float16).astype(np.float32) - stored).max()) / scale
    result |= {"head_difference": head_difference, "feature_difference": feature_difference}
    if not (head_difference <= START_TOLERANCE and feature_difference <= FLOAT16_FEATURE_TOLERANCE):
        raise TuneError(
            f"the model rebuilt from run {run.path} does not reproduce it: head difference {head_difference:.2g} "
            f"in probability (allowed {START_TOLERANCE:g}), feature difference {feature_difference:.2g} of the "
            f"feature scale (allowed {FLOAT16_FEATURE_TOLERANCE:g}); {_CHANGED}"
        )
    return result


_CHANGED = (
    "the backbone weights or the source images changed since the cache was made. Extract again and fit the head "
    "again."
)
