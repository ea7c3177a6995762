"""bottleneck.inspection: duplicates, label errors, the map, and `inspect` end to end on a real small source."""

from __future__ import annotations

import json
import shutil
import sys
import tracemalloc

import numpy as np
import pytest
from inspect_data import (
    EXACT,
    MISLABELED,
    NEAR,
    THRESHOLD,
    planted_cache,
    read_csv,
)
from typer.testing import CliRunner

from bottleneck.cache import write_arrays
from bottleneck.cli import app
from bottleneck.errors import BottleneckError, InspectError
from bottleneck.inspection import exact_duplicates, inspect_cache, near_duplicates
from bottleneck.inspection.duplicates import normalized
from bottleneck.inspection.embedding_map import embed_2d, sample_rows
from bottleneck.inspection.label_errors import (
    estimated_error_counts,
    find_label_issues,
    lowest_confidence,
    out_of_fold_proba,
)
from bottleneck.inspection.pixel_check import MAX_RMS


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_cache(tmp_path_factory.mktemp("inspect"))


# --- duplicates ---------------------------------------------------------------------------------------------
def test_exact_duplicates_pair_each_copy_with_the_first():
    hashes = np.array([b"x", b"y", b"x", b"z", b"x", b"y"])
    p = exact_duplicates(hashes)
    assert list(zip(p.a.tolist(), p.b.tolist(), strict=True)) == [(0, 2), (0, 4), (1, 5)]
    assert p.score.tolist() == [1.0, 1.0, 1.0]
    assert len(exact_duplicates(np.array([b"a", b"b"]))) == 0


def test_near_duplicates_equal_brute_force_and_stay_in_blocks():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1500, 32)).astype(np.float32)
    X[700] = X[3] + rng.normal(0, 0.05, 32)  # planted near copies, one across a block border
    X[1499] = X[10] * 2.0  # same direction, other norm: cosine 1
    X = normalized(X)
    S = X @ X.T
    i, j = np.nonzero(np.triu(S >= 0.9, k=1))
    tracemalloc.start()
    p = near_duplicates(X, 0.9, block_bytes=200_000)  # ~33 rows a block, 45 blocks
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert set(zip(p.a.tolist(), p.b.tolist(), strict=True)) == set(zip(i.tolist(), j.tolist(), strict=True))
    assert {(3, 700), (10, 1499)} <= set(zip(p.a.tolist(), p.b.tolist(), strict=True))
    np.testing.assert_allclose(p.score, S[p.a, p.b], rtol=1e-5)
    assert np.all(p.a < p.b)
    assert peak < 1500 * 1500 * 4 / 4  # far below one N x N float32 matrix (9 MB)


def test_a_threshold_that_pairs_everything_stops_with_one_line():
    X = normalized(np.ones((600, 4)) + np.random.default_rng(0).normal(0, 0.01, (600, 4)))
    with pytest.raises(BottleneckError, match=r"more than 100000 pairs of images reach cosine threshold=0.9 .*"
                       r"raise it, e.g. threshold=0.95"):  # fmt: skip
        near_duplicates(X, 0.9)


def test_threshold_outside_zero_one_is_one_clear_error():
    with pytest.raises(
        BottleneckError, match=r"threshold=1.5 is not allowed; pass a cosine similarity in \(0, 1\]"
    ):
        near_duplicates(np.eye(3, dtype=np.float32), 1.5)


