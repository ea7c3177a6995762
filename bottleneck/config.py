"""Typed extraction settings; the cache key is derived from them so no setting can be forgotten."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from bottleneck.errors import BottleneckError, one_of

POOLINGS = ("avg", "max", "none")
RESIZES = ("squash", "crop", "pad")
DTYPES = ("float32", "float16")
FORMATS = ("zarr", "npy", "h5")
ON_BAD_IMAGE = ("fail", "skip")
ENGINES = ("auto", "tensorflow", "onnx")


def layer_names(layer: str | None, pooling: str = "avg") -> tuple[str, ...]:
    """The layer names of a ``--layer`` value ("a" or "a,b,c"); () for None (the backbone's default)."""
    if layer is None:
        return ()
    names = tuple(n.strip() for n in str(layer).split(","))
    if not all(names):
        raise BottleneckError(
            f"--layer {layer!r} has an empty layer name; pass names separated by single commas, e.g. "
            "top_activation,block6a_expand_activation."
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BottleneckError(f"--layer lists {', '.join(repeated)} more than once; list each layer once.")
    if len(names) > 1 and pooling == "none":
        raise BottleneckError(
            f"--layer lists {len(names)} layers, whose maps have different sizes, so they can only be joined "
            "after pooling; use --pooling avg or max, or pass one layer with --pooling none."
        )
    return names


def _nokey(default, **kw):
    """A setting that does not change the features (so it stays out of the cache key)."""
    return field(default=default, metadata={"key": False}, **kw)


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that decides how features are computed and stored.

    Fields are part of the cache key unless marked with ``metadata={"key": False}``;
    a new field therefore changes the key by default, which is the safe direction.
    """

    backbone: str = "efficientnet_lite0"  # registry name, or a path to a Keras model file
    weights: str = "imagenet"  # "imagenet" | "none" | path to a local weights file
    image_size: int | None = None  # square input side in pixels; None = the backbone's default
    # named layer to read features from, or several comma-separated (each pooled, then concatenated in that
    # order); None = the backbone's feature layer
    layer: str | None = None
    pooling: str = "avg"  # "avg" | "max" | "none" (keep the spatial map)
    resize: str = "squash"  # "squash" (ignore aspect) | "crop" (centre crop) | "pad" (letterbox)
    dtype: str = "float32"  # stored feature dtype
    format: str = "zarr"  # store format; part of the key because it is a different cache on disk
    on_bad_image: str = "fail"  # "fail" | "skip"; decides which rows exist
    preprocess: str | None = None  # only for custom model files: caffe|torch|tf|127|none
    # decompression-bomb guard; None = Pillow's default (~89 Mpx), 0 = none
    max_image_pixels: int | None = None
    batch_size: int = _nokey(32)  # fixed batch boundaries = chunk boundaries; does not change features
    workers: int | None = _nokey(None)  # decode threads; None = number of cores
    # auto | tensorflow | onnx: equal features within a verified tolerance (README), so not in the key
    engine: str = _nokey("auto")
    xla: bool = _nokey(False)  # compile the TensorFlow engine with XLA (same features within float rounding)

    def __post_init__(self):
        if self.layer is not None:
            # One spelling per layer list, so "a, b" and "a,b" share a cache key.
            object.__setattr__(self, "layer", ",".join(layer_names(self.layer, self.pooling)))
        for name, choices in (
            ("pooling", POOLINGS),
            ("resize", RESIZES),
            ("dtype", DTYPES),
            ("format", FORMATS),
            ("on_bad_image", ON_BAD_IMAGE),
            ("engine", ENGINES),
        ):
            if getattr(self, name) not in choices:
                raise one_of(name.replace("_", "-"), getattr(self, name), choices)
        if self.image_size is not None and not (16 <= int(self.image_size) <= 2048):
            raise one_of("image-size", self.image_size, ["an integer from 16 to 2048"])
        if self.batch_size < 1:
            raise one_of("batch-size", self.batch_size, ["a positive integer"])
        if self.max_image_pixels is not None and self.max_image_pixels < 0:
            raise one_of("max-image-pixels", self.max_image_pixels, ["a pixel count, or 0 for no limit"])

    def key_fields(self) -> dict:
        """The settings that change the features, as a JSON-ready dict."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("key", True)
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ExtractConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes) -> ExtractConfig:
        return dataclasses.replace(self, **changes)
