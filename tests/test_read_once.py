"""Each image file is read once and decoded once on a fresh folder run; files damaged past their header are
found during the pass: ``fail`` still names every bad file in one error (and keeps the committed rows for the
fixed source's run), ``skip`` records them and shrinks the split, in every store format."""

import io
import json

import numpy as np
import pytest
from conftest import CFG, PixelEngine, counting, make_image_folder, truncated_png
from PIL import Image

from bottleneck.cache.meta import read_manifest
from bottleneck.config import ExtractConfig
from bottleneck.data import open_source
from bottleneck.errors import BadImageError
from bottleneck.inference.runner import run_extraction


def pixel_engine(config):
    return PixelEngine()


def test_fresh_run_reads_and_decodes_each_image_once_through_the_engine_probe(tmp_path):
    # The TensorFlow engine path decodes a probe batch to choose and verify an engine; the pass reuses it.
    src = make_image_folder(tmp_path / "d", {"a": 12, "b": 11}, size=(20, 16))
    cfg = ExtractConfig(
        backbone="mobilenet_v2", weights="none", image_size=32, batch_size=8, engine="tensorflow"
    )
    with counting(src) as counts:
        r = run_extraction(src, cfg, cache_dir=tmp_path / "c")
    assert r.computed == 23 and not r.hit
    assert counts == {"opens": 23, "decodes": 23}
    with counting(src) as counts:
        hit = run_extraction(src, cfg, cache_dir=tmp_path / "c")
    assert hit.hit and counts == {"opens": 23, "decodes": 0}  # a hit hashes every file and decodes none


def test_files_beyond_the_kept_bytes_are_read_again_and_checked(tmp_path, monkeypatch):
    import bottleneck.inference.runner as runner

    src = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    total = sum(p.stat().st_size for p in src.glob("*/*.png"))
    opens, rows = [], []
    for i, budget in enumerate((0, total // 2, total)):
        monkeypatch.setattr(runner, "read_once_budget", lambda budget=budget: budget)
        with counting(src) as counts:
            r = run_extraction(src, CFG, cache_dir=tmp_path / f"c{i}", engine_factory=pixel_engine)
        assert r.computed == 10 and counts["decodes"] == 10
        opens.append(counts["opens"])
        rows.append(r.cache.load("train")[0])
    assert opens[0] == 20 and 10 < opens[1] < 20 and opens[2] == 10
    np.testing.assert_array_equal(rows[0], rows[1])
    np.testing.assert_array_equal(rows[0], rows[2])


def test_header_check_needs_no_decode_and_finds_what_headers_show(tmp_path):
    src = make_image_folder(tmp_path / "d", {"a": 2, "b": 2})
    (src / "a" / "empty.png").write_bytes(b"")
    (src / "b" / "notes.jpg").write_text("not an image")
    (src / "b" / "cut.png").write_bytes(truncated_png(0))
    with counting(src) as counts, open_source(src, keep_bytes=1 << 20) as s:
        problems = {it.id: reason for it, reason in s.header_problems()}
        sides = [s.min_side(it) for it in s.manifest.items if it.id not in problems]
    assert problems == {
        "a/empty.png": "empty file",
        "b/notes.jpg": "not an image",
    }  # cut.png's header is fine
    assert sides == [30] * 4 + [32] and counts == {"opens": 7, "decodes": 0}


def _late_source(root):
    """Two classes of 10 good images, and two files damaged past their header at rows 5 and 17."""
    src = make_image_folder(root, {"a": 10, "b": 10})
    (src / "a" / "005b.png").write_bytes(truncated_png(1))
    (src / "b" / "007b.png").write_bytes(truncated_png(2))
    return src


def test_fail_names_every_late_bad_file_and_the_fixed_run_reuses_the_committed_rows(tmp_path):
    src = _late_source(tmp_path / "d")
    with pytest.raises(BadImageError) as e:
        run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=pixel_engine, chunk_rows=4)
    assert str(e.value).startswith(
        "2 unreadable image(s): a/005b.png (truncated PNG); b/007b.png (truncated PNG). Fix or remove them"
    )
    (folder,) = [p for p in (tmp_path / "c").iterdir() if (p / "meta.json").is_file()]
    meta = json.loads((folder / "meta.json").read_text())
    assert not meta["complete"] and meta["progress"]["train"] == 4  # rows before the bad file's chunk
    for name in ("a/005b.png", "b/007b.png"):
        (src / name).unlink()
    fixed = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=pixel_engine, chunk_rows=4)
    assert fixed.reused == 4 and fixed.computed == 16
    fresh = run_extraction(src, CFG, cache_dir=tmp_path / "fresh", engine_factory=pixel_engine)
    np.testing.assert_array_equal(fixed.cache.load("train")[0], fresh.cache.load("train")[0])


