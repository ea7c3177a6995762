"""The real datasets of the fine-tuning benchmark, as .npz sources (x_train, y_train, x_test, y_test, classes).

- ``fm-P-T``: Fashion-MNIST (Debian's ``dataset-fashion-mnist``), the first P images of each class of train and
  the first T test images (``all``: 10 000); 28x28 grayscale clothing.
- ``digits``: scikit-learn's bundled digits (1 797 images, 8x8 grayscale, 17 grey levels), a stratified third
  held out as test: far from ImageNet.
- ``lfw``: scikit-image's ``lfw_subset`` (100 faces, 100 non-faces, 25x25 grayscale), 60 held out as test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _stratified_test(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        test.append(rows[: int(round(fraction * len(rows)))])
    mask = np.zeros(len(y), bool)
    mask[np.concatenate(test)] = True
    return mask


def fashion_mnist(per_class: int | None, test: int | None):
    from bottleneck.data.array_sources import read_idx
    from bottleneck.data.datasets import FASHION_MNIST_DIR

    src = FASHION_MNIST_DIR
    x, y = read_idx(src / "train-images-idx3-ubyte.gz"), read_idx(src / "train-labels-idx1-ubyte.gz")
    if per_class is not None:
        keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)]))
        x, y = x[keep], y[keep]
    xt, yt = read_idx(src / "t10k-images-idx3-ubyte.gz"), read_idx(src / "t10k-labels-idx1-ubyte.gz")
    n = len(yt) if test is None else test
    names = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
    return x, y, xt[:n], yt[:n], names


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)
    y = d.target.astype(np.int64)
    test = _stratified_test(y, 1 / 3, seed=0)
    return x[~test], y[~test], x[test], y[test], [str(i) for i in range(10)]


def lfw():
    from skimage.data import lfw_subset

    x = np.round(lfw_subset() * 255).astype(np.uint8)
    y = np.array([1] * 100 + [0] * 100)  # the first 100 are faces
    test = _stratified_test(y, 0.3, seed=0)
    return x[~test], y[~test], x[test], y[test], ["non-face", "face"]


def dataset_npz(name: str, folder: Path) -> Path:
    """The .npz of ``name`` (fm-500-all, fm-200-2000, digits, lfw) under ``folder``, written once."""
    path = Path(folder) / f"{name}.npz"
    if path.exists():
        return path
    if name.startswith("fm-"):
        _, per, test = name.split("-")
        arrays = fashion_mnist(None if per == "all" else int(per), None if test == "all" else int(test))
    elif name == "digits":
        arrays = digits()
    elif name == "lfw":
        arrays = lfw()
    else:
        raise SystemExit(f"unknown dataset {name!r}: fm-P-T, digits, lfw")
    x, y, xt, yt, names = arrays
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x_train=x, y_train=y, x_test=xt, y_test=yt, classes=np.array(names))
    tmp.replace(path)
    return path
