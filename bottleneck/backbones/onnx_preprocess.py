"""The preprocessing an ONNX model file declares: a named mode (``--preprocess``) or per-channel mean/std and
channel order (``--mean/--std/--channels``), from the call or from ``MODEL.onnx.json`` beside the file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bottleneck._io import write_json_atomic
from bottleneck.backbones.spec import PREPROCESS_MODES
from bottleneck.errors import BackboneError, first_line

SUFFIX = ".onnx"
CHANNEL_ORDERS = ("rgb", "bgr")
SIDECAR_KEYS = ("preprocess", "mean", "std", "channels", "image_size")

# Named modes as per-channel (mean, std) on 0..255 RGB pixels; channels: the order the model takes.
# Keras imagenet_utils' constants (caffe's mean is stated in BGR order there; here in RGB order, then flipped).
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NAMED = {
    "torch": ("rgb", tuple(255 * m for m in _TORCH_MEAN), tuple(255 * s for s in _TORCH_STD)),
    "tf": ("rgb", (127.5,) * 3, (127.5,) * 3),
    "127": ("rgb", (127.0,) * 3, (128.0,) * 3),
    "caffe": ("bgr", (123.68, 116.779, 103.939), (1.0,) * 3),
    "none": ("rgb", (0.0,) * 3, (1.0,) * 3),
}


def is_onnx_path(backbone) -> bool:
    """A backbone given as an ONNX model file (by its name: ``.onnx``)."""
    return str(backbone).lower().endswith(SUFFIX)


def sidecar_path(path) -> Path:
    """Where a model's declared preprocessing lives: ``MODEL.onnx.json`` beside ``MODEL.onnx``."""
    return Path(str(path) + ".json")


@dataclass(frozen=True)
class Normalization:
    """How 0..255 RGB pixels become the model's input: ``(x - mean) / std`` per channel (stated in RGB order),
    then the channels put in ``channels`` order."""

    channels: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, S, S, 3) float32 in the model's channel order (NHWC)."""
        x = (pixels.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        return x[..., ::-1] if self.channels == "bgr" else x


def parse_triple(name: str, value) -> str | None:
    """``mean``/``std`` given as "R,G,B" or three numbers, in one spelling (so equal values share a cache key);
    values on pixels scaled to 0..1, the timm / torchvision / open_clip convention."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 3 or not all(np.isfinite(numbers)):
        raise BackboneError(
            f"{name}={value!r} is not three numbers; pass {name}='R,G,B' on pixels scaled to 0..1, e.g. "
            f"{name}='{'0.485,0.456,0.406' if name == 'mean' else '0.229,0.224,0.225'}'."
        )
    if name == "std" and min(numbers) <= 0:
        raise BackboneError(f"std={value!r} has a value <= 0; every channel's std must be positive.")
    if max(abs(v) for v in numbers) > 1.5:
        scaled = ",".join(f"{v / 255:.4g}" for v in numbers)
        raise BackboneError(
            f"{name}={value!r} looks like 0..255 pixel units; {name} is on pixels scaled to 0..1 (as timm and "
            f"torchvision state it): pass {name}='{scaled}'."
        )
    return ",".join(repr(v) for v in numbers)


def normalization(
    preprocess: str | None, mean: str | None, std: str | None, channels: str | None
) -> Normalization:
    """The Normalization of the declared settings (a named mode, or mean and std on 0..1 pixels)."""
    if mean is not None or std is not None:
        triples = [tuple(255.0 * float(v) for v in t.split(",")) for t in (mean, std)]
        return Normalization(channels or "rgb", *triples)
    order, m, s = NAMED[preprocess]
    return Normalization(channels or order, m, s)


def read_sidecar(path) -> dict:
    """The settings in ``MODEL.onnx.json`` (empty when there is none), checked."""
    side = sidecar_path(path)
    if not side.exists():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise BackboneError(
            f"{side} is not readable JSON ({first_line(exc)}); fix it or remove it (it declares the model's "
            'preprocessing: {"preprocess": "torch"}).'
        ) from None
    if not isinstance(data, dict):
        raise BackboneError(
            f'{side} holds {type(data).__name__}, not an object like {{"preprocess": "torch"}}.'
        )
    unknown = sorted(set(data) - set(SIDECAR_KEYS))
    if unknown:
        raise BackboneError(
            f"{side} has unknown key(s) {', '.join(unknown)}; it may hold {', '.join(SIDECAR_KEYS)}."
        )
    for key in ("mean", "std"):
        if isinstance(data.get(key), list):
            data[key] = ",".join(str(v) for v in data[key])
    return data


def save_onnx_preprocessing(
    model,
    *,
    preprocess: str | None = None,
    mean=None,
    std=None,
    channels: str | None = None,
    image_size: int | None = None,
    force: bool = False,
) -> Path:
    """Write ``MODEL.onnx.json`` beside an ONNX model so that the model file travels with its preprocessing.

    Parameters
    ----------
    model : path of the ``.onnx`` file.
    preprocess : a named mode (caffe, torch, tf, 127, none), or leave it out and give ``mean`` and ``std`` (three
        numbers each, on pixels scaled to 0..1) and optionally ``channels`` ("rgb" | "bgr").
    image_size : the input side, for a model whose graph leaves it free.
    force : replace a sidecar that is already there.

    Returns
    -------
    The sidecar's path. An existing sidecar is never replaced without ``force``.
    """
    side = sidecar_path(model)
    if not is_onnx_path(model) or not Path(model).is_file():
        raise BackboneError(f"{model} is not an ONNX model file; pass the path of a .onnx file.")
    if side.exists() and not force:
        raise BackboneError(f"{side} exists; pass force=True to replace it.")
    settings = check_preprocessing(
        str(model), preprocess, parse_triple("mean", mean), parse_triple("std", std), channels
    )
    if settings is None:
        raise BackboneError("save_onnx_preprocessing needs preprocess= or mean= and std=.")
    data = {
        k: v
        for k, v in zip(("preprocess", "mean", "std", "channels"), settings, strict=True)
        if v is not None
    }
    if image_size is not None:
        data["image_size"] = int(image_size)
    write_json_atomic(side, data)
    return side


def check_preprocessing(path: str, preprocess, mean, std, channels):
    """(preprocess, mean, std, channels) checked to describe one normalisation; None when none is declared."""
    if channels is not None and channels not in CHANNEL_ORDERS:
        raise BackboneError(f"channels={channels!r} is not one of rgb, bgr.")
    if (mean is None) != (std is None):
        given, missing = ("mean", "std") if std is None else ("std", "mean")
        raise BackboneError(
            f"{given}= is given without {missing}=; pass both (three numbers each, on 0..1 pixels)."
        )
    if mean is not None and preprocess is not None:
        raise BackboneError(
            f"preprocess={preprocess!r} and mean=/std= both describe {path}'s normalisation; pass one of them."
        )
    if preprocess is not None and preprocess not in PREPROCESS_MODES:
        raise BackboneError(f"preprocess={preprocess!r} is not one of {', '.join(PREPROCESS_MODES)}.")
    if preprocess is None and mean is None:
        return None
    return preprocess, mean, std, channels
