"""The one builder of backbone networks: feature models (read at layers, pooled) and ImageNet classifiers, preprocessing inside."""

from __future__ import annotations

import importlib
import operator
import random
from contextlib import contextmanager
from pathlib import Path

from bottleneck import _tf
from bottleneck.backbones import PREPROCESS_MODES, BackboneSpec, get_spec
from bottleneck.backbones.blocks import network_sets
from bottleneck.backbones.keras_weights import fold_efficientnet_rescaling, load_weights, weights_file
from bottleneck.backbones.model_file import input_size, is_model_path, load_model_file
from bottleneck.backbones.presets import NETWORK_SETS, TOP
from bottleneck.config import POOLINGS, layer_names
from bottleneck.constraints import IMAGE_SIZE, check
from bottleneck.errors import BackboneError, BottleneckError, first_line, one_of, suggest


@contextmanager
def keras_default_seed(seed: int):
    """Make Keras' unseeded initializers draw fixed seeds while a model is built, and leave no trace.

    Keras takes the seed of every initializer built without one from Python's global ``random``
    (``keras.src.random.make_default_seed``). Seeding it for the build, then putting the caller's state back,
    makes random weights a pure function of the config without reseeding the process (which
    ``keras.utils.set_random_seed`` would do for Python, NumPy and TensorFlow). Same values as a build after
    ``set_random_seed(seed)``, so caches made that way stay valid.
    """
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def require_preprocess(path: str, preprocess: str | None) -> str:
    """The preprocess mode a model file needs, checked: bottleneck cannot know how a user's model scales pixels."""
    if preprocess is None:
        raise BackboneError(
            f"a model file ({path}) needs preprocess= (how the model expects 0..255 RGB pixels to be scaled): "
            f"choose {', '.join(PREPROCESS_MODES)}, e.g. preprocess='tf' for [-1, 1]."
        )
    if preprocess not in PREPROCESS_MODES:
        raise one_of("preprocess", preprocess, PREPROCESS_MODES)
    return preprocess


def build_backbone(
    backbone: str,
    *,
    weights: str = "imagenet",
    image_size: int | None = None,
    preprocess: str | None = None,
    include_top: bool = False,
):
    """The one builder of networks: (keras.Model on preprocessed input, preprocess mode, input side, name).

    ``backbone`` is a registry name or a saved Keras model file (then ``preprocess`` is required and the
    file's own weights are used). ``include_top`` gives the ImageNet classifier (for ``classify``) instead of
    the headless network (for features). ``weights``: "imagenet", "none" (random) or a path to a weights file
    of this backbone.
    """
    if is_model_path(backbone):
        model, mode, size = _custom_backbone(backbone, weights, image_size, preprocess)
        return model, mode, size, Path(backbone).stem or "custom"
    spec = get_spec(backbone)
    if preprocess is not None and preprocess != spec.preprocess:
        raise BackboneError(
            f"preprocess={preprocess!r} does not apply to {spec.name}: its preprocessing is fixed "
            f"({spec.preprocess}); drop it (it is only for model files)."
        )
    size = _check_size(spec, image_size)
    # Random weights (weights="none") must still be a pure function of the settings (the cache key).
    with keras_default_seed(0):
        model = _registry_backbone(spec, weights, size, include_top)
    return model, spec.preprocess, size, spec.name


def build_feature_model(
    backbone: str,
    *,
    weights: str = "imagenet",
    image_size: int | None = None,
    layer: str | None = None,
    pooling: str = "avg",
    preprocess: str | None = None,
    portable: bool = False,
):
    """A frozen keras.Model: float32 (N, S, S, 3) RGB pixels in 0..255 -> float32 features.

    Output is (N, C) for ``pooling`` "avg"/"max", or (N, h, w, C) for "none"; a layer whose output is already a
    vector gives (N, C) whatever the pooling. ``layer`` may list several comma-separated layers: each is pooled
    and the vectors are concatenated in the order given (multi-scale features). S is ``image_size`` or the
    backbone's default. See ``build_backbone`` for ``backbone``, ``weights`` and ``preprocess``. The
    preprocessing of the spec is the model's first layer, so callers feed raw pixels. ``portable`` writes it
    with built-in Keras layers only (see ``portable_preprocess``), for models that must load without bottleneck.
    ``layer="blocks"`` reads every block's output and then the feature layer (``blocks.block_outputs``),
    ``layer="wide"`` the family's widest points (``blocks.wide_points``); "blocks,wide" reads both in one pass.
    ``top`` in a list is the backbone's feature layer.

    The model's ``columns`` attribute gives (layer, start, stop) of each layer's part of a pooled feature vector
    (() when the features are spatial): what a cache records so that a subset of its layers can be read back.
    """
    keras = _tf.keras()

    if pooling not in POOLINGS:
        raise one_of("pooling", pooling, POOLINGS)
    base, mode, size, name = build_backbone(
        backbone, weights=weights, image_size=image_size, preprocess=preprocess
    )
    spec = None if _is_file(backbone) else get_spec(backbone)
    if layer is None and spec is not None:
        layer = spec.feature_layer
    names = layer_names(layer, pooling)
    if names and all(n in NETWORK_SETS for n in names):
        names = tuple(network_sets(base, spec and spec.family, spec and spec.feature_layer, names))
    elif TOP in names:
        top = (spec and spec.feature_layer) or base.layers[-1].name
        names = tuple(top if n == TOP else n for n in names)
    if names:
        base = read_at(base, names, name)
    inputs, x = _pixels_in(keras, size, mode, portable)
    x = pool_outputs(base(x, training=False), pooling, ",".join(names) or None)
    model = keras.Model(inputs, x, name=f"{name}_features")
    model.columns = _columns(base, names, model)
    # Frozen: no weight updates, and Keras 3 BatchNormalization with trainable=False always uses its moving
    # statistics, even when a caller runs the model with training=True.
    model.trainable = False
    return model