@pytest.mark.parametrize("fmt", ["zarr", "npy", "h5"])
def test_skip_records_late_bad_files_and_shrinks_the_split(tmp_path, fmt):
    src = _late_source(tmp_path / "d")
    cfg = CFG.replace(on_bad_image="skip", format=fmt)
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=pixel_engine, chunk_rows=4)
    assert [(s["id"], s["reason"]) for s in r.skipped] == [
        ("a/005b.png", "truncated PNG"),
        ("b/007b.png", "truncated PNG"),
    ]
    assert r.computed == 20 and r.cache.n("train") == 20
    assert [s["id"] for s in read_manifest(r.path)[1]] == ["a/005b.png", "b/007b.png"]
    for name in ("a/005b.png", "b/007b.png"):
        (src / name).unlink()
    clean = run_extraction(
        src, CFG.replace(format=fmt), cache_dir=tmp_path / "clean", engine_factory=pixel_engine
    )
    x, y = r.cache.load("train")
    cx, cy = clean.cache.load("train")
    np.testing.assert_array_equal(x, cx)
    np.testing.assert_array_equal(y, cy)
    assert list(r.cache.ids("train")) == list(clean.cache.ids("train"))
    again = run_extraction(src.parent / "d", cfg, cache_dir=tmp_path / "c", engine_factory=pixel_engine)
    assert not again.hit  # the source changed (files removed): a new key, its rows all reused
    assert again.reused == 20 and again.computed == 0


def photo_jpeg(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 50, w // 50, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h), Image.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_fast_decode_scales_jpegs_down_to_no_less_than_the_input_side():
    from bottleneck.data import decode_image, resize_image

    data = photo_jpeg(2000, 1500)
    full = decode_image(data)
    fast = decode_image(data, draft=224)
    assert full.shape == (1500, 2000, 3)
    assert fast.shape == (375, 500, 3)  # 1/4: 1/8 would give 188 rows, below 224
    assert decode_image(data, draft=1000).shape == (1500, 2000, 3)  # no smaller scale keeps 1000 px
    a, b = resize_image(full, 224).astype(np.int16), resize_image(fast, 224).astype(np.int16)
    assert not np.array_equal(a, b) and np.abs(a - b).mean() < 2.0  # slightly different pixels, same picture
    png = io.BytesIO()
    Image.fromarray(full[:300, :400]).save(png, "PNG")
    np.testing.assert_array_equal(decode_image(png.getvalue(), draft=32), full[:300, :400])  # JPEG only


def test_fast_decode_cache_rows_are_the_fast_pixels_and_have_their_own_key(tmp_path):
    from bottleneck.data import decode_image, resize_image

    src = tmp_path / "d"
    for i in range(6):
        (src / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (src / f"c{i % 2}" / f"{i}.jpg").write_bytes(photo_jpeg(400, 300, seed=i))
    plain = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=pixel_engine)
    fast = run_extraction(
        src, CFG.replace(fast_decode=True), cache_dir=tmp_path / "c", engine_factory=pixel_engine
    )
    assert not fast.hit and fast.cache.key != plain.cache.key and fast.reused == 0
    x = fast.cache.load("train")[0]
    for row, name in zip(x, fast.cache.ids("train"), strict=True):
        want = resize_image(decode_image((src / name).read_bytes(), draft=8), 8)
        np.testing.assert_array_equal(row, want.reshape(-1))
    assert not np.array_equal(x, plain.cache.load("train")[0])


def test_predict_decodes_as_the_fast_decode_cache_did(tmp_path):
    from bottleneck.data import decode_image, resize_image
    from bottleneck.runs import fit_head, predict_images
    from bottleneck.runs.predict import run_scorer

    src = tmp_path / "d"
    for i in range(12):
        (src / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (src / f"c{i % 2}" / f"{i}.jpg").write_bytes(photo_jpeg(400, 300, seed=i))
    # The pixels backbone: features are the resized pixels themselves, so any decoding difference shows.
    cfg = ExtractConfig(backbone="pixels", image_size=32, fast_decode=True)
    cache = run_extraction(src, cfg, cache_dir=tmp_path / "c").cache
    run = fit_head(cache, "logreg", params={"Cs": [1.0]}, runs_dir=tmp_path / "runs")
    image = src / "c0" / "0.jpg"
    row = list(cache.ids("train")).index("c0/0.jpg")
    expected = run.head.predict_proba(np.asarray(cache.features("train")[row : row + 1]))[0]
    got = predict_images(run.path, [image], top=2)[0]["top"]
    assert got[0]["prob"] == pytest.approx(expected.max(), abs=1e-9) and 0.5 < got[0]["prob"] < 1 - 1e-6
    # Decoded in full, the same image gives other pixels and another answer: the match above is not by chance.
    full = resize_image(decode_image(image.read_bytes()), 32)[None]
    assert abs(run_scorer(run.path).proba(full)[0].max() - expected.max()) > 1e-6
