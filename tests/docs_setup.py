"""The data the docs' code blocks run on, made from the tests' own generators (tests/test_docs.py).

A page names what it needs on its first lines, ``<!-- docs-setup: cats_dogs photo -->``; each name is a function
here that writes into the page's working folder. Everything is tiny and generated: the pages show the real
commands, and these files stand in for the datasets the tutorials downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import make_arrays
from inspect_data import make_source
from PIL import Image
from tuning_data import make_model_file, noisy_images

SPLITS = {"train": 8, "val": 4, "test": 4}


def cats_dogs(root: Path) -> None:
    """data/cats_dogs/{train,val,test}/{cat,dog}/NNN.png: noisy colours per class (learnable)."""
    noisy_images(root / "data" / "cats_dogs", per_split=SPLITS, classes=("cat", "dog"))


def photo(root: Path) -> None:
    """photo.jpg: a new image to predict (a JPEG, as a camera writes), from the first image an earlier setup made."""
    img = np.asarray(Image.open(sorted(root.rglob("*.png"))[0]))
    Image.fromarray(img).convert("RGB").resize((64, 48)).save(root / "photo.jpg", quality=90)


def arrays(root: Path) -> None:
    """data/arrays.npz: unsplit uint8 images x (N, 16, 16, 3) and labels y."""
    x, y = make_arrays(n=24, size=(16, 16), classes=3)
    (root / "data").mkdir(exist_ok=True)
    np.savez(root / "data" / "arrays.npz", x=x, y=y)


def keras_model(root: Path) -> None:
    """tiny.keras: a small Keras model file used as a backbone."""
    make_model_file(root / "tiny.keras")


def shop(root: Path) -> None:
    """data/shop/{train,test}/{a,b,c}: a train image copied into test, a JPEG copy, one mislabeled image."""
    make_source(root / "data" / "shop")


def signs(root: Path) -> None:
    """train_signs.h5 and test_signs.h5 in the SIGNS layout (64x64 RGB hands, digits 0-5): train_set_x,
    train_set_y, list_classes / test_set_x, test_set_y, list_classes."""
    import h5py

    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, (6, 4, 4, 3)).astype(np.float64)
    for split, per_class in (("train", 6), ("test", 3)):
        y = np.repeat(np.arange(6), per_class)
        x = np.stack(
            [
                np.asarray(
                    Image.fromarray(
                        np.clip(protos[k] + rng.normal(0, 30, (4, 4, 3)), 0, 255).astype(np.uint8)
                    ).resize((64, 64), Image.NEAREST)
                )
                for k in y
            ]
        )
        with h5py.File(root / f"{split}_signs.h5", "w") as f:
            f[f"{split}_set_x"] = x
            f[f"{split}_set_y"] = y
            f["list_classes"] = np.arange(6)


def hot_dog(root: Path) -> None:
    """seefood/{train,test}/{hot_dog,not_hot_dog}: the Kaggle "Hot Dog - Not Hot Dog" layout."""
    noisy_images(root / "seefood", per_split={"train": 8, "test": 4}, classes=("hot_dog", "not_hot_dog"))


def sketches(root: Path) -> None:
    """data/sketches/{train,val,test}/{circle,square,star}: a small dataset unlike ImageNet."""
    noisy_images(root / "data" / "sketches", per_split=SPLITS, classes=("circle", "square", "star"), seed=3)


def clothing(root: Path) -> None:
    """clothing-dataset-small/{train,validation,test}/<4 of its 10 classes>."""
    noisy_images(
        root / "clothing-dataset-small",
        per_split={"train": 6, "validation": 3, "test": 3},
        classes=("pants", "shirt", "shoes", "t-shirt"),
        seed=4,
    )


def cats_dogs_small(root: Path) -> None:
    """data/{train,validation}/{cats,dogs}: the Keras blog's layout (its 1000 + 400 images per class here 8 + 4)."""
    noisy_images(root / "data", per_split={"train": 8, "validation": 4}, classes=("cats", "dogs"), seed=5)


def onnx_model(root: Path) -> None:
    """model.onnx: a small NCHW conv net with a classifier tail, 32 px (tests/onnx_models.py)."""
    from onnx_models import convnet

    convnet(root / "model.onnx", size=32)


SETUPS = {
    f.__name__: f
    for f in (
        cats_dogs,
        photo,
        arrays,
        keras_model,
        shop,
        signs,
        hot_dog,
        sketches,
        clothing,
        cats_dogs_small,
        onnx_model,
    )
}
