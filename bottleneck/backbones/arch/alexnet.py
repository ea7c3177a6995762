"""AlexNet (Caffe's bvlc_alexnet) in Keras, loading the classic ``bvlc_alexnet.npy`` weights dict safely.

The .npy is a pickled ``{"conv1": [W, b], ..., "fc8": [W, b]}`` in TensorFlow layout (caffe-tensorflow
port). It is read with a restricted unpickler that can only rebuild NumPy arrays, never with
``np.load(allow_pickle=True)``, which would run whatever a crafted file asks for.
Inputs are expected BGR with the ImageNet mean subtracted (``preprocess="caffe"``, applied by bottleneck.backbones.build).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from bottleneck import _tf
from bottleneck.errors import BackboneError

DEFAULT_SIZE = 227
# fc6 expects the 6x6x256 map of pool5; these input sides (and only these) produce it.
MIN_SIZE, MAX_SIZE = 227, 242

# Classic Caffe LRN (local_size 5, alpha 1e-4) written in TF's terms: alpha is divided by the window size.
LRN_RADIUS, LRN_ALPHA, LRN_BETA, LRN_BIAS = 2, 2e-5, 0.75, 1.0

# name -> (kernel shape, bias shape) as stored in bvlc_alexnet.npy; conv2/4/5 are two-group convolutions,
# so their kernels see half the input channels.
WEIGHT_SHAPES = {
    "conv1": ((11, 11, 3, 96), (96,)),
    "conv2": ((5, 5, 48, 256), (256,)),
    "conv3": ((3, 3, 256, 384), (384,)),
    "conv4": ((3, 3, 192, 384), (384,)),
    "conv5": ((3, 3, 192, 256), (256,)),
    "fc6": ((9216, 4096), (4096,)),
    "fc7": ((4096, 4096), (4096,)),
    "fc8": ((4096, 1000), (1000,)),
}


def _reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays may be rebuilt")
    # NumPy pickles pass (0,) here and the real shape to __setstate__, which checks it against the bytes
    # present; always starting empty means a crafted shape cannot allocate memory the file does not hold.
    return np.ndarray.__new__(np.ndarray, (0,), dtype)


def _latin1_encode(text, encoding="latin1"):
    # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1"); nothing else.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("only latin1 byte strings may be decoded")
    return text.encode("latin1")


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
try:  # NumPy 2 moved the scalar constructor; both spellings appear in files
    from numpy._core.multiarray import scalar as _scalar

    _NUMPY_GLOBALS[("numpy._core.multiarray", "scalar")] = _scalar
    _NUMPY_GLOBALS[("numpy.core.multiarray", "scalar")] = _scalar
except ImportError:  # pragma: no cover - NumPy 1.x
    pass


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        # latin1: the original file was written by Python 2, whose str holds the raw array bytes.
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module, name):
        obj = _NUMPY_GLOBALS.get((module, name))
        if obj is None:
            raise BackboneError(
                f"{self._path} asks to load {module}.{name}, which a weights dict never needs; refusing it "
                "(only NumPy arrays are allowed). The file may be malicious; use the original bvlc_alexnet.npy."
            )
        return obj

    def persistent_load(self, pid):
        raise BackboneError(f"{self._path}: unexpected persistent id in a NumPy file; not a weights dict.")


def load_npy_dict(path) -> dict:
    """The dict pickled inside a ``np.save(path, dict)`` file, allowing nothing but NumPy arrays."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(
            f"AlexNet weights file {path} does not exist; pass weights=path/to/bvlc_alexnet.npy."
        )
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except ValueError as exc:
            raise BackboneError(f"{path} is not a .npy file ({exc}); pass bvlc_alexnet.npy.") from None
        shape, _fortran, dtype = header
        if dtype != np.dtype(object) or shape != ():
            raise BackboneError(
                f"{path} holds a {dtype} array of shape {shape}, not a pickled weights dict; pass bvlc_alexnet.npy."
            )
        try:
            obj = _NumpyOnlyUnpickler(fh, path).load()
        except BackboneError:
            raise
        except Exception as exc:
            raise BackboneError(
                f"{path} is corrupt or truncated ({exc}); copy bvlc_alexnet.npy again."
            ) from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise BackboneError(
            f"{path} holds a {type(obj).__name__}, not a weights dict; pass bvlc_alexnet.npy."
        )
    return obj


