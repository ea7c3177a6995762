"""The per-source hash index: a cache hit on unchanged files reads no image bytes; a changed file (content,
size, or only its content with the old mtime restored) is read again and only its row is computed."""

import io
import os
import time

import numpy as np
import pytest
from conftest import CFG, MeanColor, counting, make_image_folder
from PIL import Image
from typer.testing import CliRunner

from bottleneck.cli import app
from bottleneck.data.hash_index import HashIndex, index_path, stamp
from bottleneck.inference.runner import run_extraction

HOUR_AGO = time.time() - 3600


def engine(config):
    return MeanColor()


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, "PNG")
    return buf.getvalue()


def _aged(root):
    """Files last written an hour ago, as datasets usually are (fresher ones are hashed again: 'racy')."""
    for p in root.rglob("*.png"):
        os.utime(p, (HOUR_AGO, HOUR_AGO))
    return root


def test_a_hit_on_unchanged_files_reads_no_image_bytes(tmp_path):
    src = _aged(make_image_folder(tmp_path / "d", {"a": 6, "b": 6}))
    first = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=engine)
    assert (tmp_path / "c" / "index").is_dir()
    with counting(src) as counts:
        hit = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=engine)
    assert hit.hit and counts["opens"] == 0 and hit.cache.key == first.cache.key
    with counting(src) as counts:
        again = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=engine, rehash=True)
    assert again.hit and counts["opens"] == 12


def test_only_changed_files_are_read_and_only_their_rows_computed(tmp_path):
    src = _aged(make_image_folder(tmp_path / "d", {"a": 6, "b": 6}))
    first = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=engine)
    victim = src / "a" / "002.png"
    size = victim.stat().st_size
    # A new picture of the same byte size: only the content (and the ctime) tells them apart.
    color = next((c, 200, 17) for c in range(256) if len(_png((c, 200, 17))) == size)
    victim.write_bytes(_png(color))
    os.utime(victim, (HOUR_AGO, HOUR_AGO))  # the old mtime restored, as rsync -t or an archive would
    with counting(src) as counts:
        r = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=engine)
    assert counts["opens"] == 1  # read once (hashed, and its bytes kept for decoding); no other file opened
    assert not r.hit and r.computed == 1 and r.reused == 11 and r.cache.key != first.cache.key
    row = list(r.cache.ids("train")).index("a/002.png")
    np.testing.assert_allclose(r.cache.load("train")[0][row], np.asarray(color, np.float32))


def test_fresh_files_and_damaged_indexes_are_hashed_again(tmp_path):
    src = make_image_folder(tmp_path / "d", {"a": 3, "b": 3})  # written just now: within the racy window
    run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=engine)
    with counting(src) as counts:
        run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=engine)
    assert counts["opens"] == 6
    path = index_path(tmp_path / "c" / "index", src)
    path.write_bytes(b"not an index")
    first = str(src / "a" / "000.png")
    assert HashIndex(path).match([first], np.array([stamp(os.stat(first))], np.uint64)).hashes == [None]
    res = CliRunner().invoke(
        app, ["extract", str(src), "--weights", "none", "--cache-dir", str(tmp_path / "c2"), "--rehash", "-q"]
    )
    assert res.exit_code == 0, res.output


def test_header_checks_are_remembered_for_the_next_extraction_of_the_source(tmp_path):
    from bottleneck.errors import BadImageError

    src = make_image_folder(tmp_path / "d", {"a": 4, "b": 4})
    (src / "b" / "notes.png").write_text("not a picture")
    _aged(src)
    first = run_extraction(
        src, CFG.replace(on_bad_image="skip"), cache_dir=tmp_path / "c", engine_factory=engine
    )
    assert [s["id"] for s in first.skipped] == ["b/notes.png"] and first.computed == 8
    built = []

    def counted(config):
        built.append(config)
        return MeanColor()

    # Another backbone setting over the same folder: every file is known from the index, none is read, and the
    # bad one still stops the run before any engine is built.
    with (
        counting(src) as counts,
        pytest.raises(BadImageError, match=r"^1 unreadable image\(s\): b/notes.png"),
    ):
        run_extraction(src, CFG.replace(pooling="max"), cache_dir=tmp_path / "c", engine_factory=counted)
    assert (
        built == [] and counts["opens"] <= 8
    )  # the rest decoded to name every bad file; notes.png not reread
    # The remembered sizes serve any pixel limit: 40x30 images over a limit of 1000 pixels, named up front.
    with pytest.raises(
        BadImageError, match=r"40x30 = 1200 pixels, over the decompression-bomb limit of 1000"
    ):
        run_extraction(
            src,
            CFG.replace(max_image_pixels=1000, on_bad_image="fail"),
            cache_dir=tmp_path / "c",
            engine_factory=counted,
        )
    assert built == []
