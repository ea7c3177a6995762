"""Named layer sets: ``top``, ``blocks`` (every block's output), ``wide`` (a family's widest points) and
``multiscale`` (a set validated on real data)."""

from __future__ import annotations

import re

from bottleneck.errors import BackboneError

# Lite0's top activation plus the expanded inputs of its blocks 6d (7x7) and 6a (14x14), each average
# pooled: 3104-d. On Fashion-MNIST they beat the top layer alone by 1.6 points of test accuracy (README), because
# 28x28 grayscale clothing is far from ImageNet and mid-level features transfer better than the most semantic.
LITE0_MULTISCALE_LAYERS = "top_activation,block6d_expand_activation,block6a_expand_activation"

# backbone -> its measured multi-scale set. Only sets measured on real data belong here.
MULTISCALE = {"efficientnet_lite0": LITE0_MULTISCALE_LAYERS}

TOP = "top"  # the backbone's feature layer (what a cache without --layer holds), by its name
BLOCKS = "blocks"  # the output of every block, then the feature layer: resolved on the built network
WIDE = (
    "wide"  # the family's widest points that are not block outputs, then the feature layer: resolved likewise
)
MULTISCALE_NAME = "multiscale"
# Sets resolved on the built network (they may be combined: "blocks,wide" reads both in one pass).
NETWORK_SETS = (BLOCKS, WIDE)
LAYER_SETS = (BLOCKS, WIDE, MULTISCALE_NAME)

# family -> pattern of its widest layers that are not block outputs: the expand activations of inverted
# residual blocks (EfficientNet, EfficientNet-Lite, MobileNetV2: 4-6x the block's width) and the middle of
# ResNet bottlenecks (the 3x3 conv's activation). Block outputs are narrow by design (a bottleneck), and on
# Fashion-MNIST the expand activations were the layers that carried most (README, "Which strategy?").
WIDE_PATTERNS = {
    "efficientnet": r"^block\d+[a-z]_expand_activation$",
    "efficientnet_v2": r"^block\d+[a-z]_expand_activation$",
    "efficientnet_lite": r"^block\d+[a-z]_expand_activation$",
    "mobilenet_v2": r"^block_\d+_expand_relu$",
    "resnet": r"^conv\d_block\d+_2_relu$",
    "resnet_v2": r"^conv\d_block\d+_2_relu$",
}


def is_wide(name: str, family: str | None) -> bool:
    """Whether layer ``name`` is one of ``family``'s wide points (see WIDE_PATTERNS)."""
    pattern = WIDE_PATTERNS.get(family or "")
    return pattern is not None and re.search(pattern, name) is not None


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
    backbone's own feature layer for others), else as given ("top": the backbone's feature layer)."""
    if arg is None:
        return LITE0_MULTISCALE_LAYERS if backbone == "efficientnet_lite0" else None
    return arg