def load_bvlc_weights(path) -> dict[str, list[np.ndarray]]:
    """{layer: [kernel, bias]} from bvlc_alexnet.npy, every layer present with the real shapes (float32)."""
    raw = load_npy_dict(path)
    out = {}
    for name, shapes in WEIGHT_SHAPES.items():
        key = name if name in raw else name.encode() if name.encode() in raw else None
        if key is None:
            raise BackboneError(
                f"{path} has no {name!r} (it has {', '.join(map(str, raw))}); pass the bvlc_alexnet.npy weights."
            )
        pair = raw[key]
        if not (
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(isinstance(a, np.ndarray) for a in pair)
        ):
            raise BackboneError(
                f"{path}: {name} should be [weights, bias] arrays; pass the bvlc_alexnet.npy weights."
            )
        for arr, want, what in zip(pair, shapes, ("weights", "bias"), strict=True):
            if arr.shape != want:
                raise BackboneError(
                    f"{path}: {name} {what} have shape {arr.shape}, AlexNet needs {want}; "
                    "pass the bvlc_alexnet.npy weights (caffe-tensorflow layout)."
                )
        out[name] = [np.ascontiguousarray(a, dtype=np.float32) for a in pair]
    extra = sorted(set(map(str, raw)) - set(WEIGHT_SHAPES))
    if extra:
        raise BackboneError(
            f"{path} has layers AlexNet does not use ({', '.join(extra)}); pass bvlc_alexnet.npy."
        )
    return out


def _make_layer_classes() -> dict:
    keras = _tf.keras()

    @keras.saving.register_keras_serializable(package="bottleneck")
    class LocalResponseNormalization(keras.layers.Layer):
        """Across-channel LRN as in Caffe's AlexNet (Keras 3 has no built-in layer for it)."""

        def __init__(self, radius=LRN_RADIUS, alpha=LRN_ALPHA, beta=LRN_BETA, bias=LRN_BIAS, **kwargs):
            super().__init__(**kwargs)
            self.radius, self.alpha, self.beta, self.bias = radius, alpha, beta, bias

        def call(self, x):
            tf = _tf.tensorflow()

            return tf.nn.local_response_normalization(
                x, depth_radius=self.radius, alpha=self.alpha, beta=self.beta, bias=self.bias
            )

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {
                **super().get_config(),
                "radius": self.radius,
                "alpha": self.alpha,
                "beta": self.beta,
                "bias": self.bias,
            }

    @keras.saving.register_keras_serializable(package="bottleneck")
    class SplitGroupConv2D(keras.layers.Conv2D):
        """Conv2D(groups=g) computed as g plain convolutions on channel slices, then concatenated.

        Same kernel layout and result as Keras' grouped Conv2D, but plain Conv2D ops: TensorFlow runs a
        grouped conv on CPU as a compiled sub-function that the ONNX converter cannot translate.
        """

        def convolution_op(self, inputs, kernel):
            from keras import ops

            xs = ops.split(inputs, self.groups, axis=-1)
            ks = ops.split(kernel, self.groups, axis=-1)
            outs = [
                ops.conv(
                    x, k, strides=list(self.strides), padding=self.padding, dilation_rate=self.dilation_rate
                )
                for x, k in zip(xs, ks, strict=True)
            ]
            return ops.concatenate(outs, axis=-1)

    return {"lrn": LocalResponseNormalization, "group_conv": SplitGroupConv2D}


