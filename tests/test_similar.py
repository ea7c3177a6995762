"""`bottleneck similar`: exact nearest images by cosine, equal to a brute-force NumPy computation; the query by id
comes back first; an image query is embedded with the cache's own backbone (``pixels``: fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_cache, make_image_folder
from typer.testing import CliRunner

from bottleneck.cache import open_cache
from bottleneck.cli import app
from bottleneck.errors import BottleneckError
from bottleneck.inspection import find_similar


def _brute_force(cache, q, splits=None):
    splits = splits or cache.splits
    X = np.concatenate([np.asarray(cache.features(s)[:], np.float64).reshape(cache.n(s), -1) for s in splits])
    ids = [str(i) for s in splits for i in np.asarray(cache.ids(s)).tolist()]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    q = np.asarray(q, np.float64).reshape(-1)
    return X @ (q / np.linalg.norm(q)), ids


@pytest.fixture(scope="module")
def blobs_cache(tmp_path_factory):
    return open_cache(make_cache(tmp_path_factory.mktemp("sim") / "c", dim=16).path)


def test_query_by_id_returns_itself_first_then_the_brute_force_order(blobs_cache):
    cache = blobs_cache
    query = str(np.asarray(cache.ids("val"))[3])
    found = find_similar(cache, id=query, k=12)
    assert found[0]["id"] == query and found[0]["cosine"] == pytest.approx(1.0, abs=1e-6)
    cos = [r["cosine"] for r in found]
    assert cos == sorted(cos, reverse=True) and len(found) == 12
    q = np.asarray(cache.features("val")[3:4])
    want, ids = _brute_force(cache, q)
    best = np.argsort(-want, kind="stable")[:12]
    assert [r["id"] for r in found] == [ids[i] for i in best]
    np.testing.assert_allclose(cos, want[best], atol=1e-6)
    assert {"split", "row", "label", "class_name"} <= set(found[0])
    assert found[0]["class_name"] == cache.class_names[found[0]["label"]]


def test_one_split_only_and_k_larger_than_the_split(blobs_cache):
    cache = blobs_cache
    query = str(np.asarray(cache.ids("train"))[0])
    found = find_similar(cache, id=query, k=1000, split="test")
    assert len(found) == cache.n("test") and {r["split"] for r in found} == {"test"}
    want, ids = _brute_force(cache, np.asarray(cache.features("train")[0:1]), ["test"])
    assert [r["id"] for r in found] == [ids[i] for i in np.argsort(-want, kind="stable")]


def test_bad_queries_are_one_line(blobs_cache):
    with pytest.raises(BottleneckError, match="id='nope' is not an image of this cache"):
        find_similar(blobs_cache, id="nope")
    with pytest.raises(BottleneckError, match="either image=PATH or id=ID"):
        find_similar(blobs_cache)
    with pytest.raises(BottleneckError, match="k"):
        find_similar(blobs_cache, id="train/0", k=0)
    with pytest.raises(BottleneckError, match="no split 'nope'"):
        find_similar(blobs_cache, id="train/0", split="nope")


def test_cli_json_and_unknown_id(blobs_cache):
    runner = CliRunner()
    r = runner.invoke(app, ["similar", str(blobs_cache.path), "--id", "train/5", "--k", "3", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 3 and rows[0]["id"] == "train/5"
    r = runner.invoke(app, ["similar", str(blobs_cache.path), "--id", "nope"])
    assert r.exit_code != 0
    assert len(r.output.strip().splitlines()) == 1 and "--id" in r.output


def test_an_image_query_is_embedded_with_the_caches_backbone_and_a_page_is_written(tmp_path):
    import bottleneck

    root = make_image_folder(tmp_path / "src", {"cat": 4, "dog": 3}, splits=["train", "test"])
    cache = bottleneck.extract(root, backbone="pixels", image_size=16, cache_dir=tmp_path / "cache").cache
    image = root / "test" / "dog" / "001.png"
    found = find_similar(cache, image, k=3, cache_dir=tmp_path / "cache", report=tmp_path / "page")
    assert found[0]["id"] == "test/dog/001.png" and found[0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    page = (tmp_path / "page" / "index.html").read_text()
    assert "Nearest images" in page and "test/dog/001.png" in page
    assert len(list((tmp_path / "page" / "thumbs").iterdir())) == 3
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("x")
    with pytest.raises(BottleneckError, match="refusing to replace"):
        find_similar(cache, image, k=3, report=mine)
