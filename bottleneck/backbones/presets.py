"""Named layer sets: ``blocks`` (every block's output) and ``multiscale`` (a set validated on real data)."""

from __future__ import annotations

from bottleneck.errors import BackboneError

# Lite0's top activation plus the expanded inputs of its blocks 6d (7x7) and 6a (14x14), each average
# pooled: 3104-d. On Fashion-MNIST they beat the top layer alone by 1.6 points of test accuracy (README), because
# 28x28 grayscale clothing is far from ImageNet and mid-level features transfer better than the most semantic.
LITE0_MULTISCALE_LAYERS = "top_activation,block6d_expand_activation,block6a_expand_activation"

# backbone -> its measured multi-scale set. Only sets measured on real data belong here.
MULTISCALE = {"efficientnet_lite0": LITE0_MULTISCALE_LAYERS}

BLOCKS = (
    "blocks"  # the output of every block, then the backbone's feature layer: resolved on the built network
)
MULTISCALE_NAME = "multiscale"
LAYER_SETS = (BLOCKS, MULTISCALE_NAME)


def multiscale_layers(backbone: str) -> str:
    """The validated multi-scale layer list of ``backbone`` ("a,b,c"); BackboneError where none was measured."""
    if backbone not in MULTISCALE:
        raise BackboneError(
            f"layer='multiscale' has not been measured for {backbone} (only for {', '.join(MULTISCALE)}); use "
            "layer='blocks' and `bottleneck compare --layer-search greedy` to find a set, or name the layers."
        )
    return MULTISCALE[backbone]


def example_layers(arg: str | None, backbone: str = "efficientnet_lite0") -> str | None:
    """The layer setting of the example scripts' ``--layer``: unset -> LITE0_MULTISCALE_LAYERS for Lite0 (the
    backbone's own feature layer for others), "default" -> the backbone's own feature layer, else as given."""
    if arg is None:
        return LITE0_MULTISCALE_LAYERS if backbone == "efficientnet_lite0" else None
    return None if arg == "default" else arg
