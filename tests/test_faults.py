"""Fault injection on real caches of every format: each corruption is detected with one line, or the result is
still correct; never a silently wrong head. The catalogue is scripts/bench_faults.py's (which prints the tally)."""

from __future__ import annotations

import bench_faults as bf
import numpy as np
import pytest
from typer.testing import CliRunner

from bottleneck.cache import open_cache
from bottleneck.cli import app

# Corruptions that leave what a head reads intact: fit-head may give the right result without a word.
HARMLESS_TO_FIT = {"ids edited", "manifest truncated"}
# Damage confined to one stored object of features: extract computes only its rows again.
ONE_OBJECT = {"bytes flipped", "bytes flipped, mtime kept"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return root, bf.make_source(root / "source")


@pytest.fixture(scope="module", params=list(bf.FORMATS))
def ref(request, work):
    root, source = work
    return bf.Reference(source, root, request.param)


@pytest.mark.parametrize("corruption", list(bf.CORRUPTIONS))
def test_damage_is_detected_or_harmless_and_extract_repairs_it(ref, work, corruption):
    o = bf.trial(ref, corruption, work[0])
    assert o.fit in ("detected", "correct"), o.message
    if o.fit == "detected":
        assert "\n" not in o.message and ("damaged" in o.message or "meta.json" in o.message), o.message
    else:
        assert corruption in HARMLESS_TO_FIT
    assert not o.verify_ok, "cache verify must report every corruption"
    assert not o.hit and o.repaired
    if corruption in ONE_OBJECT:
        assert o.computed == 128  # one chunk of the split: every other row reused from the damaged cache
    if corruption in ("labels edited", "ids edited"):
        assert o.computed == 0  # the features were whole: all reused


def test_the_catalogue_covers_every_format():
    assert set(bf.FORMATS) == {"zarr", "zarr-sharded", "npy", "h5"}
    assert len(bf.CORRUPTIONS) >= 11


def test_cli_names_the_damaged_rows_in_one_line_and_verify_exits_1(tmp_path, work):
    root, source = work
    ref = bf.Reference(source, tmp_path, "zarr")
    bf.CORRUPTIONS["bytes flipped"](ref.path, "zarr")

    res = CliRunner().invoke(
        app, ["fit-head", str(ref.path), "--head", "logreg", "--runs-dir", str(tmp_path)]
    )
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: cache ") and "train rows 128-256 do not match their checksum" in line
    assert "bottleneck cache verify" in line

    res = CliRunner().invoke(app, ["cache", "verify", str(ref.path)])
    assert res.exit_code == 1
    assert "BAD train rows 128:256: checksum mismatch" in res.output


def test_a_read_that_finds_damage_makes_the_next_hit_check_the_data_again(tmp_path, work):
    root, source = work
    ref = bf.Reference(source, tmp_path, "npy")
    # Silent corruption: the bytes change, size and mtime do not, so the witness of the last check still matches.
    bf.CORRUPTIONS["bytes flipped, mtime kept"](ref.path, "npy")
    cache = open_cache(ref.path)
    with pytest.raises(Exception, match="do not match their checksum"):
        np.asarray(cache.features("train")[:])
    assert not (ref.path / "verified.json").exists()  # forgotten: the next extract checks again
    again = bf.bottleneck.extract(source, cache_dir=tmp_path / "ref-npy", **ref.options)
    assert not again.hit and again.computed == 128
    assert bf.same(bf.snapshot(again.cache), ref.contents)
