"""Layers of a backbone: listing them with their shapes, and cutting a network at named layers."""

from __future__ import annotations

import functools

from bottleneck import _tf
from bottleneck.backbones import get_spec
from bottleneck.errors import BackboneError, suggest

# How many layer names an unknown-layer error lists (counted back from the output).
LAYERS_LISTED = 10


def list_layers(backbone: str, *, image_size: int | None = None) -> list[tuple[str, tuple[int, ...] | None]]:
    """(name, output shape without the batch axis) of every layer of a registered backbone, input to output.

    The names are what ``layer`` accepts; the shape is None for a layer with no single output. Built with
    random weights: shapes do not depend on them.
    """
    keras = _tf.keras()
    from bottleneck.backbones import build

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


def read_at(base, layers: tuple[str, ...], name: str):
    """``base`` cut so that it outputs the activations of ``layers`` (spatial maps kept; a list if several)."""
    keras = _tf.keras()

    names = [lyr.name for lyr in base.layers if not isinstance(lyr, keras.layers.InputLayer)]
    outputs = []
    for layer in layers:
        if layer not in names:
            tail = names[-LAYERS_LISTED:]
            raise BackboneError(
                f"unknown layer {layer!r} in {name}.{suggest(layer, names)} The last {len(tail)} of its "
                f"{len(names)} layers are: {', '.join(tail)}; pass one of its layer names "
                "(`bottleneck backbones NAME --layers` lists them all)."
            )
        try:
            output = base.get_layer(layer).output
        except (AttributeError, ValueError) as exc:  # a layer used at several places has no single output
            from bottleneck.backbones.build import _first_line

            raise BackboneError(
                f"layer {layer!r} of {name} has no single output ({_first_line(exc)}); pick another layer."
            ) from None
        if not hasattr(output, "shape"):
            raise BackboneError(
                f"layer {layer!r} of {name} has several outputs; pick a layer with one output."
            )
        outputs.append(output)
    return keras.Model(
        base.inputs, outputs if len(outputs) > 1 else outputs[0], name=f"{base.name}_to_{layers[-1]}"
    )
