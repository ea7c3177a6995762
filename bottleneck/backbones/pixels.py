"""The ``pixels`` backbone: the resized image itself, flattened. The baseline that says whether transfer helps."""

from __future__ import annotations

from bottleneck import _tf
from bottleneck.errors import BackboneError


def Pixels(include_top: bool = False, weights=None, input_shape=(32, 32, 3)):  # noqa: N802 (Keras' spelling)
    """(N, S, S, 3) pixels (0..255, float) -> (N, S*S*3) the same values, flattened (row-major: y, x, channel)."""
    keras = _tf.keras()
    if include_top:
        raise BackboneError(
            "pixels is a baseline, not an ImageNet classifier; classify with a real backbone."
        )
    if weights not in (None, "imagenet", "none"):
        raise BackboneError(f"pixels has no weights; leave out weights={weights!r}.")
    inputs = keras.Input(input_shape, name="image")
    return keras.Model(inputs, keras.layers.Flatten(name="pixels_flat")(inputs), name="pixel_values")
