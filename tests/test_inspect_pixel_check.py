"""bottleneck.inspection: candidate pairs (each row's nearest neighbours, block-wise) and near duplicates confirmed
by their pixels (8 x 8 grey copies read from the source)."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from bottleneck.data.source import open_source
from bottleneck.errors import BottleneckError, InspectError
from bottleneck.inspection import duplicates
from bottleneck.inspection.duplicates import candidate_pairs, normalized
from bottleneck.inspection.pixel_check import MAX_RMS, pixel_distances, tiny_images


def _brute_force(X, k, floor, threshold):
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    want = set()
    for i in range(len(X)):
        for j in np.argsort(-S[i], kind="stable")[:k]:
            if S[i, j] >= floor:
                want.add((min(i, int(j)), max(i, int(j))))
    i, j = np.nonzero(np.triu(S >= threshold, 1))
    return want | set(zip(i.tolist(), j.tolist(), strict=True)), S


def test_candidate_pairs_equal_a_brute_force_top_k(monkeypatch):
    # Rows class by class, as a cache lists them; pruned to the nearest neighbours many times during the scan.
    monkeypatch.setattr(duplicates, "PRUNE_PAIRS", 300)
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (6, 24))
    y = np.repeat(np.arange(6), 150)
    X = normalized(centers[y] + rng.normal(0, 0.6, (900, 24)))
    X[899] = X[5]  # an exact copy: its cosine 1 reaches the threshold
    want, S = _brute_force(X, 4, 0.5, 0.99)
    tracemalloc.start()
    p = candidate_pairs(X, neighbours=4, floor=0.5, threshold=0.99, block_bytes=40_000)  # 100-row blocks
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert set(zip(p.a.tolist(), p.b.tolist(), strict=True)) == want
    assert (5, 899) in want and np.all(p.a < p.b)
    np.testing.assert_allclose(p.score, S[p.a, p.b], rtol=1e-5)
    assert peak < 900 * 900 * 4  # never one N x N float32 matrix


def test_candidate_pairs_refuse_bad_neighbours_and_a_threshold_pairing_everything():
    with pytest.raises(BottleneckError, match=r"neighbours=0 is not allowed; pass an integer >= 1, e.g. 20"):
        candidate_pairs(np.eye(3, dtype=np.float32), neighbours=0)
    X = normalized(np.ones((600, 4)) + np.random.default_rng(0).normal(0, 0.01, (600, 4)))
    with pytest.raises(
        BottleneckError, match=r"more than 100000 pairs of images reach cosine threshold=0.9 "
    ):
        candidate_pairs(X, threshold=0.9)


def _jpeg(im: Image.Image, quality: int = 75) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _photos() -> list[np.ndarray]:
    """Crops of scikit-image's sample photos (colour and grey), 32 to 96 px: small images are the hard case."""
    from skimage import data

    out, rng = [], np.random.default_rng(0)
    for name in ("astronaut", "coffee", "chelsea", "camera"):
        im = getattr(data, name)()
        for side in (32, 48, 96):
            y, x = rng.integers(0, im.shape[0] - 200), rng.integers(0, im.shape[1] - 200)
            crop = Image.fromarray(im[y : y + 200, x : x + 200]).resize((side, side), Image.BILINEAR)
            out.append(np.asarray(crop))
    return out


