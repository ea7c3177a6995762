"""Pixel preprocessing as Keras ops, so it runs inside the feature graph (and inside an exported ONNX graph)."""

from __future__ import annotations

import numpy as np

from bottleneck import _tf
from bottleneck.backbones import PREPROCESS_MODES
from bottleneck.errors import one_of

# This module subclasses a Keras layer, so it is only imported where Keras is needed anyway.
keras = _tf.keras()
ops = keras.ops

# Keras `imagenet_utils` constants. Caffe means are in BGR order because caffe mode flips RGB to BGR first.
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(x, mode: str):
    """float32 RGB pixels in 0..255, shape (..., 3) -> the input a network of this ``mode`` was trained on.

    caffe: RGB->BGR minus the ImageNet BGR mean; torch: x/255, minus mean, over std; tf: x/127.5 - 1;
    "127": (x - 127) / 128 (EfficientNet-Lite); none: unchanged (the network rescales inside).
    Same arithmetic, in the same order, as ``keras.applications.imagenet_utils.preprocess_input``.
    """
    if mode == "none":
        return x
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "127":
        return (x - 127.0) / 128.0
    if mode == "torch":
        return (x / 255.0 - TORCH_MEAN) / TORCH_STD
    if mode == "caffe":
        return ops.flip(x, axis=-1) - CAFFE_MEAN_BGR
    raise one_of("preprocess", mode, PREPROCESS_MODES)


@keras.saving.register_keras_serializable(package="bottleneck")
class Preprocess(keras.layers.Layer):
    """``preprocess(x, mode)`` as a layer: no weights, serialisable by name (no Lambda, so safe_mode loads it)."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise one_of("preprocess", mode, PREPROCESS_MODES)
        self.mode = mode

    def call(self, inputs):
        return preprocess(ops.cast(inputs, "float32"), self.mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def affine(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(kernel 3x3, bias 3): ``preprocess(x, mode)`` as ``x @ kernel + bias`` on the channel axis.

    Every mode is a per-channel affine map (caffe's RGB->BGR flip is a permutation), so one Dense layer with
    these fixed weights computes it with built-in Keras only.
    """
    eye = np.eye(3, dtype=np.float64)
    if mode == "none":
        return eye, np.zeros(3)
    if mode == "tf":
        return eye / 127.5, -np.ones(3)
    if mode == "127":
        return eye / 128.0, np.full(3, -127.0 / 128.0)
    if mode == "torch":
        std = TORCH_STD.astype(np.float64)
        return np.diag(1.0 / (255.0 * std)), -TORCH_MEAN.astype(np.float64) / std
    if mode == "caffe":
        return eye[:, ::-1].copy(), -CAFFE_MEAN_BGR.astype(np.float64)
    raise one_of("preprocess", mode, PREPROCESS_MODES)


def portable_preprocess(mode: str, name: str = "preprocess"):
    """A frozen built-in Dense layer computing ``preprocess(x, mode)`` (to float rounding): a model holding it
    loads with plain Keras, and converts to ONNX / TFLite, without bottleneck's custom layer."""
    kernel, bias = affine(mode)
    layer = keras.layers.Dense(
        3,
        name=name,
        kernel_initializer=keras.initializers.Constant(kernel.astype(np.float32)),
        bias_initializer=keras.initializers.Constant(bias.astype(np.float32)),
    )
    layer.trainable = False
    return layer
