"""`extract --exclude FILE`: the ids of a CSV's id column are left out before extraction; the list's digest is in
the key (only when given), rows stay reusable across caches with and without it, and `info` shows it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import CFG, MeanColor, make_image_folder
from typer.testing import CliRunner

from bottleneck.cache import open_cache
from bottleneck.cli import app
from bottleneck.data.exclusions import exclusions_digest
from bottleneck.errors import BottleneckError
from bottleneck.inference.runner import run_extraction


def _source(tmp_path):
    return make_image_folder(tmp_path / "src", {"cat": 4, "dog": 3}, splits=["train", "test"])


def _csv(path, ids, header="id,split,label,suggested_label,score"):
    lines = [header] + [f"{i},train,cat,dog,0.1" for i in ids]
    path.write_text("\n".join(lines) + "\n")
    return path


def _all_ids(cache):
    return [str(i) for s in cache.splits for i in np.asarray(cache.ids(s)).tolist()]


def test_excluded_ids_are_left_out_and_in_the_key(tmp_path):
    src = _source(tmp_path)
    cache_dir = tmp_path / "cache"
    full = run_extraction(src, CFG, cache_dir=cache_dir, engine_factory=lambda _: MeanColor())
    gone = ["train/cat/001.png", "test/dog/002.png"]
    lines = []
    listed = _csv(tmp_path / "label_errors.csv", [*gone, "train/cat/999.png"])
    result = run_extraction(
        src,
        CFG,
        cache_dir=cache_dir,
        engine_factory=lambda _: MeanColor(),
        exclude=listed,
        notify=lines.append,
    )
    cache = result.cache
    assert result.cache.key != full.cache.key
    assert set(_all_ids(full.cache)) - set(_all_ids(cache)) == set(gone)
    assert cache.n("train") == full.cache.n("train") - 1 and cache.n("test") == full.cache.n("test") - 1
    # the kept rows were copied from the full cache: the exclusion changes which rows exist, not their values
    assert result.reused == len(_all_ids(cache)) and result.computed == 0
    unknown = [line for line in lines if "not in the source" in line]
    assert len(unknown) == 1 and "1 of 3" in unknown[0] and "train/cat/999.png" in unknown[0]
    digest = exclusions_digest([*gone, "train/cat/999.png"])
    assert cache.meta["key_material"]["exclude"] == digest
    assert cache.summary()["excluded"] == {"ids": 3, "digest": digest}
    again = run_extraction(
        src, CFG, cache_dir=cache_dir, engine_factory=lambda _: MeanColor(), exclude=listed
    )
    assert again.hit and again.cache.key == result.cache.key
    assert "exclude" not in full.cache.meta["key_material"] and full.cache.summary()["excluded"] is None
    # a list of ids is the same exclusion as the file (what a cache's source options hand on)
    by_ids = run_extraction(
        src,
        CFG,
        cache_dir=cache_dir,
        engine_factory=lambda _: MeanColor(),
        exclude=[*gone, "train/cat/999.png"],
    )
    assert by_ids.hit and by_ids.cache.key == result.cache.key


def test_a_csv_without_an_id_column_is_one_line(tmp_path):
    src = _source(tmp_path)
    bad = _csv(tmp_path / "x.csv", ["train/cat/001.png"], header="path,split,label,suggested_label,score")
    with pytest.raises(BottleneckError, match="no 'id' column .*'path'") as err:
        run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=lambda _: MeanColor(), exclude=bad)
    assert "\n" not in str(err.value)
    with pytest.raises(BottleneckError, match="cannot be read"):
        run_extraction(
            src,
            CFG,
            cache_dir=tmp_path / "c",
            engine_factory=lambda _: MeanColor(),
            exclude=tmp_path / "none.csv",
        )
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)  # opening it would block: refused before it is opened
    for special in (fifo, tmp_path):
        with pytest.raises(BottleneckError, match="is not a regular file"):
            run_extraction(
                src, CFG, cache_dir=tmp_path / "c", engine_factory=lambda _: MeanColor(), exclude=special
            )


def test_cli_exclude_and_info(tmp_path):
    src = _source(tmp_path)
    listed = _csv(tmp_path / "leaks.csv", ["train/dog/000.png"])
    runner = CliRunner()
    args = [
        "extract",
        str(src),
        "--backbone",
        "pixels",
        "--image-size",
        "16",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    r = runner.invoke(app, [*args, "--exclude", str(listed), "--json", "-q"])
    assert r.exit_code == 0, r.output
    path = json.loads(r.stdout)["path"]
    assert "train/dog/000.png" not in _all_ids(open_cache(path))
    r = runner.invoke(app, ["info", path])
    assert r.exit_code == 0 and "excluded  1 id(s)" in r.output
    bad = _csv(tmp_path / "bad.csv", ["x"], header="name,split,label,suggested_label,score")
    r = runner.invoke(app, [*args, "--exclude", str(bad)])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "--exclude" in r.output and "'id' column" in r.output