_LAYER_CLASSES: dict | None = None


def layer_classes() -> dict:
    """AlexNet's custom Keras layers, defined (and registered for model loading) once, since they need Keras."""
    global _LAYER_CLASSES
    if _LAYER_CLASSES is None:
        _LAYER_CLASSES = _make_layer_classes()
    return _LAYER_CLASSES


def lrn_class():
    """The LRN layer class (see :func:`layer_classes`)."""
    return layer_classes()["lrn"]


def AlexNet(
    include_top: bool = False,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: tuple[int, int, int] | None = None,
    classifier_activation: str | None = "softmax",
):
    """Caffe's AlexNet. Input: BGR minus the ImageNet mean, side 227 (227..242 fit the fc layers).

    include_top=False: output is fc7 after ReLU, shape (4096,). include_top=True: (1000,) ImageNet
    probabilities (softmax; ``classifier_activation=None`` for logits). Layers are named conv1, norm1,
    pool1, conv2, norm2, pool2, conv3, conv4, conv5, pool5, flatten, fc6, fc7 (fc8) for ``--layer``.
    weights: a path to bvlc_alexnet.npy, or None for random weights. There is no download:
    "imagenet" asks for the path.
    """
    keras = _tf.keras()
    from keras import layers

    if weights == "imagenet":
        raise BackboneError(
            "alexnet has no downloadable weights; pass weights=path/to/bvlc_alexnet.npy "
            "(the classic caffe-tensorflow weights dict), or weights='none' for random weights."
        )
    shape = tuple(input_shape) if input_shape is not None else (DEFAULT_SIZE, DEFAULT_SIZE, 3)
    if len(shape) != 3 or shape[2] != 3 or shape[0] != shape[1] or not MIN_SIZE <= shape[0] <= MAX_SIZE:
        raise BackboneError(
            f"input shape {shape} does not fit alexnet: its fully connected layers need a square "
            f"side from {MIN_SIZE} to {MAX_SIZE} pixels; use image_size={DEFAULT_SIZE}."
        )
    arrays = None if weights is None or weights == "none" else load_bvlc_weights(weights)
    # Random init of 57 M parameters takes seconds on a CPU; pointless when they are overwritten.
    init = "zeros" if arrays is not None else "glorot_uniform"

    def conv(x, filters, kernel, name, strides=1, padding="same", groups=1):
        cls = layer_classes()["group_conv"] if groups > 1 else layers.Conv2D
        return cls(
            filters,
            kernel,
            strides=strides,
            padding=padding,
            groups=groups,
            activation="relu",
            kernel_initializer=init,
            name=name,
        )(x)

    def pool(x, name):
        return layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)

    inputs = keras.Input(shape=shape, name="input")
    # Caffe's conv1 has no padding (55x55 at 227); the later convs pad to keep their size.
    x = conv(inputs, 96, 11, "conv1", strides=4, padding="valid")
    x = pool(lrn_class()(name="norm1")(x), "pool1")
    # groups=2 is the original two-GPU split: group g sees input channels g*C/2.. and makes outputs g*F/2..
    x = conv(x, 256, 5, "conv2", groups=2)
    x = pool(lrn_class()(name="norm2")(x), "pool2")
    x = conv(x, 384, 3, "conv3")
    x = conv(x, 384, 3, "conv4", groups=2)
    x = conv(x, 256, 3, "conv5", groups=2)
    x = pool(x, "pool5")
    # The npy's fc6 rows are in (h, w, c) order, the order Keras' channels-last Flatten produces.
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", kernel_initializer=init, name="fc6")(x)
    x = layers.Dense(4096, activation="relu", kernel_initializer=init, name="fc7")(x)
    if include_top:
        x = layers.Dense(1000, activation=classifier_activation, kernel_initializer=init, name="fc8")(x)
    model = keras.Model(inputs, x, name="alexnet")
    if arrays is not None:
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(arrays[layer.name])
    return model
