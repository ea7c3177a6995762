"""Shared fixtures: tiny generated image folders and arrays (importable too: ``from conftest import ...``)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bottleneck.config import ExtractConfig

# The benchmark scripts' instruments are the tests' too (one way of counting file opens and decodes).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_input import counting  # noqa: E402, F401


def image_color(split: str, class_index: int, i: int) -> tuple[int, int, int]:
    """The solid colour of image ``i`` of a class in a split: distinct per image, so content hashes differ."""
    s = ("train", "val", "test").index(split) if split in ("train", "val", "test") else 3
    return ((40 * class_index + 7) % 256, (23 * i + 60 * s) % 256, (97 * class_index + 31 * i + 5) % 256)


def make_image_folder(
    root,
    classes: dict[str, int] | None = None,
    size: tuple[int, int] = (40, 30),
    splits=None,
    ext: str = "png",
) -> Path:
    """Write solid-colour images and return ``root``.

    ``classes`` {name: count} (default {"cat": 3, "dog": 2}); ``size`` is (width, height). ``splits`` None gives
    ``root/<class>/<i>.<ext>``; a list of split folder names gives ``root/<split>/<class>/...`` with the same
    classes in each; a dict {split: {class: count}} sets counts per split. Colours come from ``image_color``
    (class index = position in sorted class names).
    """
    root = Path(root)
    classes = {"cat": 3, "dog": 2} if classes is None else classes
    if splits is None:
        layout = {None: classes}
    elif isinstance(splits, dict):
        layout = splits
    else:
        layout = {s: classes for s in splits}
    names = sorted({c for per in layout.values() for c in per})
    for split, per in layout.items():
        base = root if split is None else root / split
        for cls, n in per.items():
            (base / cls).mkdir(parents=True, exist_ok=True)
            key = {"validation": "val"}.get(split, split or "train")
            for i in range(n):
                Image.new("RGB", size, image_color(key, names.index(cls), i)).save(
                    base / cls / f"{i:03d}.{ext}"
                )
    return root


def make_arrays(
    n: int = 6, size: tuple[int, int] = (8, 8), channels: int | None = 3, classes: int = 3, seed: int = 0
):
    """Random uint8 images (n, H, W[, C]) and int64 labels cycling 0..classes-1 (every row distinct)."""
    rng = np.random.default_rng(seed)
    shape = (n, *size) if channels is None else (n, *size, channels)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    return x, np.arange(n, dtype=np.int64) % classes


def blobs(n_per_class: int, seed: int, dim: int = 8, k: int = 3, sep: float = 2.5):
    """(X float32 (n_per_class * k, dim), y (N,)): overlapping Gaussian blobs, class c shifted by ``sep`` along
    axis c (accuracy below 1, so a head's settings can matter)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    X = rng.normal(size=(len(y), dim)).astype(np.float32)
    X[np.arange(len(y)), y] += sep
    return X, y


NAMES = ["ant", "bee", "cow"]


def make_cache(
    path, *, dim=8, k=3, names=None, splits=("train", "val", "test"), sizes=None, sep=2.5, key="k" * 64, **cfg
):
    """A complete cache of blob features (``write_arrays``): ``sizes`` rows per class (default 60 / 20 / 20 in
    train / val / test), class names ``names`` (default ``NAMES[:k]``); ``cfg`` are ExtractConfig settings."""
    from bottleneck.cache import write_arrays

    sizes = sizes or {"train": 60, "val": 20, "test": 20}
    arrays = {s: blobs(sizes[s], seed=i, dim=dim, k=k, sep=sep) for i, s in enumerate(splits)}
    config = ExtractConfig(backbone="arrays", weights="none", **cfg)
    return write_arrays(path, arrays, class_names=list(names or NAMES[:k]), config=config, key=key)


@pytest.fixture(name="make_image_folder")
def _make_image_folder_fixture():
    """The ``make_image_folder`` function, for tests that prefer fixtures to imports."""
    return make_image_folder


@pytest.fixture(name="make_arrays")
def _make_arrays_fixture():
    return make_arrays


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and return its stdout; fails with its stderr."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def truncated_png(seed: int) -> bytes:
    """A noise PNG cut inside its pixel data: the header reads fine, decoding fails."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    return data[: len(data) * 2 // 3]


class FakeEngine:
    """The fields of the Engine protocol (bottleneck.inference.engines.Engine) for the tests' fake backbones."""

    name = "fake"
    input_size = 8
    threads = 1
    verification = None
    columns = ()


class PixelEngine(FakeEngine):
    """Features = the resized 8x8 RGB input itself, so a test can see what the backbone would have been fed."""

    feature_shape = (8 * 8 * 3,)

    def __call__(self, batch):
        return batch.reshape(len(batch), -1).astype(np.float32)


class MeanColor(FakeEngine):
    """The tests' one fake backbone: each image's mean colour as its feature row (0..255, or times ``scale``), so
    rows can be checked exactly. ``delay`` seconds per batch (a slow backbone); ``fail_after`` batches, then
    KeyboardInterrupt (what Ctrl-C looks like from inside the loop); ``calls`` and ``images`` count the work."""

    feature_shape = (3,)

    def __init__(self, *, delay: float = 0.0, scale: float = 1.0, fail_after: int | None = None):
        self.delay, self.scale, self.fail_after = delay, scale, fail_after
        self.calls = self.images = 0

    def __call__(self, batch):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        assert batch.dtype == np.uint8 and batch.shape[1:] == (8, 8, 3)
        if self.delay:
            time.sleep(self.delay)
        self.images += len(batch)
        return (batch.reshape(len(batch), -1, 3).mean(axis=1) * self.scale).astype(np.float32)


# The tests' one extraction config: a real registry backbone's settings; the engines above stand in for it.
CFG = ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=4)


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
    """(run, cache, data folder, model file) of a logreg head on a tiny model-file backbone."""
    from tuning_data import make_model_file, noisy_images

    from bottleneck import extract
    from bottleneck.runs import fit_head

    root = tmp_path_factory.mktemp("ft")
    data = noisy_images(root / "data")
    model_file = make_model_file(root / "tiny.keras")
    result = extract(
        data, cache_dir=root / "cache", backbone=str(model_file), preprocess="tf", engine="tensorflow"
    )
    run = fit_head(result.cache, "logreg", runs_dir=root / "runs")
    return run, result.cache, data, model_file
