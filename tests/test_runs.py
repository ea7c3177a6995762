import gzip
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import NAMES, MeanColor, make_cache, make_image_folder
from PIL import Image

from bottleneck.cache import write_arrays
from bottleneck.config import ExtractConfig
from bottleneck.data.array_sources import read_idx
from bottleneck.data.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    class_folder,
    export_fashion_mnist,
)
from bottleneck.errors import BadImageError, BottleneckError, CacheError, HeadError, SourceError
from bottleneck.runs import compare, evaluate_run, fit_head, load_run
from bottleneck.runs.predict import predict_with_engine


def test_fit_head_writes_a_complete_run(tmp_path):
    cache = make_cache(tmp_path / "c")
    run = fit_head(cache, "logreg", runs_dir=tmp_path / "runs")
    assert run.path == tmp_path / "runs" / "c-logreg"
    files = sorted(p.name for p in run.path.iterdir())
    assert files == [
        ".bottleneck-owned.json",
        "confusion.png",
        "head",
        "history.png",
        "metrics.json",
        "report.md",
    ]
    record = json.loads((run.path / ".bottleneck-owned.json").read_text())  # every file, sealed (see _io)
    assert record["kind"] == "run" and sorted(record["files"]) == [
        "confusion.png", "head/head.json", "head/logreg.npz", "history.png", "metrics.json", "report.md",
    ]  # fmt: skip
    saved = json.loads((run.path / "metrics.json").read_text())
    assert {"head", "path", "fit_seconds", "metrics"} <= set(saved)
    assert saved["head"] == "logreg" and saved["path"] == str(run.path) and saved["fit_seconds"] > 0
    assert list(saved["metrics"]) == ["val", "test"]
    test = saved["metrics"]["test"]
    assert test["n"] == 60 and test["accuracy"] > 0.8 and "top5_accuracy" not in test
    assert set(test["per_class"]) == set(NAMES) and test["per_class"]["bee"]["support"] == 20
    assert saved["selection"]["C"] == run.head.C_ and saved["cache"]["key"] == "k" * 64
    assert "# logreg head on c" in (run.path / "report.md").read_text()
    for png in ("history.png", "confusion.png"):
        with Image.open(run.path / png) as im:
            assert im.format == "PNG"
    # A second run of the same head never overwrites the first.
    assert fit_head(cache, "logreg", runs_dir=tmp_path / "runs").path.name == "c-logreg-2"


def test_c_sweep_never_looks_at_the_test_split(tmp_path):
    a = make_cache(tmp_path / "a")
    X, y = a.load("train")
    Xv, yv = a.load("val")
    Xt, yt = a.load("test")
    # Same train and val; test labels flipped and test features replaced.
    b = write_arrays(
        tmp_path / "b",
        {"train": (X, y), "val": (Xv, yv), "test": (-Xt[::-1], (yt + 1) % 3)},
        class_names=NAMES,
        config=a.config,
        key=a.key,
    )
    ra = fit_head(a, "logreg", save=False)
    rb = fit_head(b, "logreg", save=False)
    assert ra.head.C_ == rb.head.C_
    assert ra.head.history_ == rb.head.history_
    assert ra.metrics["val"] == rb.metrics["val"]
    np.testing.assert_array_equal(ra.head.coef_, rb.head.coef_)
    assert ra.metrics["test"]["accuracy"] > 0.8 > rb.metrics["test"]["accuracy"]


def test_without_val_split_the_held_out_train_rows_are_reported(tmp_path):
    cache = make_cache(tmp_path / "c", splits=("train", "test"))
    run = fit_head(cache, "logreg", save=False)
    assert run.metrics["val"]["n"] == len(run.head.holdout_) == 18  # a tenth of each class of 180 rows
    assert "held out from fitting" in run.summary["notes"][0]


