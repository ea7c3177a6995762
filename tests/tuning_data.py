"""Test data of fine-tuning and export: class folders of noisy colours and a tiny .keras backbone."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bottleneck import _tf

CLASSES = ("a", "b", "c")


def noisy_images(root, per_split=None, size=(36, 28), seed=0, classes=CLASSES):
    """Class folders under train/val/test: noise around a colour per class, so classes are learnable."""
    per_split = per_split or {"train": 10, "val": 6, "test": 6}
    rng = np.random.default_rng(seed)
    for split, n in per_split.items():
        for k, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array([60 + 70 * k, 200 - 60 * k, 90 + 40 * (k % 2)])
                img = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def make_model_file(path, size: int = 32):
    """A small conv net saved as .keras, blocks named blockN_*, with a BatchNormalization whose moving
    statistics are not the defaults (so a change would show)."""
    keras = _tf.keras()

    def init(seed):
        return keras.initializers.HeNormal(seed=seed)

    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="block1_conv", kernel_initializer=init(1))(inp)
    x = keras.layers.ReLU(name="block1_relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="block2_conv", kernel_initializer=init(2))(
        x
    )
    x = keras.layers.ReLU(name="block2_relu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="block3_conv", kernel_initializer=init(3))(x)
    x = keras.layers.BatchNormalization(name="block3_bn")(x)
    x = keras.layers.ReLU(name="block3_relu")(x)
    model = keras.Model(inp, x, name="tiny")
    bn = model.get_layer("block3_bn")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma * 1.5, beta + 0.1, mean + 0.2, var * 2.0])
    model.save(path)
    return path