def _columns(base, names: tuple[str, ...], model) -> tuple[tuple[str, int, int], ...]:
    """(layer name, first column, end column) of each layer in a pooled feature vector; () for spatial features."""
    if len(model.output_shape) != 2:
        return ()
    outputs = base.outputs
    if not names:  # the network's own output
        names = (outputs[0]._keras_history.operation.name,)
    widths = [int(t.shape[-1]) for t in outputs]
    ends = [sum(widths[: i + 1]) for i in range(len(widths))]
    return tuple((n, e - w, e) for n, w, e in zip(names, widths, ends, strict=True))


def feature_model_of(config, *, portable: bool = False):
    """``build_feature_model`` with the feature settings of an ExtractConfig (what a cache was made with)."""
    return build_feature_model(
        config.backbone,
        weights=config.weights,
        image_size=config.image_size,
        layer=config.layer,
        pooling=config.pooling,
        preprocess=config.preprocess,
        portable=portable,
    )


def build_classifier(
    backbone: str, *, weights: str = "imagenet", image_size: int | None = None, preprocess: str | None = None
):
    """A keras classifier from float 0..255 RGB (N, S, S, 3) to (N, classes), its preprocessing in the graph.

    The same ``build_backbone`` as features, with ``include_top``; a model file must be a classifier, i.e. give
    (batch, classes).
    """
    keras = _tf.keras()

    model, mode, size, name = build_backbone(
        backbone, weights=weights, image_size=image_size, preprocess=preprocess, include_top=True
    )
    if len(model.output_shape) != 2:
        raise BackboneError(
            f"{backbone} outputs shape {model.output_shape}; classify needs a classifier with (batch, classes) "
            "output."
        )
    inputs, x = _pixels_in(keras, size, mode)
    return keras.Model(inputs, model(x), name=f"{name}_classifier")


def pool_outputs(outputs, pooling: str, layer: str | None = None):
    """The feature vector(s) of a cut backbone's output(s): each map pooled, several joined in order."""
    keras = _tf.keras()

    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
    suffix = [f"_{i}" for i in range(len(outputs))] if len(outputs) > 1 else [""]
    outputs = [
        pool(name=f"{pooling}_pool{s}")(o) if len(o.shape) == 4 and pooling != "none" else o
        for o, s in zip(outputs, suffix, strict=True)
    ]
    if len(outputs) > 1 and any(len(o.shape) != 2 for o in outputs):
        raise BackboneError(
            f"layer={layer!r} mixes layers whose outputs are not feature maps or vectors; pick layers with "
            "(h, w, channels) or (channels) outputs."
        )
    return keras.layers.Concatenate(name="layers")(outputs) if len(outputs) > 1 else outputs[0]


def _pixels_in(keras, size: int, mode: str, portable: bool = False):
    """(input of 0..255 RGB pixels, those pixels preprocessed as ``mode``): how every built model starts."""
    # preprocess subclasses a Keras layer at import: it is imported with Keras, lazily (as bottleneck._tf is).
    from bottleneck.backbones.preprocess import Preprocess, portable_preprocess

    inputs = keras.Input((size, size, 3), dtype="float32", name="pixels")
    layer = portable_preprocess(mode) if portable else Preprocess(mode, name="preprocess")
    return inputs, layer(inputs)


def _is_file(backbone: str) -> bool:
    return is_model_path(backbone)


def feature_shape(
    backbone: str,
    *,
    image_size: int | None = None,
    layer: str | None = None,
    pooling: str = "avg",
    preprocess: str | None = None,
) -> tuple[int, ...]:
    """Per-image feature shape; from the spec when it is the default configuration, else by building the model."""
    if pooling not in POOLINGS:
        raise one_of("pooling", pooling, POOLINGS)
    if not is_model_path(backbone):
        spec = get_spec(backbone)
        if layer in (None, spec.feature_layer) and image_size in (None, spec.input_size):
            return spec.feature_shape(pooling)
    model = build_feature_model(
        backbone,
        weights="imagenet" if is_model_path(backbone) else "none",
        image_size=image_size,
        layer=layer,
        pooling=pooling,
        preprocess=preprocess,
    )
    return tuple(int(d) for d in model.output_shape[1:])


