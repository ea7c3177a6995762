"""bottleneck.cache.manage and `bottleneck cache ls|verify`: listing and verifying caches made by extraction."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import MeanColor, make_image_folder
from PIL import Image
from typer.testing import CliRunner

from bottleneck.cache import read_meta, rows_digest
from bottleneck.cache.integrity import write_meta
from bottleneck.cache.manage import gc_caches, list_caches
from bottleneck.cli import app
from bottleneck.config import ExtractConfig
from bottleneck.inference.recompute import verify_cache
from bottleneck.inference.runner import extract, run_extraction

# A real backbone, randomly initialised (so offline) on tiny inputs: verify --recompute rebuilds it. Random
# weights shrink activations with depth (the top layer is ~1e-12); an early layer keeps them ~1e-3.
REAL = dict(
    backbone="efficientnet_lite0",
    weights="none",
    image_size=32,
    layer="block2b_add",
    batch_size=4,
    engine="tensorflow",
)


def noise_folder(root, n_per_class=2):
    """Random-pixel 32x32 PNGs in class folders a/ and b/: every feature differs (solid colours give near-zeros)."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_recompute_on_float16_cache_allows_its_rounding(tmp_path):
    # Regression: stored float16 rows were compared with float32 recomputations, so the float16 rounding alone
    # (~1e-4..5e-4 of the row's scale) exceeded the 1e-4 tolerance and a good cache was reported bad.
    src = noise_folder(tmp_path / "data")
    r = extract(src, cache_dir=tmp_path / "c", dtype="float16", **REAL)
    assert r.cache.features("train").dtype == np.float16
    report = verify_cache(r.path, recompute=4)
    assert report.recomputed == 4
    assert report.bad == []
    assert report.ok
    # Still far tighter than a real change: float16's eps (9.8e-4) plus the 1e-4 tolerance.
    assert report.max_abs_diff <= 1e-4 + float(np.finfo(np.float16).eps)


class Constant(MeanColor):
    """Every feature of every image is ``value`` (float32)."""

    def __init__(self, value):
        self.value = np.float32(value)

    def __call__(self, batch):
        return np.full((len(batch), 3), self.value, dtype=np.float32)


def test_recompute_allows_one_float16_ulp_but_not_more(tmp_path, monkeypatch):
    # 1 + 2**-11 is halfway between the float16 values 1 and 1 + 2**-10: values 2e-6 apart on either side of it
    # round one float16 ulp (9.8e-4) apart, though they agree to 2e-6, well inside the 1e-4 tolerance.
    import bottleneck.inference.chooser as chooser

    half = 1 + 2**-11
    src = make_image_folder(tmp_path / "data")
    cfg = ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=2, dtype="float16")
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: Constant(half - 1e-6))
    assert np.all(r.cache.load("train")[0] == np.float16(1))

    monkeypatch.setattr(chooser, "_tensorflow_engine", lambda config: Constant(half + 1e-6))
    report = verify_cache(r.path, recompute=5)
    assert report.ok and report.recomputed == 5
    # One float16 ulp at 1.0 (what rounding alone can do), relative to the larger row (1 + 2**-10).
    assert report.max_abs_diff == pytest.approx(2**-10 / (1 + 2**-10))

    monkeypatch.setattr(chooser, "_tensorflow_engine", lambda config: Constant(1 + 3 * 2**-10))
    report = verify_cache(r.path, recompute=5)
    assert len(report.bad) == 5 and report.bad[0]["reason"] == "recomputed differs (2.92e-03)"


def test_recompute_flags_an_altered_float32_row_and_cli_exits_1(tmp_path):
    src = noise_folder(tmp_path / "data")
    r = extract(src, cache_dir=tmp_path / "c", dtype="float32", **REAL)
    feats = zarr.open_group(str(r.path / "features.zarr"), mode="r+")["train/features"]
    row = np.asarray(feats[2])
    feats[2] = row * 1.01  # a 1 % change: small, but far beyond float32 recomputation noise
    # Re-sign the chunk so the checksum pass accepts it: only re-extracting the row can catch the change.
    meta = read_meta(r.path)
    for region in meta["checksums"]["train"]:
        region[2] = rows_digest(np.asarray(feats[region[0] : region[1]]))
    write_meta(r.path, meta)  # sealed again, as the writer would
    assert verify_cache(r.path).ok  # checksums alone see nothing wrong

    res = CliRunner().invoke(app, ["cache", "verify", str(r.path), "--recompute", "4"])
    assert res.exit_code == 1, res.output
    assert "4 rows recomputed" in res.output
    assert "BAD train rows 2:3: recomputed differs" in res.output
    assert "1 problem(s) found: re-run the `bottleneck extract` that made this cache" in res.output

    res = CliRunner().invoke(app, ["cache", "verify", str(r.path), "--recompute", "4", "--json"])
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["recomputed"] == 4
    assert [(b["split"], b["start"], b["stop"]) for b in report["bad"]] == [("train", 2, 3)]
    assert 5e-3 < report["max_abs_diff"] < 2e-2  # the 1 % change, relative to the row's scale