# --- label errors -------------------------------------------------------------------------------------------
def _blobs(seed=0):
    """6 Gaussian classes of 150 points in 16-d, classes 0/1 and 2/3 look-alike pairs (centres close)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (6, 16))
    centers[1] = centers[0] + rng.normal(0, 1, 16)
    centers[3] = centers[2] + rng.normal(0, 1, 16)
    y = np.repeat(np.arange(6), 150)
    return normalized(centers[y] + rng.normal(0, 1, (len(y), 16))), y, rng


def _precision_recall(rows, flipped):
    hit = len(set(rows.tolist()) & set(flipped.tolist()))
    return hit / max(1, len(rows)), hit / len(flipped)


def test_out_of_fold_probabilities_find_flipped_labels():
    X, y, rng = _blobs()
    flipped = rng.choice(len(y), 45, replace=False)  # 5 %, each to another class at random
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 6, 45)) % 6
    proba = out_of_fold_proba(X, noisy, folds=5)
    assert proba.shape == (900, 6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    issues = find_label_issues(noisy, proba)
    assert len(issues) == round(estimated_error_counts(noisy, proba).sum())
    precision, recall = _precision_recall(issues.rows, flipped)
    assert precision >= 0.9 and recall >= 0.7, (precision, recall, len(issues))
    # Suggested labels (the likeliest other label) are the true ones; ranked by the recorded label's probability.
    hit = np.isin(issues.rows, flipped)
    assert np.mean(issues.suggested[hit] == y[issues.rows[hit]]) >= 0.9
    assert np.all(issues.suggested != noisy[issues.rows])
    assert np.all(np.diff(issues.score) >= 0)
    assert set(issues.rows.tolist()) == set(lowest_confidence(noisy, proba, len(issues)).tolist())


def test_the_error_count_holds_without_noise_and_for_look_alike_classes():
    X, y, rng = _blobs()
    clean = out_of_fold_proba(X, y, folds=5)
    assert estimated_error_counts(y, clean).sum() <= 5  # 900 right labels: (almost) nothing to flag
    flipped = rng.choice(np.flatnonzero(y < 4), 45, replace=False)
    noisy = y.copy()
    noisy[flipped] = y[flipped] ^ 1  # 0 <-> 1, 2 <-> 3: wrong labels only between look-alike classes
    proba = out_of_fold_proba(X, noisy, folds=5)
    counts = estimated_error_counts(noisy, proba)
    assert 35 <= counts.sum() <= 60 and counts[4:].sum() == 0, counts
    precision, recall = _precision_recall(find_label_issues(noisy, proba).rows, flipped)
    assert precision >= 0.7 and recall >= 0.7, (precision, recall)


def test_cleanlab_method_and_an_unknown_method():
    X, y, rng = _blobs()
    flipped = rng.choice(len(y), 45, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 6, 45)) % 6
    proba = out_of_fold_proba(X, noisy, folds=5)
    issues = find_label_issues(noisy, proba, "cleanlab")
    assert len(set(issues.rows.tolist()) & set(flipped.tolist())) >= 35 and np.all(np.diff(issues.score) >= 0)
    with pytest.raises(
        BottleneckError, match=r"unknown label_method='confident'; choose one of: estimate, cleanlab"
    ):
        find_label_issues(noisy, proba, "confident")


def test_folds_below_two_is_refused():
    with pytest.raises(BottleneckError, match="folds=1 is not allowed"):
        out_of_fold_proba(np.zeros((10, 2)), np.arange(10) % 2, folds=1)


# --- the map --------------------------------------------------------------------------------------------------
def test_pca_map_is_scaled_and_samples_keep_every_class_and_the_kept_rows():
    rng = np.random.default_rng(0)
    xy, method = embed_2d(rng.normal(size=(50, 8)), "pca")
    assert method == "pca" and xy.shape == (50, 2) and xy.min() == 0.0 and xy.max() == 1.0
    y = np.repeat([0, 1, 2], [600, 300, 100])
    picked = sample_rows(y, 100, keep=[999, 5])
    assert {5, 999} <= set(picked.tolist()) and len(picked) == 100
    # 98 places shared 9.8 % per class (59, 29, 10 of the rows not kept), plus the kept rows of classes 0 and 2.
    assert np.bincount(y[picked]).tolist() == [60, 29, 11]
    with pytest.raises(
        BottleneckError, match="unknown map_method='mds'; choose one of: auto, umap, tsne, pca"
    ):
        embed_2d(np.zeros((20, 3)), "mds")


def test_auto_map_draws_small_samples_with_tsne_and_large_ones_with_pca_without_umap(monkeypatch):
    from bottleneck.inspection import embedding_map

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 64)) * 8
    y = np.repeat([0, 1, 2], 40)
    X = centres[y] + rng.normal(size=(120, 64))
    xy, method = embed_2d(X)
    assert method == "tsne" and xy.shape == (120, 2) and xy.min() == 0.0 and xy.max() == 1.0
    # Three far-apart clusters stay apart on the map: every point is nearer its own class's centre than another's.
    means = np.stack([xy[y == c].mean(axis=0) for c in range(3)])
    nearest = np.linalg.norm(xy[:, None] - means[None], axis=2).argmin(axis=1)
    assert (nearest == y).all()
    assert embed_2d(X[:15])[1] == "pca"  # too few neighbours for either
    # Above the t-SNE size, auto falls back to PCA when umap-learn cannot be imported.
    monkeypatch.setattr(embedding_map, "TSNE_UP_TO", 100)
    monkeypatch.setitem(sys.modules, "umap", None)
    assert embed_2d(X)[1] == "pca"
    with pytest.raises(BottleneckError, match="map_method='umap' needs umap-learn"):
        embed_2d(X, "umap")
    assert embed_2d(X, "tsne")[1] == "tsne"  # asked for by name, whatever the size


# --- inspect end to end -----------------------------------------------------------------------------------------
def test_inspect_finds_the_planted_leaks_and_label_error(planted, tmp_path):
    src, cache = planted
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    result = inspect_cache(cache, out=tmp_path / "out", threshold=THRESHOLD, map_method="pca")
    s, out = result.summary, result.path
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before  # nothing written into the data
    assert s["counts"]["images"] == 36 + 15 + 3
    exact = read_csv(out / "exact_duplicates.csv")
    assert [(r["id"], r["partner_id"], r["split"]) for r in exact] == [(EXACT[1], EXACT[0], "test")]
    near = read_csv(out / "near_duplicates.csv")
    assert [(r["id"], r["partner_id"]) for r in near] == [(NEAR[1], NEAR[0])]
    assert float(near[0]["score"]) >= THRESHOLD and float(near[0]["pixel_rms"]) <= MAX_RMS
    # Found by comparing images: every image is among the others' 20 nearest here, so all 54 were read.
    assert s["near_duplicates"] | {"candidate_pairs": 0} == {
        "rule": "pixels", "neighbours": 20, "floor": 0.7, "threshold": THRESHOLD, "max_pixel_rms": MAX_RMS,
        "candidate_pairs": 0, "images_compared": 54, "scan": "exact",  # 54 rows: far below the bounded scan's
    }  # fmt: skip
    assert s["near_duplicates"]["candidate_pairs"] >= 54 * 20 / 2 - 1  # the exact copy's pair left out
    leaks = read_csv(out / "leaks.csv")
    assert sorted((r["kind"], r["id"]) for r in leaks) == [("exact", EXACT[1]), ("near", NEAR[1])]
    assert s["leaks"] == {"train-test": {"exact": 1, "near": 1}}
    assert s["counts"]["leak_pairs"] == 2 and s["counts"]["exact_duplicate_pairs"] == 1
    errors = read_csv(out / "label_errors.csv")
    assert errors[0]["id"] == MISLABELED and errors[0]["label"] == "a" and errors[0]["suggested_label"] == "c"
    assert s["counts"]["label_issues"] == len(errors)
    assert s["counts"]["mistakes"] == len(read_csv(out / "mistakes.csv"))
    assert len(read_csv(out / "map.csv")) == 54 and s["map"] == {"method": "pca", "points": 54}
    assert json.loads((out / "summary.json").read_text())["counts"] == s["counts"]
    # Thumbnails beside the page, one per shown image, named by content hash.
    thumbs = sorted((out / "thumbs").iterdir())
    assert thumbs and all(t.suffix == ".png" and len(t.stem) == 32 for t in thumbs)
    html = (out / "index.html").read_text()
    assert "http://" not in html and "https://" not in html


def test_moved_source_is_one_line_and_source_points_at_it(planted, tmp_path):
    src, cache = planted
    moved = tmp_path / "moved"
    shutil.copytree(src, moved)
    hidden = src.with_name("hidden")
    src.rename(hidden)
    try:
        with pytest.raises(InspectError, match=r"source images of this cache are missing .*pass source=PATH"):
            inspect_cache(cache, out=tmp_path / "o1", label_errors=False, map_method="pca")
        r = inspect_cache(cache, out=tmp_path / "o2", source=moved, label_errors=False, map_method="pca")
        assert (
            len(list((r.path / "thumbs").iterdir())) > 0 and r.summary["near_duplicates"]["rule"] == "pixels"
        )
        # Without the page, a moved source leaves near duplicates to the features alone, and says so.
        lines = []
        r = inspect_cache(cache, out=tmp_path / "o3", label_errors=False, map_method="pca", page=False,
                          threshold=THRESHOLD, notify=lines.append)  # fmt: skip
        rule = r.summary["near_duplicates"]
        assert rule["rule"] == "features" and rule["why"].startswith("images unreadable: ")
        assert (
            "source images of this cache are missing" in rule["why"]
            and r.summary["counts"]["leak_pairs"] == 2
        )
        assert lines == [f"near duplicates by the features alone (cosine >= {THRESHOLD}): {rule['why']}."]
        assert not (tmp_path / "o1").exists()  # a failed run leaves no half folder
    finally:
        hidden.rename(src)


def test_arrays_cache_without_images_still_inspects(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12)).astype(np.float32)
    xt = rng.normal(size=(10, 12)).astype(np.float32)
    xt[0] = x[5]
    cache = write_arrays(tmp_path / "c", {"train": (x, np.arange(40) % 2), "test": (xt, np.arange(10) % 2)},
                         class_names=["u", "v"])  # fmt: skip
    lines = []
    r = inspect_cache(cache, out=tmp_path / "o", threshold=0.99, label_errors=False, map_method="pca",
                      notify=lines.append)  # fmt: skip
    assert r.summary["counts"] == {"images": 50, "exact_duplicate_pairs": 0, "near_duplicate_pairs": 1,
                                   "leak_pairs": 1}  # fmt: skip
    assert (
        read_csv(r.path / "leaks.csv")[0]["id"] == "test/0" and "label_errors.csv" not in r.summary["files"]
    )
    assert lines == [
        "near duplicates by the features alone (cosine >= 0.99): the cache records no source images.",
        f"cache {cache.path.name} records no source images: the page has no thumbnails.",
    ]
    assert r.summary["near_duplicates"] == {
        "rule": "features", "threshold": 0.99, "why": "the cache records no source images", "scan": "exact"
    }  # fmt: skip
    assert "no image" in (r.path / "index.html").read_text()


def test_cli_inspect_json_and_one_line_errors(planted, tmp_path):
    _, cache = planted
    runner = CliRunner()
    res = runner.invoke(app, ["inspect", str(cache.path), "--out", str(tmp_path / "o"), "--threshold",
                              str(THRESHOLD), "--map-method", "pca", "--json", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["counts"]["leak_pairs"] == 2 and s["path"] == str(tmp_path / "o")
    bad = runner.invoke(app, ["inspect", str(cache.path), "--threshold", "2"])
    assert bad.exit_code == 2 and bad.stderr.strip().splitlines() == [
        "error: --threshold 2.0 is not allowed; pass a cosine similarity in (0, 1], e.g. 0.97."
    ]
    res = runner.invoke(app, ["inspect", str(cache.path), "--out", str(tmp_path / "f"), "--no-pixel-check",
                              "--no-label-errors", "--no-page", "--map-method", "pca", "--json", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["near_duplicates"] == {"rule": "features", "threshold": 0.97,
                                                          "why": "pixel_check=False", "scan": "exact"}  # fmt: skip
    for args, line in (
        (["--label-method", "x"], "error: unknown --label-method x; choose one of: estimate, cleanlab."),
        (["--neighbours", "0"], "error: --neighbours 0 is not allowed; pass an integer >= 1, e.g. 20."),
    ):
        bad = runner.invoke(app, ["inspect", str(cache.path), *args])
        assert bad.exit_code == 2 and bad.stderr.strip().splitlines() == [line]


def test_without_cleanlab_the_default_works_and_the_cleanlab_method_names_the_extra(planted, tmp_path):
    from conftest import run_python

    _, cache = planted
    code = (
        "import sys; sys.modules['cleanlab'] = None\n"  # what an environment without cleanlab imports
        "from bottleneck.inspection import inspect_cache\n"
        "from bottleneck.errors import BottleneckError\n"
        f"r = inspect_cache({str(cache.path)!r}, out={str(tmp_path / 'o')!r}, page=False, map_method='pca')\n"
        "print(r.summary['label_errors']['label_method'], r.summary['counts']['label_issues'] >= 1)\n"
        f"try:\n    inspect_cache({str(cache.path)!r}, out={str(tmp_path / 'p')!r}, label_method='cleanlab')\n"
        "except BottleneckError as e:\n    print(e)\n"
    )
    assert run_python(code).strip().splitlines() == [
        "estimate True",
        "label_method='cleanlab' needs cleanlab: pip install 'bottleneck-features[inspect]', or use "
        "label_method='estimate' (the default).",
    ]


def test_report_pages_of_fit_head_evaluate_and_compare(planted, tmp_path):
    _, cache = planted
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, ["fit-head", str(cache.path), "--out", str(run), "--report", "--json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["report"] == str(run / "report" / "index.html")
    n_test = cache.n("test")
    html = (run / "report" / "index.html").read_text()
    assert (
        f'data-count="images">{n_test}<' in html
        and len(list((run / "report" / "thumbs").iterdir())) == n_test
    )
    res = runner.invoke(
        app, ["evaluate", str(run), str(cache.path), "--split", "train", "--report", str(tmp_path / "ev")]
    )
    assert res.exit_code == 0, res.output
    assert f'data-count="images">{cache.n("train")}<' in (tmp_path / "ev" / "index.html").read_text()
    res = runner.invoke(app, ["compare", str(cache.path), "--heads", "logreg", "--no-baseline", "--out",
                              str(tmp_path / "cmp"), "--report", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    page = (tmp_path / "cmp" / "report" / "index.html").read_text()
    assert 'id="comparison"' in page and "Below: the best row on a given cache, logreg on" in page


def test_inspection_and_the_page_import_no_tensorflow():
    from conftest import run_python

    out = run_python(
        "import sys, bottleneck.inspection, bottleneck.report.page, bottleneck.report.thumbnails; "
        "print('tensorflow' in sys.modules, 'cleanlab' in sys.modules, 'umap' in sys.modules)"
    )
    assert out.split() == ["False", "False", "False"]


def test_thumbnails_of_many_exact_copies_are_written_once_by_parallel_workers(tmp_path):
    # Exact copies share one thumbnail (named by content hash); with several workers they once raced on its
    # temporary file and one rename found it gone (FileNotFoundError in `inspect`).
    from PIL import Image

    from bottleneck.data.manifest import build_manifest, content_hash
    from bottleneck.report.thumbnails import write_thumbnails

    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(src / "copy0.png")
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(src / "other.png")
    for i in range(1, 60):
        shutil.copyfile(src / "copy0.png", src / f"copy{i}.png")
    files = sorted(src.iterdir())
    m = build_manifest(["a"], str(src.parent), "folders", split=["train"] * len(files), label=[0] * len(files),
                       id=[f"a/{f.name}" for f in files], hash=[content_hash(f.read_bytes()) for f in files],
                       path=[str(f) for f in files])  # fmt: skip
    seen = []
    names = write_thumbnails(m, np.arange(len(m)), tmp_path / "thumbs", workers=8,
                             progress=lambda what, done, total: seen.append((done, total)))  # fmt: skip
    written = sorted(p.name for p in (tmp_path / "thumbs").iterdir())
    assert len(names) == 61 and len(set(names.values())) == 2 and sorted(set(names.values())) == written
    assert seen[-1] == (61, 61)
