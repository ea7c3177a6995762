"""The backbone spec: a frozen description of one registered backbone (no TensorFlow, no Keras)."""

from __future__ import annotations

from dataclasses import dataclass

PREPROCESS_MODES = ("caffe", "torch", "tf", "127", "none")


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # registry name, lower_snake_case
    constructor: (
        str  # "module:callable" resolved lazily; called as f(include_top=False, weights=..., input_shape=...)
    )
    preprocess: str  # one of PREPROCESS_MODES: how 0..255 RGB pixels become model input
    input_size: int  # default square input side in pixels
    feature_dim: int  # channels of the default feature layer (= pooled feature length)
    feature_hw: tuple[int, int]  # spatial size of the default feature map at input_size
    params: int  # parameter count of the headless network (for `bottleneck backbones`)
    family: str  # e.g. "vgg", "resnet", "efficientnet"
    feature_layer: str | None = None  # None: the output of the headless network
    min_size: int = 32  # smallest input side the architecture accepts
    weights: str = (
        "keras"  # where "imagenet" weights come from: "keras" (download) | "package:<dist>" | "file"
    )
    top_constructor: str | None = (
        None  # "module:callable" for the full classifier (for `classify`); None = constructor
    )

    def feature_shape(self, pooling: str = "avg") -> tuple[int, ...]:
        """Per-image feature shape at the default input size."""
        if pooling == "none":
            return (*self.feature_hw, self.feature_dim)
        return (self.feature_dim,)
