"""Typed extraction settings; the cache key is derived from them so no setting can be forgotten."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from bottleneck.backbones.presets import LAYER_SETS, MULTISCALE_NAME, NETWORK_SETS, TOP, multiscale_layers
from bottleneck.constraints import (
    BATCH_SIZE,
    IMAGE_SIZE,
    THREADS,
    Boolean,
    Interval,
    Options,
    validate_params,
)
from bottleneck.errors import BottleneckError

POOLINGS = ("avg", "max", "none")
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


# What a setting decides; each ExtractConfig field declares one, and every list of settings is derived from it:
FEATURE = "feature"  # the value of each row: in the cache key, the per-row (donor) key and the heads' checks
ROWS = "rows"  # which images get rows, not their values: in the cache key only
STORAGE = "storage"  # how the rows are stored on disk: in the cache key only
RUN = "run"  # how the work is done (speed, threads, engine): in no key
ROLES = (FEATURE, ROWS, STORAGE, RUN)


def _setting(default, role: str, *, added: bool = False, **kw):
    """A field with its role. ``added`` marks a setting introduced after caches existed: it enters the key only
    when it differs from its default, so every cache and head made before it keeps its key and still matches."""
    assert role in ROLES, role
    return field(default=default, metadata={"role": role, "added": added}, **kw)


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that decides how features are computed and stored.

    Each field's metadata names its role (FEATURE, ROWS, STORAGE, RUN); a field without one is a FEATURE, so a
    new setting changes the cache key, the per-row key and the heads' checks by default: the safe direction.
    """

    backbone: str = "efficientnet_lite0"  # registry name, or a path to a Keras model file
    weights: str = "imagenet"  # "imagenet" | "none" | path to a local weights file
    image_size: int | None = None  # square input side in pixels; None = the backbone's default
    # named layer to read features from, or several comma-separated (each pooled, then concatenated in that
    # order); "blocks" = every block's output and the feature layer; "wide" = the family's widest points and the
    # feature layer ("blocks,wide": both); "multiscale" = the backbone's validated set (resolved to its names, so
    # it shares caches with them); None or "top" = the backbone's feature layer ("top" in a list: its name)
    layer: str | None = None
    pooling: str = "avg"  # "avg" | "max" | "none" (keep the spatial map)
    resize: str = "squash"  # "squash" (ignore aspect) | "crop" (centre crop) | "pad" (letterbox)
    dtype: str = "float32"  # stored feature dtype
    format: str = _setting("zarr", STORAGE)  # store format: a different cache on disk, the same rows
    on_bad_image: str = _setting("fail", ROWS)  # "fail" | "skip"; decides which rows exist
    preprocess: str | None = None  # only for custom model files: caffe|torch|tf|127|none
    # decompression-bomb guard; None = Pillow's default (~89 Mpx), 0 = none; decides which images get rows
    max_image_pixels: int | None = _setting(None, ROWS)
    batch_size: int = _setting(32, RUN)  # fixed batch boundaries = chunk boundaries; does not change features
    workers: int | None = _setting(None, RUN)  # image decode threads; None = number of cores
    threads: int | None = _setting(None, RUN)  # ONNX Runtime / TensorFlow compute threads; None = cores
    # auto | tensorflow | onnx: equal features within a verified tolerance (README), so not in the key
    engine: str = _setting("auto", RUN)
    xla: bool = _setting(False, RUN)  # compile the TensorFlow engine with XLA (same features within rounding)
    # "fp32" | "int8": int8 runs the ONNX model quantized (static, QDQ, per-channel), calibrated on
    # ``calibration`` stratified train images; it changes the features, so it is in every key
    precision: str = _setting("fp32", FEATURE, added=True)
    calibration: int = _setting(256, FEATURE, added=True)  # calibration images for int8 (ignored for fp32)
    # decode JPEGs at a reduced DCT scale (1/2, 1/4, 1/8, never below the input side) before resizing: several
    # times faster on photos much larger than the input, pixels differ slightly, so it is in every key
    fast_decode: bool = _setting(False, FEATURE, added=True)
    # where the backbone runs: "auto" (a GPU when the engine sees one, else the CPU) | "cpu" | "gpu" (an error
    # without one); the same features within the engines' verified tolerance, so in no key
    device: str = _setting("auto", RUN)
    accept_drift: bool = _setting(
        False, RUN
    )  # keep an int8 model whose features drift below the cosine floor
    # zarr only: rows per stored object (a zarr v3 shard of whole chunks), so a 10-million-row cache is thousands
    # of files, not millions; a multiple of batch_size; None = one object per chunk. Another layout on disk, the
    # same rows, so in the cache key (away from its default: caches made before it keep their keys)
    shard_rows: int | None = _setting(None, STORAGE, added=True)

    def __post_init__(self):
        validate_params(dataclasses.asdict(self), CONSTRAINTS)  # before any name is resolved or work starts
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
        """The names of the fields with any of these roles, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("role", FEATURE) in roles)

    def key_fields(self) -> dict:
        """The settings in the cache key (all but RUN ones), as a JSON-ready dict; an ``added`` setting only
        when it is not at its default (see ``_setting``)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("role", FEATURE) == RUN:
                continue
            value = getattr(self, f.name)
            if f.metadata.get("added") and value == f.default:
                continue
            out[f.name] = value
        return out

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


# Each setting's declared constraint (``bottleneck.constraints``), checked first by ``__post_init__``. ``layer``,
# ``preprocess``, ``backbone`` and ``weights`` are names resolved (and refused) where they are known; ``shard_rows``
# is checked with ``batch_size`` and ``format`` (``_check_shard_rows``).
CONSTRAINTS = {
    "image_size": IMAGE_SIZE,  # a square input side in pixels
    "pooling": Options(POOLINGS),
    "resize": Options(RESIZES),
    "dtype": Options(DTYPES),
    "format": Options(FORMATS),
    "on_bad_image": Options(ON_BAD_IMAGE),
    "max_image_pixels": [None, Interval(int, 0, None, example=89_478_485)],  # 0: no limit
    "batch_size": BATCH_SIZE,
    "workers": THREADS,  # None: the number of cores
    "threads": THREADS,
    "engine": Options(ENGINES),
    "xla": Boolean(),
    "precision": Options(PRECISIONS),
    "calibration": Interval(int, 1, None, example=256),
    "fast_decode": Boolean(),
    "device": Options(DEVICES),
    "accept_drift": Boolean(),
}

# The lists other modules check against, derived here so that they cannot disagree with the fields.
FEATURE_SETTINGS = ExtractConfig.names(FEATURE)  # what a head compares between its cache and another
ROW_NEUTRAL_SETTINGS = ExtractConfig.names(ROWS, STORAGE)  # left out of the per-row (donor) key
