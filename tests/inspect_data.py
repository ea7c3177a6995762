"""A small real image source with planted problems for the inspect tests: a train image copied into test, a JPEG
re-encoded copy in test, and an image of class c filed under class a (a label error)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("a", "b", "c")
EXACT = ("train/a/000.png", "test/a/900.png")  # (original, copy)
NEAR = ("train/b/000.png", "test/b/901.jpg")
MISLABELED = "train/a/950.png"  # a class-c image


def _image(rng, proto) -> np.ndarray:
    small = np.clip(proto + rng.normal(0, 70, proto.shape), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((32, 32), Image.NEAREST))


def make_source(root, train: int = 12, test: int = 5, seed: int = 0) -> Path:
    """root/{train,test}/{a,b,c}/NNN.png: per class a random 8x8 colour pattern plus noise, upscaled to 32 px
    (every image distinct), then the planted copies and the mislabeled image."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    protos = {c: rng.integers(0, 256, (8, 8, 3)).astype(np.float64) for c in CLASSES}
    for split, n in (("train", train), ("test", test)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_image(rng, protos[c])).save(root / split / c / f"{i:03d}.png")
    (root / EXACT[1]).write_bytes((root / EXACT[0]).read_bytes())
    Image.open(root / NEAR[0]).convert("RGB").save(root / NEAR[1], "JPEG", quality=75)
    Image.fromarray(_image(rng, protos["c"])).save(root / MISLABELED)
    return root


# Class folder and file names that once broke the page: "<!--<script>" in the inline JSON swallowed the page's
# script; the others test escaping (HTML, JSON, markdown) and the display of bidirectional overrides.
HOSTILE_CLASSES = ("<!--<script>", "x<script>alert(1)<", "a&b|c\u202e")
HOSTILE_FILES = ("<!--<script>", "&amp;", "a|b`*_", "l\u2028s", "photo\u202egnp")  # "/" is not allowed


def make_hostile_source(root, n: int = 8, seed: int = 1) -> Path:
    """root/{train,test}/<hostile class>/<hostile name><k>.png, as ``make_source`` (no planted copies); every
    name in ``HOSTILE_FILES`` appears in every folder."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    protos = {c: rng.integers(0, 256, (8, 8, 3)).astype(np.float64) for c in HOSTILE_CLASSES}
    for split, count in (("train", n), ("test", len(HOSTILE_FILES))):
        for c in HOSTILE_CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                name = f"{HOSTILE_FILES[i % len(HOSTILE_FILES)]}{i}.png"
                Image.fromarray(_image(rng, protos[c])).save(root / split / c / name)
    return root


def extract_source(root, cache_dir):
    """The source's cache, extracted for real with the features of ``conftest.PixelEngine`` (each image's 8x8
    resized pixels): no TensorFlow, no weights."""
    from conftest import PixelEngine

    from bottleneck.config import ExtractConfig
    from bottleneck.inference.runner import run_extraction

    config = ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=16)
    return run_extraction(root, config, cache_dir=cache_dir, engine_factory=lambda _: PixelEngine()).cache


THRESHOLD = (
    0.98  # near duplicates in this source: the planted JPEG copy scores 0.999, distinct images up to 0.96
)


def read_csv(path) -> list[dict]:
    """The rows of one of inspect's CSVs."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def planted_cache(root):
    """(source folder, its cache) of ``make_source`` under ``root``."""
    src = make_source(Path(root) / "data")
    return src, extract_source(src, Path(root) / "cache")