@pytest.mark.parametrize("head,params", [("logreg", {}), ("mlp", {"epochs": 3, "width": 16})])
def test_load_run_and_evaluate(tmp_path, head, params):
    cache = make_cache(tmp_path / "c")
    run = fit_head(cache, head, params=params, out=tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    Xt = cache.features("test")
    np.testing.assert_array_equal(loaded.head.predict_proba(Xt), run.head.predict_proba(Xt))
    result = evaluate_run(tmp_path / "run", cache, split="val")
    assert result["split"] == "val" and result["head"] == head
    got, want = result["metrics"]["val"], run.metrics["val"]
    assert got["confusion"] == want["confusion"] and got["log_loss"] == pytest.approx(want["log_loss"])
    # The same settings on other images are fine; other features or classes are refused.
    other_images = make_cache(tmp_path / "new", key="n" * 64)
    assert evaluate_run(loaded, other_images)["metrics"]["test"]["n"] == 60
    with pytest.raises(HeadError, match=r"feature shape \(12,\) but this .* head was trained on \(8,\)"):
        evaluate_run(loaded, make_cache(tmp_path / "wide", dim=12))
    with pytest.raises(HeadError, match="extracted with other settings"):
        evaluate_run(loaded, make_cache(tmp_path / "max", key="m" * 64, pooling="max"))
    with pytest.raises(CacheError, match="has no split 'holdout'"):
        evaluate_run(loaded, cache, split="holdout")


def test_load_run_errors(tmp_path):
    with pytest.raises(HeadError, match="is not a fit-head run folder"):
        load_run(tmp_path)


def test_compare_table_over_caches_heads_and_seeds(tmp_path):
    c1 = make_cache(tmp_path / "small", dim=8)
    c2 = make_cache(tmp_path / "wide", dim=12, pooling="max")
    out = tmp_path / "cmp"
    result = compare([c1, c2], ["logreg", "linear", "sigmoid"], seeds=[0, 1], params={"epochs": 3}, out=out)
    assert [(r["cache"], r["head"]) for r in result.rows] == [
        ("small", "logreg"),
        ("small", "linear"),
        ("wide", "logreg"),
        ("wide", "linear"),
    ]
    assert len(result.records) == 8 and all(r["split"] == "test" for r in result.rows)
    assert result.rows[2]["backbone"] == "arrays/max" and result.rows[0]["n_seeds"] == 2
    assert result.rows[0]["accuracy_std"] == 0.0  # logreg does not depend on the seed given a val split
    assert [s["head"] for s in result.skipped] == ["sigmoid", "sigmoid"]
    md = result.markdown()
    assert "| cache | backbone   | head   | split | accuracy" in md and "mean ± std over 2 seeds" in md
    assert "skipped sigmoid on small: sigmoid needs 2 classes, the cache has 3" in md
    assert result.csv().splitlines()[0] == (
        "cache,backbone,head,split,n_seeds,accuracy_mean,accuracy_std,balanced_accuracy_mean,"
        "balanced_accuracy_std,fit_seconds_mean,fit_seconds_std"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        ".bottleneck-owned.json",
        "comparison.csv",
        "comparison.json",
        "comparison.md",
        "comparison.png",
    ]
    assert json.loads((out / "comparison.json").read_text())["rows"][0]["head"] == "logreg"


def test_compare_parameter_routing(tmp_path):
    cache = make_cache(tmp_path / "c", splits=("train", "test"))
    with pytest.raises(HeadError, match=r"no compared head \(logreg, linear\) has a parameter 'width'"):
        compare([cache], ["logreg", "linear"], params={"width": 3})
    with pytest.raises(HeadError, match="parameters given for head mlp, which is not compared"):
        compare([cache], ["logreg"], params={"mlp": {"width": 3}})
    with pytest.raises(HeadError, match="unknown head 'svm'"):
        compare([cache], ["svm"])
    r = compare([cache], ["logreg"], params={"logreg": {"Cs": [1.0]}})
    assert r.rows[0]["split"] == "test" and r.rows[0]["n_seeds"] == 1


def fake_factory(config):
    return MeanColor(scale=1 / 255)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A logreg run on a cache extracted (with the fake engine) from class folders, and the folder."""
    from bottleneck.inference.runner import run_extraction

    tmp = tmp_path_factory.mktemp("images")
    classes = {"ant": 8, "bee": 8, "cow": 8}
    src = make_image_folder(tmp / "data", classes, splits=["train", "val", "test"])
    cfg = ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=4, resize="crop")
    cache = run_extraction(src, cfg, cache_dir=tmp / "cache", engine_factory=fake_factory).cache
    run = fit_head(cache, "logreg", out=tmp / "run")
    return run, src


def test_predict_on_a_folder_returns_one_row_per_image(image_run):
    run, src = image_run
    assert run.metrics["test"]["accuracy"] == 1.0
    seen = []

    def factory(config):
        seen.append(config)
        return MeanColor(scale=1 / 255)

    rows = predict_with_engine(run.path, [src / "test"], top=2, engine_factory=factory)
    images = sorted((src / "test").rglob("*.png"))
    assert [r["image"] for r in rows] == [str(p) for p in images]
    assert [r["top"][0]["class"] for r in rows] == [p.parent.name for p in images]
    for r in rows:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 2 and probs[0] >= probs[1] and sum(probs) <= 1 + 1e-9
    # The cache's settings travel with the run: predict rebuilds exactly that backbone.
    assert seen[0].backbone == "efficientnet_lite0" and seen[0].resize == "crop" and seen[0].weights == "none"


def test_predict_files_and_errors(image_run, tmp_path):
    run, src = image_run
    one = src / "test" / "bee" / "000.png"
    rows = predict_with_engine(run, [one, src / "val" / "ant"], top=9, engine_factory=fake_factory)
    assert len(rows) == 9 and rows[0]["top"][0]["class"] == "bee" and len(rows[0]["top"]) == 3
    with pytest.raises(HeadError, match=r"features of shape \(4,\), but the head was trained on \(3,\)"):
        predict_with_engine(run, [one], engine_factory=lambda c: _four_features())
    with pytest.raises(SourceError, match="does not exist"):
        predict_with_engine(run, [tmp_path / "nope.png"], engine_factory=fake_factory)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="has no images"):
        predict_with_engine(run, [tmp_path / "empty"], engine_factory=fake_factory)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(BadImageError, match="cannot decode image .*bad.png"):
        predict_with_engine(run, [tmp_path / "bad.png"], engine_factory=fake_factory)
    with pytest.raises(BottleneckError, match="top=0 is not allowed: an integer of at least 1"):
        predict_with_engine(run, [one], top=0, engine_factory=fake_factory)


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_export_refuses_wrong_files_and_non_empty_folders(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for stem, shape in (
        ("train-images-idx3-ubyte", (5, 28, 28)),
        ("train-labels-idx1-ubyte", (5,)),
        ("t10k-images-idx3-ubyte", (5, 28, 28)),
        ("t10k-labels-idx1-ubyte", (5,)),
    ):
        write_idx(src / f"{stem}.gz", np.zeros(shape))
    with pytest.raises(
        BottleneckError, match=r"hold \(5, 28, 28\) images .* Fashion-MNIST train has \(60000, 28, 28\)"
    ):
        export_fashion_mnist(tmp_path / "out", source=src)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BottleneckError, match="is not empty"):
        export_fashion_mnist(tmp_path / "full", source=src)
    with pytest.raises(BottleneckError, match="lacks train-images-idx3-ubyte"):
        export_fashion_mnist(tmp_path / "out2", source=tmp_path / "full")


needs_debian = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="apt-get install dataset-fashion-mnist",
)


@needs_debian
def test_export_fashion_mnist_subset_from_debian_files(tmp_path):
    seen = []
    result = export_fashion_mnist(tmp_path / "fm", per_class=2, progress=lambda *a: seen.append(a))
    assert result["splits"] == {"train": 20, "test": 20} and result["source"] == str(FASHION_MNIST_DIR)
    folders = [class_folder(c) for c in FASHION_MNIST_CLASSES]
    assert folders[0] == "t-shirt_top" and folders[9] == "ankle_boot" and result["classes"] == folders
    assert sorted(p.name for p in (tmp_path / "fm" / "train").iterdir()) == sorted(folders)
    pngs = sorted((tmp_path / "fm" / "test" / "ankle_boot").iterdir())
    labels = read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in np.flatnonzero(labels == 9)[:2]]
    assert labels[0] == 9  # the test set opens with an ankle boot
    with Image.open(pngs[0]) as im:
        assert im.mode == "L" and im.size == (28, 28)
        np.testing.assert_array_equal(
            np.asarray(im), read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")[0]
        )
    assert seen[-1] == ("export", 40, 40) and result["hit"] is False
    # The same export again is a hit; another subset into the same folder is refused.
    assert export_fashion_mnist(tmp_path / "fm", per_class=2)["hit"] is True
    with pytest.raises(BottleneckError, match="holds no finished export with per_class=3"):
        export_fashion_mnist(tmp_path / "fm", per_class=3)


@needs_debian
def test_export_downloads_when_debian_files_are_missing(tmp_path, monkeypatch):
    import bottleneck.data.datasets as runs

    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        if url.startswith(runs.FASHION_MNIST_URLS[0]):
            raise OSError("network unreachable")  # the official host is down: the mirror is tried next
        return open(FASHION_MNIST_DIR / Path(url).name, "rb")

    monkeypatch.setattr(runs, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    result = export_fashion_mnist(tmp_path / "fm", per_class=1)
    assert result["source"] == str(tmp_path / "home" / ".cache" / "bottleneck" / "fashion-mnist")
    assert result["splits"] == {"train": 10, "test": 10} and len(requested) == 8
    with pytest.raises(BottleneckError, match="not found in .*apt-get install dataset-fashion-mnist"):
        export_fashion_mnist(tmp_path / "fm2", download=False)


def _four_features():
    engine = MeanColor(scale=1 / 255)
    engine.feature_shape = (4,)  # says it gives 4 features: not what the head was trained on
    return engine