def test_ls_shows_key_and_source(tmp_path):
    src = make_image_folder(tmp_path / "data")
    cfg = ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=2)
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor())
    key = r.cache.key

    res = CliRunner().invoke(app, ["cache", "ls", "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    (line,) = res.output.strip().splitlines()
    assert line.split()[:3] == [r.path.name, key[:12], "efficientnet_lite0"]
    assert line.endswith(f"  {src.resolve()}")
    assert "train=5" in line and "complete" in line

    res = CliRunner().invoke(app, ["cache", "ls", "--cache-dir", str(tmp_path / "c"), "--json"])
    (row,) = json.loads(res.stdout)
    assert row["key"] == key and len(key) == 64
    assert row["source"] == str(src.resolve())
    assert row["path"] == str(r.path) and row["rows"] == 5 and row["complete"] is True


def test_ls_shows_source_of_an_interrupted_cache(tmp_path):
    # meta.json gets "source" only when the cache completes; an interrupted one still names it (manifest.json).
    class Boom(MeanColor):
        def __call__(self, batch):
            raise KeyboardInterrupt

    src = make_image_folder(tmp_path / "data")
    cfg = ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=2)
    try:
        run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: Boom())
    except KeyboardInterrupt:
        pass
    (row,) = list_caches(tmp_path / "c")
    assert not row["complete"] and row["status"].startswith("incomplete (0/5")
    assert row["source"] == str(src.resolve())


def _extracted(tmp_path):
    src = make_image_folder(tmp_path / "data")
    cfg = ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=2)
    return run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor())


def test_rm_refuses_folders_that_are_not_caches(tmp_path):
    other = tmp_path / "project"
    (other / "src").mkdir(parents=True)
    (other / "meta.json").write_text('{"project": "x"}')
    (other / "src" / "main.py").write_text("print('precious')")
    renamed = tmp_path / "renamed"
    r = _extracted(tmp_path)
    shutil.copytree(r.path, renamed)
    for folder, why in (
        (other, r"its meta.json is not a bottleneck cache's \(it has no format_version\)"),
        (renamed, r"its name does not end in its key"),
        (tmp_path / "nothing", r"no cache folder at"),
    ):
        res = CliRunner().invoke(app, ["cache", "rm", str(folder)])
        assert res.exit_code == 2
        (line,) = res.stderr.strip().splitlines()
        assert re.search(why, line), line
    assert (other / "src" / "main.py").read_text() == "print('precious')" and renamed.is_dir()

    # Nothing is deleted unless every folder given is a cache.
    res = CliRunner().invoke(app, ["cache", "rm", str(r.path), str(other)])
    assert res.exit_code == 2 and r.path.is_dir()
    res = CliRunner().invoke(app, ["cache", "rm", str(r.path)])
    assert res.exit_code == 0 and not r.path.exists()


@pytest.mark.parametrize("text", ["{}", "[]", '{"key": 3}', "not json"])
def test_a_broken_meta_json_never_breaks_ls_or_gc_for_the_others(tmp_path, text):
    r = _extracted(tmp_path)
    broken = tmp_path / "c" / "broken-0123abcd"
    broken.mkdir()
    (broken / "meta.json").write_text(text)
    (broken / "data.bin").write_bytes(b"x" * 10)
    rows = {Path(row["path"]).name: row for row in list_caches(tmp_path / "c")}
    assert rows[r.path.name]["status"] == "complete"
    assert rows["broken-0123abcd"]["status"] in ("not a cache", "corrupt metadata")
    res = CliRunner().invoke(app, ["cache", "ls", "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0 and "broken-0123abcd" in res.output
    removed = gc_caches(tmp_path / "c", older_than_s=0)
    assert removed == [] and (broken / "data.bin").exists() and r.path.is_dir()


def test_gc_collects_incomplete_caches_and_leftovers_but_not_other_folders(tmp_path):
    r = _extracted(tmp_path)
    root = tmp_path / "c"
    incomplete = root / r.path.name.replace(r.cache.key[:8], r.cache.key[:8][::-1])
    shutil.copytree(r.path, incomplete)
    meta = read_meta(incomplete, check=False)
    meta.update(complete=False, key=r.cache.key[:8][::-1] + r.cache.key[8:])
    write_meta(incomplete, meta)
    tmp_dir = root / f".{r.path.name}.123.tmp"  # a killed writer's: it carries the building mark
    tmp_dir.mkdir()
    (tmp_dir / ".bottleneck-building").write_text("x")
    theirs = root / f".{r.path.name}.124.tmp"  # the same name pattern, no mark: not ours
    theirs.mkdir()
    aside = root / f".{r.path.name}.damaged-77"
    shutil.copytree(r.path, aside)
    foreign = root / "notes"
    foreign.mkdir()
    (foreign / "meta.json").write_text('{"complete": false}')
    old = time.time() - 7200
    for path in (incomplete / "meta.json", tmp_dir, theirs, aside, foreign / "meta.json"):
        os.utime(path, (old, old))
    removed = {Path(x["path"]).name: x["reason"] for x in gc_caches(root, older_than_s=3600)}
    assert removed == {
        incomplete.name: "incomplete",
        tmp_dir.name: "temp folder",
        aside.name: "damaged cache set aside",
    }
    assert r.path.is_dir() and (foreign / "meta.json").exists() and theirs.is_dir()
