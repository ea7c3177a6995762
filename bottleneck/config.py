"""Typed extraction settings; the cache key is derived from them so no setting can be forgotten."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bottleneck.backbones.onnx_preprocess import CHANNEL_ORDERS, is_onnx_path, parse_triple
from bottleneck.backbones.presets import LAYER_SETS, MULTISCALE_NAME, NETWORK_SETS, TOP, multiscale_layers
from bottleneck.constraints import Boolean, Interval, Options
from bottleneck.errors import BottleneckError
from bottleneck.settings import (
    BATCH_SIZE_SETTING,
    FEATURE,
    IMAGE_SIZE_SETTING,
    ROWS,
    RUN,
    STORAGE,
    THREADS_SETTING,
    WORKERS_SETTING,
    declared,
    setting,
)

POOLINGS = ("avg", "max", "none", "cls", "mean")  # cls, mean: token outputs of ONNX models (mean = avg)
RESIZES = ("squash", "crop", "pad")
DTYPES = ("float32", "float16")
FORMATS = ("zarr", "npy", "h5")
ON_BAD_IMAGE = ("fail", "skip")
ENGINES = ("auto", "tensorflow", "onnx")
PRECISIONS = ("fp32", "int8")
DEVICES = ("auto", "cpu", "gpu")


def layer_names(layer: str | None, pooling: str = "avg") -> tuple[str, ...]:
    """The layer names of a ``layer`` value ("a" or "a,b,c"); () for None (the backbone's default)."""
    if layer is None:
        return ()
    names = tuple(n.strip() for n in str(layer).split(","))
    if not all(names):
        raise BottleneckError(
            f"layer={layer!r} has an empty layer name; pass names separated by single commas, e.g. "
            "layer='top_activation,block6a_expand_activation'."
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BottleneckError(
            f"layer={layer!r} lists {', '.join(repeated)} more than once; list each layer once."
        )
    sets = [n for n in names if n in LAYER_SETS]
    if sets and not (all(n in NETWORK_SETS for n in names) or names == (MULTISCALE_NAME,)):
        raise BottleneckError(
            f"layer={layer!r} mixes the layer set {sets[0]!r} with other names; pass layer={sets[0]!r} alone "
            f"(the network sets {' and '.join(NETWORK_SETS)} combine: layer='blocks,wide'), or list layer names."
        )
    if (len(names) > 1 or sets) and pooling == "none":
        what = f"the layer set {sets[0]!r}" if sets else f"{len(names)} layers"
        raise BottleneckError(
            f"layer={layer!r} lists {what}, whose maps have different sizes, so they can only be "
            "joined after pooling; use pooling='avg' or pooling='max', or pass one layer with pooling='none'."
        )
    return names


def _named_top(layer: str, backbone: str) -> str:
    """``layer`` with ``top`` replaced by the backbone's feature layer name where the registry knows it (else the
    builder resolves it on the network), so "top,a" and "top_activation,a" share a cache key."""
    from bottleneck.backbones.model_file import is_model_path
    from bottleneck.backbones.registry import get_spec

    if is_model_path(backbone):
        return layer
    top = get_spec(backbone).feature_layer
    return ",".join(top if n == TOP and top else n for n in layer_names(layer))


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that decides how features are computed and stored.

    Each field declares its setting once (``bottleneck.settings``): default, constraint, help and role (FEATURE,
    ROWS, STORAGE, RUN: which keys it is in). The cache key, the per-row key, the heads' checks, the checks below,
    the ``extract`` options and the option reference are all derived from these declarations.
    """

    backbone: str = setting(
        "efficientnet_lite0", FEATURE, help="Registry name (see `bottleneck backbones`) or a model file."
    )
    weights: str = setting("imagenet", FEATURE, help="imagenet | none | PATH to a local Keras weights file.")
    image_size: int | None = IMAGE_SIZE_SETTING.field(role=FEATURE)
    # several layers are each pooled, then concatenated in that order; a layer set is resolved to its names (so it
    # shares caches with them); "top" in a list: the feature layer's name
    layer: str | None = setting(
        None,
        FEATURE,
        type=str,
        help="Layer to take features from instead of the backbone's feature layer; several comma-separated "
        "layers are each pooled and concatenated (e.g. top_activation,block6a_expand_activation); "
        "'top' is the backbone's feature layer (the default), 'blocks' reads every block's output and the feature "
        "layer, 'wide' the family's widest points (expand activations, bottleneck middles) and the feature layer "
        "('blocks,wide': both), 'multiscale' a set measured on real data. "
        "`bottleneck backbones NAME --layers` lists the names.",
    )
    pooling: str = setting(
        "avg",
        FEATURE,
        constraint=Options(POOLINGS),
        help="avg | max | none (keep the spatial map); for token outputs of an ONNX model (ViTs): cls (the class "
        "token) | mean (= avg, over all tokens).",
    )
    resize: str = setting(
        "squash",
        FEATURE,
        constraint=Options(RESIZES),
        help="squash (ignore aspect) | crop (centre) | pad (letterbox).",
    )
    dtype: str = setting(
        "float32", FEATURE, constraint=Options(DTYPES), help="float32 | float16 stored features."
    )
    # a different cache on disk, the same rows
    format: str = setting("zarr", STORAGE, constraint=Options(FORMATS), help="zarr | npy | h5.")
    on_bad_image: str = setting(
        "fail",
        ROWS,
        constraint=Options(ON_BAD_IMAGE),
        help="fail (name every bad file) | skip (record and leave out).",
    )
    preprocess: str | None = setting(
        None,
        FEATURE,
        type=str,
        help="For a model-file backbone: caffe | torch | tf | 127 | none (torch: timm / torchvision ImageNet "
        "models; tf: [-1, 1]). An ONNX file may declare it in MODEL.onnx.json instead.",
    )
    # an ONNX model's normalisation when no named mode fits (CLIP, SigLIP, DINOv2 variants): in the key when given
    mean: str | None = setting(
        None,
        FEATURE,
        added=True,
        type=str,
        help="ONNX model file: per-channel mean R,G,B on pixels scaled to 0..1 (as timm states it), with --std; "
        "instead of --preprocess.",
    )
    std: str | None = setting(
        None,
        FEATURE,
        added=True,
        type=str,
        help="ONNX model file: per-channel std R,G,B on pixels scaled to 0..1, with --mean.",
    )
    channels: str | None = setting(
        None,
        FEATURE,
        added=True,
        type=str,
        constraint=[None, Options(CHANNEL_ORDERS)],
        help="ONNX model file: the channel order it takes, rgb | bgr (default: rgb; caffe: bgr).",
    )
    # decides which images get rows
    max_image_pixels: int | None = setting(
        None,
        ROWS,
        type=int,
        constraint=[None, Interval(int, 0, None, example=89_478_485)],
        help="Refuse images larger than this many pixels (decompression-bomb guard; 0 = no limit) (default: ~89M).",
    )
    # fixed batch boundaries = chunk boundaries; does not change features
    batch_size: int = BATCH_SIZE_SETTING.field(
        role=RUN, help="Images per forward pass (= commit granularity)."
    )
    workers: int | None = WORKERS_SETTING.field(role=RUN)
    threads: int | None = THREADS_SETTING.field(role=RUN)
    # equal features within a verified tolerance (README), so not in the key
    engine: str = setting(
        "auto",
        RUN,
        constraint=Options(ENGINES),
        help="auto (fastest verified engine) | tensorflow | onnx (ONNX Runtime, verified against TensorFlow).",
    )
    # the same features within rounding
    xla: bool = setting(
        False, RUN, constraint=Boolean(), flags=("--xla",), help="Compile the TensorFlow engine with XLA."
    )
    # int8 changes the features, so it is in every key
    precision: str = setting(
        "fp32",
        FEATURE,
        added=True,
        constraint=Options(PRECISIONS),
        help="fp32 | int8: int8 runs the ONNX model quantized, calibrated on --calibration train images "
        "(2-3x faster on CPUs with VNNI; other features, so another cache).",
    )
    calibration: int = setting(
        256,
        FEATURE,
        added=True,
        constraint=Interval(int, 1, None, example=256),
        help="int8: calibration images (stratified from train).",
    )
    # JPEGs decoded at 1/2, 1/4 or 1/8 DCT scale: pixels differ slightly, so it is in every key
    fast_decode: bool = setting(
        False,
        FEATURE,
        added=True,
        constraint=Boolean(),
        flags=("--fast-decode",),
        help="Decode JPEGs at a reduced scale (never below the input size) before resizing: several times "
        "faster on large photos; pixels differ slightly, so another cache.",
    )
    # the same features within the engines' verified tolerance, so in no key
    device: str = setting(
        "auto",
        RUN,
        constraint=Options(DEVICES),
        help="auto (a GPU when the engine sees one) | cpu | gpu (an error without one). Same features "
        "within the engines' tolerance.",
    )
    accept_drift: bool = setting(
        False,
        RUN,
        constraint=Boolean(),
        flags=("--accept-drift",),
        help="int8: keep features whose mean cosine to fp32 is below 0.95.",
    )
    # checked with batch_size and format (_check_shard_rows); another layout on disk, the same rows: in the cache
    # key away from its default (older caches keep their keys)
    shard_rows: int | None = setting(
        None,
        STORAGE,
        added=True,
        type=int,
        help="zarr only: store N rows per object (a multiple of --batch-size), so a 10-million-row cache is "
        "thousands of files, not millions. An interrupted run resumes after the last whole shard.",
    )

    def __post_init__(self):
        SETTINGS.validate(dataclasses.asdict(self))  # before any name is resolved or work starts
        self._check_model_preprocessing()
        if self.layer == MULTISCALE_NAME:
            object.__setattr__(self, "layer", multiscale_layers(self.backbone))
        if self.layer is not None and str(self.layer).strip() == TOP:
            object.__setattr__(self, "layer", None)  # the default: one cache whichever way it is asked for
        elif self.layer is not None and TOP in layer_names(self.layer, self.pooling):
            object.__setattr__(self, "layer", _named_top(self.layer, self.backbone))
        if self.layer is not None:
            # One spelling per layer list, so "a, b" and "a,b" share a cache key.
            object.__setattr__(self, "layer", ",".join(layer_names(self.layer, self.pooling)))
        if self.precision == "fp32" and self.calibration != 256:
            object.__setattr__(self, "calibration", 256)  # meaningless without int8: one key per fp32 cache
        if self.shard_rows is not None:
            self._check_shard_rows()
        if self.xla and (self.engine == "onnx" or self.precision == "int8"):
            raise BottleneckError(
                f"xla=True compiles the TensorFlow engine, but {'engine' if self.engine == 'onnx' else 'precision'}="
                f"{self.engine if self.engine == 'onnx' else self.precision!r} runs ONNX Runtime; leave out xla=True, "
                "or pass engine='tensorflow' with precision='fp32'."
            )

    def _check_model_preprocessing(self) -> None:
        """mean / std / channels and the token poolings belong to ONNX model files; one spelling of each."""
        if self.pooling == "mean":
            object.__setattr__(self, "pooling", "avg")  # one cache for both spellings
        for name in ("mean", "std"):
            object.__setattr__(self, name, parse_triple(name, getattr(self, name)))
        if is_onnx_path(self.backbone):
            return
        given = [
            f"{n}={getattr(self, n)!r}" for n in ("mean", "std", "channels") if getattr(self, n) is not None
        ]
        if self.pooling == "cls":
            given.append("pooling='cls'")
        if given:
            raise BottleneckError(
                f"{', '.join(given)} apply to an ONNX model file (backbone='model.onnx'); "
                f"{self.backbone} has its preprocessing built in (a Keras model file takes preprocess=) and "
                "image-map features: leave them out."
            )

    def _check_shard_rows(self) -> None:
        rows, bs = self.shard_rows, self.batch_size
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise BottleneckError(
                f"shard_rows={rows!r} is not a positive number of rows; pass a multiple of batch_size={bs}, "
                f"e.g. shard_rows={bs * 128}."
            )
        if rows % bs:
            below = rows // bs * bs
            such = f"{below} or {below + bs}" if below else f"{bs} or {2 * bs}"
            raise BottleneckError(
                f"shard_rows={rows} is not a multiple of batch_size={bs}; pass a multiple such as {such}."
            )
        if self.format != "zarr":
            raise BottleneckError(
                f"shard_rows={rows} needs format='zarr' (format={self.format!r} keeps each split's features in "
                "one file already); pass format='zarr', or leave shard_rows out."
            )

    @classmethod
    def names(cls, *roles: str) -> tuple[str, ...]:
        """The names of the settings with any of these roles (all of them without roles), in declaration order."""
        return tuple(s.name for s in SETTINGS if not roles or s.role in roles)

    def key_fields(self) -> dict:
        """The settings in the cache key (all but RUN ones), as a JSON-ready dict; an ``added`` setting only
        when it is not at its default (see ``Setting.added``)."""
        return {
            s.name: getattr(self, s.name)
            for s in SETTINGS
            if s.role != RUN and not (s.added and getattr(self, s.name) == s.default)
        }

    @classmethod
    def default_of(cls, name: str):
        """A field's default: what a config saved before the field existed meant."""
        return next(f.default for f in dataclasses.fields(cls) if f.name == name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ExtractConfig:
        """A saved config. Its ``device`` is left at "auto": where a cache was computed says nothing about the
        machine that reads it back (a GPU run's cache is predicted from on a laptop)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"device"}
        d = {k: v for k, v in d.items() if k in names}
        if d.get("xla") and (d.get("engine") == "onnx" or d.get("precision") == "int8"):
            d["xla"] = False  # accepted (and ignored) before it was refused: such caches still open
        return cls(**d)

    def replace(self, **changes) -> ExtractConfig:
        return dataclasses.replace(self, **changes)


SETTINGS = declared(ExtractConfig)  # every setting, as declared in the fields above

# The lists other modules check against, derived here so that they cannot disagree with the fields.
FEATURE_SETTINGS = ExtractConfig.names(FEATURE)  # what a head compares between its cache and another
ROW_NEUTRAL_SETTINGS = ExtractConfig.names(ROWS, STORAGE)  # left out of the per-row (donor) key