def count_params(backbone: str) -> int:
    """Parameters of the headless network: the spec's number, or counted from a model file."""
    if not is_model_path(backbone):
        return get_spec(backbone).params
    return int(load_model_file(backbone).count_params())


def _resolve(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _check_size(spec: BackboneSpec, image_size: int | None) -> int:
    if image_size is None:
        return spec.input_size
    try:
        size = operator.index(image_size)  # ints and NumPy integers; not 224.0 or "224"
    except TypeError:
        raise BackboneError(
            f"image_size={image_size!r} is not a whole number of pixels; pass e.g. image_size={spec.input_size}."
        ) from None
    if size < spec.min_size:
        raise BackboneError(
            f"image_size={size} is too small for {spec.name}: it needs at least {spec.min_size} px "
            f"(default {spec.input_size}); pass image_size={spec.min_size} or more."
        )
    check("image_size", size, IMAGE_SIZE, BackboneError)  # the upper bound every image size has
    return size


def _registry_backbone(spec: BackboneSpec, weights: str, size: int, include_top: bool = False):
    ctor = _resolve((spec.top_constructor or spec.constructor) if include_top else spec.constructor)
    shape = (size, size, 3)
    if spec.weights != "keras":
        # Offline backbones load their own weights ("imagenet" from a package, or a path) and raise
        # BackboneError themselves when a file does not fit.
        return _construct(ctor, spec, None if weights == "none" else weights, shape, include_top)
    if weights == "none":
        return _construct(ctor, spec, None, shape, include_top)
    if weights == "imagenet":
        return _construct(ctor, spec, "imagenet", shape, include_top)
    path = weights_file(weights, spec.name)
    model = _construct(ctor, spec, None, shape, include_top)
    load_weights(model, path, spec.name)
    if spec.family == "efficientnet":
        fold_efficientnet_rescaling(model)
    return model


def _construct(ctor, spec: BackboneSpec, weights, shape, include_top: bool = False):
    try:
        return ctor(include_top=include_top, weights=weights, input_shape=shape)
    except BottleneckError:
        raise
    except ValueError as exc:  # Keras argument checks: input size, weights value
        raise BackboneError(
            f"cannot build {spec.name} at {shape[0]} px ({first_line(exc)}); "
            f"use image_size={spec.input_size} (its default) or another size of at least {spec.min_size}."
        ) from None
    except Exception as exc:
        if weights != "imagenet":
            raise
        # Keras raises a bare Exception when the download fails (no network, proxy, certificate).
        raise BackboneError(
            f"cannot download the ImageNet weights of {spec.name} ({type(exc).__name__}: {first_line(exc)}); "
            f"download its *_notop.h5 file by hand and pass weights=path/to/file.h5, or weights='none'."
        ) from None


def _custom_backbone(path: str, weights: str, image_size: int | None, preprocess: str | None):
    """(user's keras.Model, preprocess mode, input side) for a saved model file."""
    require_preprocess(path, preprocess)
    if weights != "imagenet":
        # The cache key of a model file hashes the file only, so other weights would reuse a stale cache.
        raise BackboneError(
            f"weights={weights!r} does not apply to a model file ({path}): it carries its own weights; "
            "leave weights out, or save the model with the weights you want."
        )
    model = load_model_file(path)
    channels = model.inputs[0].shape[-1]
    if channels not in (3, None):
        raise BackboneError(
            f"{path} takes {channels}-channel images; bottleneck feeds RGB (3 channels): save the model with "
            "a 3-channel input."
        )
    fixed = input_size(model)
    if fixed is None and image_size is None:
        raise BackboneError(f"{path} accepts any input size; pass image_size (e.g. image_size=224).")
    if fixed is not None and image_size not in (None, fixed):
        raise BackboneError(
            f"{path} takes {fixed}-pixel inputs, not image_size={image_size}; leave image_size out."
        )
    return model, preprocess, fixed or image_size


# How many layer names an unknown-layer error lists (counted back from the output).
LAYERS_LISTED = 10


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
            raise BackboneError(
                f"layer {layer!r} of {name} has no single output ({first_line(exc)}); pick another layer."
            ) from None
        if not hasattr(output, "shape"):
            raise BackboneError(
                f"layer {layer!r} of {name} has several outputs; pick a layer with one output."
            )
        outputs.append(output)
    return keras.Model(
        base.inputs, outputs if len(outputs) > 1 else outputs[0], name=f"{base.name}_to_{layers[-1]}"
    )