def test_jpeg_and_resized_copies_are_the_same_picture_and_other_pictures_are_not(tmp_path):
    root = tmp_path / "src"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    names = []
    for k, px in enumerate(_photos()):
        im = Image.fromarray(px)
        im.save(root / "a" / f"{k:02d}.png")
        (root / "b" / f"{k:02d}-q75.jpg").write_bytes(_jpeg(im))
        side = round(im.width * (0.9 if k % 2 else 1.1))
        im.resize((side, side), Image.BILINEAR).save(root / "b" / f"{k:02d}-resized.png")
        # The same scene shifted by a fifth of the image: another picture, not a copy.
        im.transform(im.size, Image.AFFINE, (1, 0, im.width // 5, 0, 1, 0)).save(
            root / "b" / f"{k:02d}-moved.png"
        )
        names.append(k)
    flat = Image.new("RGB", (40, 30), (90, 120, 30))
    flat.save(root / "a" / "flat.png")
    Image.new("RGB", (64, 64), (90, 120, 31)).save(root / "b" / "flat-bigger.png")
    with open_source(root) as src:
        manifest = src.manifest
    ids = manifest.id.tolist()
    tiny = tiny_images(manifest, np.arange(len(ids)))
    assert tiny.shape == (len(ids), 64) and np.allclose(tiny.mean(axis=1), 0, atol=1e-4)

    def dist(x, z):
        return float(pixel_distances(tiny, [ids.index(x)], [ids.index(z)])[0])

    for k in names:
        original = f"a/{k:02d}.png"
        assert dist(original, f"b/{k:02d}-q75.jpg") <= MAX_RMS
        assert dist(original, f"b/{k:02d}-resized.png") <= MAX_RMS
        assert dist(original, f"b/{k:02d}-moved.png") > MAX_RMS
        assert dist(original, f"a/{(k + 1) % len(names):02d}.png") > MAX_RMS
    assert dist("a/flat.png", "b/flat-bigger.png") <= 1.0  # one colour each, one grey level apart


def test_a_changed_file_is_one_line(tmp_path):
    root = tmp_path / "src"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for c in ("a", "b"):
        Image.new("RGB", (16, 16), (10, 200, 30) if c == "a" else (200, 10, 30)).save(root / c / "x.png")
    with open_source(root) as src:
        manifest = src.manifest
    Image.new("RGB", (16, 16), (0, 0, 0)).save(root / "b" / "x.png")
    with pytest.raises(InspectError, match=r"b/x.png changed since extraction \(its content hash differs\)"):
        tiny_images(manifest, [0, 1])


FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.isdir(FASHION), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_copies_are_found_with_real_features(tmp_path):
    """Real Lite0 ImageNet features of 28 px garments: JPEG q75 and +-10 % resized copies of train images planted
    in test move the features too far for the feature rule, and the pixel check finds every one (~1 min)."""
    import bottleneck
    from bottleneck.data.datasets import export_fashion_mnist
    from bottleneck.inspection import inspect_cache

    src = tmp_path / "fm"
    export_fashion_mnist(src, per_class=60, download=False)
    train = sorted((src / "train").rglob("*.png"))[::60][:8]  # one image of 8 classes
    copies = {}
    for k, path in enumerate(train):
        im = Image.open(path)
        dest = src / "test" / path.parent.name / f"copy-{k}{'.jpg' if k % 2 else '.png'}"
        if k % 2:
            im.save(dest, "JPEG", quality=75)
        else:
            side = 25 if k % 4 else 31
            im.resize((side, side), Image.BILINEAR).save(dest)
        copies[path.relative_to(src).as_posix()] = dest.relative_to(src).as_posix()
    cache = bottleneck.extract(src, cache_dir=tmp_path / "cache").cache
    kw = dict(label_errors=False, page=False, map_method="pca")
    found = inspect_cache(cache, out=tmp_path / "o", **kw)
    leaks = {(r["partner_id"], r["id"]) for r in _rows(found.path / "leaks.csv")}
    assert set(copies.items()) <= leaks, sorted(set(copies.items()) - leaks)
    assert found.summary["near_duplicates"]["rule"] == "pixels"
    features = inspect_cache(cache, out=tmp_path / "f", pixel_check=False, **kw)
    by_features = {(r["partner_id"], r["id"]) for r in _rows(features.path / "leaks.csv")}
    assert len(set(copies.items()) & by_features) < len(copies)  # what the feature rule alone misses


def _rows(path):
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
