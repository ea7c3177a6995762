"""Layers of a backbone: listing them with their output shapes (what ``--layer`` accepts)."""

from __future__ import annotations

import functools

from bottleneck import _tf
from bottleneck.backbones import build, get_spec


def list_layers(backbone: str, *, image_size: int | None = None) -> list[tuple[str, tuple[int, ...] | None]]:
    """(name, output shape without the batch axis) of every layer of a registered backbone, input to output.

    The names are what ``layer`` accepts; the shape is None for a layer with no single output. Built with
    random weights: shapes do not depend on them.
    """
    keras = _tf.keras()

    spec = get_spec(backbone)
    base = build._registry_backbone(spec, "none", build._check_size(spec, image_size))
    rows = []
    for lyr in base.layers:
        if isinstance(lyr, keras.layers.InputLayer):
            continue
        try:
            shape = tuple(int(d) for d in lyr.output.shape[1:])
        except (AttributeError, ValueError, TypeError):  # shared layers and multi-output layers
            shape = None
        rows.append((lyr.name, shape))
    return rows


@functools.lru_cache(maxsize=16)
def feature_layer_name(backbone: str) -> str:
    """The name of a registered backbone's feature layer (``top``): its spec's, else the headless network's last
    layer. Builds the network with random weights the first time (names do not depend on weights or size)."""
    spec = get_spec(backbone)
    return spec.feature_layer or list_layers(backbone)[-1][0]
