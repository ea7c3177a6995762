"""Any saved Keras model (.keras, .h5 or a TensorFlow SavedModel folder) as a backbone."""

from __future__ import annotations

import os
from pathlib import Path

from bottleneck import _tf
from bottleneck.backbones.arch.alexnet import layer_classes
from bottleneck.errors import BackboneError, first_line

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_model_path(backbone: str) -> bool:
    """A backbone given as a model file or SavedModel folder rather than a registry name.

    Decided by the text alone: an explicit path (a path separator, as in ./resnet50 or models/x) or a model
    extension. Never by what exists in the working directory: a folder that happens to be called resnet50 must
    not turn `--backbone resnet50` into a model file (and change the cache key).
    """
    backbone = str(backbone)
    separators = {"/", os.sep, os.altsep} - {None}
    return (
        any(sep in backbone for sep in separators)
        or backbone in (".", "..")
        or backbone.lower().endswith((*MODEL_SUFFIXES, ".onnx"))  # .onnx: backbones.onnx_file
    )


# Endpoint names of `model.export()` and of `tf.saved_model.save()`, in the order tried.
SAVEDMODEL_ENDPOINTS = ("serve", "serving_default")


def load_model_file(path):
    """Load a user's model as a keras.Model with one (H, W, C) image input.

    ``.keras`` / ``.h5`` load with ``safe_mode=True`` (no Python code from Lambda layers runs) and without
    compiling. A SavedModel folder is wrapped in ``keras.layers.TFSMLayer``: it works end to end but is opaque,
    so it has no named inner layers for ``--layer``.
    """
    path = Path(path)
    if not path.exists():
        raise BackboneError(
            f"model file {path} does not exist; pass a .keras/.h5 file, a SavedModel folder or a registry name."
        )
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise BackboneError(
                f"{path} is a folder but not a TensorFlow SavedModel (no saved_model.pb); "
                "pass a .keras/.h5 file or a SavedModel folder."
            )
        model = _load_saved_model(path)
    elif path.suffix.lower() in MODEL_SUFFIXES:
        model = _load_keras_file(path)
    else:
        raise BackboneError(
            f"model file {path} has an unknown type {path.suffix!r}; pass a .keras or .h5 file or a SavedModel folder."
        )
    _check_image_input(model, path)
    return model


def _load_keras_file(path: Path):

    layer_classes()  # a saved model that contains our AlexNet needs its custom layers registered first
    return load_keras(
        path,
        BackboneError,
        "save it with model.save('model.keras') from Keras 3, or pass a SavedModel folder",
    )


def load_keras(path, error: type[Exception], fix: str):
    """A .keras / .h5 file as a keras.Model, loaded the one safe way: ``safe_mode=True`` (no Python code from a
    Lambda layer runs) and not compiled. Anything that stops it is ``error`` in one line ending in ``fix``: a
    Lambda layer, a truncated or damaged file, a file that is no Keras model."""
    import zipfile

    keras = _tf.keras()
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} is missing; {fix}.")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise error(f"{path} is damaged (not a complete .keras archive: truncated or overwritten); {fix}.")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many kinds for a file it cannot read; each becomes one line
        text = str(exc)
        if "safe_mode" in text or "lambda" in text.lower():
            raise error(
                f"{path} contains a Lambda layer with Python code, which bottleneck refuses to run (safe_mode). "
                "Rebuild the model without Lambda layers (use built-in or registered custom layers) and save it "
                "again."
            ) from None
        raise error(
            f"cannot load {path} as a Keras model ({first_line(exc, with_type=True)}); {fix}."
        ) from None


def _load_saved_model(path: Path):
    keras = _tf.keras()
    tf = _tf.tensorflow()

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise BackboneError(
            f"cannot load SavedModel {path} ({first_line(exc, with_type=True)}); "
            "re-export it with model.export(path) or save a .keras file."
        ) from None
    endpoint = next(
        (e for e in SAVEDMODEL_ENDPOINTS if hasattr(loaded, e) or e in getattr(loaded, "signatures", {})),
        None,
    )
    if endpoint is None:
        raise BackboneError(
            f"SavedModel {path} has no '{SAVEDMODEL_ENDPOINTS[0]}' or '{SAVEDMODEL_ENDPOINTS[1]}' endpoint "
            f"(it has {sorted(loaded.signatures)}); re-export it with model.export(path)."
        )
    fn = getattr(loaded, endpoint, None) or loaded.signatures[endpoint]
    specs = _input_specs(fn)
    if len(specs) != 1 or len(specs[0].shape) != 4:
        raise BackboneError(
            f"SavedModel {path} endpoint {endpoint!r} takes {[tuple(s.shape) for s in specs]}; a backbone needs "
            "one (batch, height, width, channels) image tensor."
        )
    spec = specs[0]
    layer = keras.layers.TFSMLayer(str(path), call_endpoint=endpoint, trainable=False, name="savedmodel")
    inputs = keras.Input(shape=tuple(spec.shape[1:]), name="input")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise BackboneError(
                f"SavedModel {path} returns {len(outputs)} outputs ({', '.join(sorted(outputs))}); "
                "a backbone needs one feature tensor: export a model with a single output."
            )
        (outputs,) = outputs.values()
    return keras.Model(inputs, outputs, name=path.name or "savedmodel")


def _input_specs(fn) -> list:
    tf = _tf.tensorflow()

    sig = getattr(fn, "structured_input_signature", None)
    if sig is None and getattr(fn, "concrete_functions", None):
        sig = fn.concrete_functions[0].structured_input_signature
    if sig is None:
        return []
    return [s for s in tf.nest.flatten(sig) if isinstance(s, tf.TensorSpec)]


def _check_image_input(model, path: Path) -> None:
    inputs = model.inputs if hasattr(model, "inputs") else None
    if not inputs or len(inputs) != 1:
        raise BackboneError(
            f"{path} has {len(inputs or [])} inputs; a backbone needs exactly one image input."
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] not in (1, 3, None):
        raise BackboneError(
            f"{path} takes input of shape {shape}; a backbone needs (batch, height, width, 3) images "
            "(channels last)."
        )


def input_size(model) -> int | None:
    """The square input side a loaded model fixes, or None when height/width are free."""
    h, w = tuple(model.inputs[0].shape)[1:3]
    if h is None or w is None:
        return None
    if h != w:
        raise BackboneError(
            f"model {model.name} takes {h}x{w} inputs; bottleneck feeds square images: re-save it with "
            "a square input (or with free height/width)."
        )
    return int(h)
