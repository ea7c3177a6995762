"""Layer sets and strategy advice: `--layer blocks`, column ranges, subsets as views, greedy selection, the
`pixels` baseline, `compare --layers/--layer-search/--baseline` and `advise`."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bottleneck.cache.writer import write_arrays
from bottleneck.cli import app
from bottleneck.config import ExtractConfig
from bottleneck.errors import BackboneError, BottleneckError, CacheError, SourceError
from bottleneck.inference.runner import extract
from bottleneck.report import markdown_text

runner = CliRunner()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """3 classes x 8 images of 40x40 px whose colours carry the class, with noise."""
    src = tmp_path_factory.mktemp("sets") / "data"
    rng = np.random.default_rng(5)
    for c, cls in enumerate(("a", "b", "c")):
        (src / cls).mkdir(parents=True)
        for i in range(8):
            base = np.zeros((40, 40, 3)) + 60 * c + 30
            img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(src / cls / f"{i}.png")
    return src


def lite0(layer="blocks", **kw):
    return ExtractConfig(weights="imagenet", image_size=64, layer=layer, engine="tensorflow", **kw)


@pytest.fixture(scope="module")
def blocks(images, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("blocks-cache")
    return extract(images, lite0(), cache_dir=cache_dir, val_fraction=0.25).cache


def test_blocks_columns_match_each_layers_width(blocks):
    from bottleneck.backbones.layers import list_layers

    shapes = dict(list_layers("efficientnet_lite0", image_size=64))
    columns = blocks.columns
    names = [n for n, _, _ in columns]
    # Every block of Lite0 (1a, 2a-2b, 3a-3b, 4a-4c, 5a-5c, 6a-6d, 7a) then the feature layer.
    assert len(names) == 17 and names[0] == "block1a_project_bn" and names[-1] == "top_activation"
    assert names[1:3] == ["block2a_project_bn", "block2b_add"]
    start = 0
    for name, a, b in columns:
        assert a == start and b - a == shapes[name][-1]
        start = b
    assert blocks.feature_shape == (start,)
    assert blocks.config.layer == "blocks"
    info = runner.invoke(app, ["info", str(blocks.path)])
    assert (
        "layers    17: block1a_project_bn, block2a_project_bn, block2b_add, ..., block7a_project_bn, top_activation"
        in info.stdout
    )
    assert json.loads(runner.invoke(app, ["info", str(blocks.path), "--json"]).stdout)["layers"][-1] == {
        "name": "top_activation",
        "start": start - 1280,
        "stop": start,
    }


def test_a_subset_view_is_a_fresh_extraction_of_those_layers(images, blocks, tmp_path):
    view = blocks.select("block6a_project_bn,top")
    assert view.config.layer == "block6a_project_bn,top_activation"
    assert view.feature_shape == (192 + 1280,)
    assert view.columns == [("block6a_project_bn", 0, 192), ("top_activation", 192, 1472)]
    fresh = extract(
        images, lite0("block6a_project_bn,top_activation"), cache_dir=tmp_path, val_fraction=0.25
    ).cache
    assert fresh.key == view.key  # the same key a fresh extraction of the subset gets
    for split in ("train", "val"):
        np.testing.assert_array_equal(
            np.asarray(view.features(split)[:]), np.asarray(fresh.features(split)[:])
        )
        np.testing.assert_array_equal(view.labels(split), fresh.labels(split))
    # Names are put in cache order: one view per set, whatever order they are asked in.
    assert blocks.select("top_activation,block6a_project_bn").key == view.key
    # A view reads rows from the parent's store: slicing returns only the view's columns.
    assert view.features("train")[2:4].shape == (2, 1472)


def test_a_head_on_a_subset_predicts_with_exactly_those_layers(images, blocks, tmp_path):
    from bottleneck.runs import evaluate_run, fit_head, predict_images

    run = fit_head(blocks, "logreg", layers="block5c_add", params={"Cs": [1.0]}, runs_dir=tmp_path)
    assert run.path.name.endswith("-block5c_add-logreg")
    assert run.summary["cache"]["config"]["layer"] == "block5c_add"
    assert run.head.feature_shape_ == (112,)
    # evaluate on the whole blocks cache: the run's subset is selected from it.
    m = evaluate_run(run.path, blocks, "val")["metrics"]["val"]
    assert m["accuracy"] == pytest.approx(run.summary["metrics"]["val"]["accuracy"])
    rows = predict_images(run.path, [images / "a" / "0.png"], top=3)
    view = blocks.select("block5c_add")
    ids = [str(i) for i in blocks.ids("train")]
    row = ids.index("a/0.png")
    expected = run.head.predict_proba(np.asarray(view.features("train")[row : row + 1]))[0]
    assert rows[0]["top"][0]["prob"] == pytest.approx(expected.max(), abs=1e-4)


def test_greedy_selection_picks_the_layer_that_carries_the_signal(tmp_path):
    from bottleneck.runs.layer_sets import greedy_layers

    rng = np.random.default_rng(0)

    def split(n):
        y = np.arange(n) % 3
        noise = rng.normal(size=(n, 24)).astype(np.float32)
        noise[:, 8:16] += np.eye(3, 8, dtype=np.float32)[y] * 3.0  # only "signal" knows the class
        return noise, y

    layers = [("early", 0, 8), ("signal", 8, 16), ("late", 16, 24)]
    cache = write_arrays(
        tmp_path / "c",
        {s: split(n) for s, n in (("train", 300), ("val", 150), ("test", 150))},
        class_names=["x", "y", "z"],
        layers=layers,
    )
    search = greedy_layers(cache, max_layers=3)
    assert search.steps[0]["added"] == "signal" and search.steps[0]["layers"] == ["signal"]
    assert search.steps[0]["val_accuracy"] > 0.9
    assert search.layers[0] == "signal" and search.test_accuracy > 0.9
    # Noise layers do not lower the val loss by 1 %: the search stops before taking all three.
    assert len(search.layers) < 3
    assert search.fits == 3 + 2 * (len(search.steps) >= 1)
    # Each score carries its standard errors over the val rows; per-row losses make paired comparisons.
    from sklearn.metrics import log_loss

    from bottleneck.runs.layer_sets import LayerScorer, paired_se

    scorer = LayerScorer(cache)
    row = scorer.val(["signal"])
    losses = scorer.losses(["signal"])
    assert len(losses) == 150 and row["val_loss"] == pytest.approx(losses.mean())
    head = scorer._heads[("signal",)]
    X_val = np.asarray(cache.features("val")[:])[:, 8:16]
    assert row["val_loss"] == pytest.approx(
        log_loss(cache.labels("val"), head.predict_proba(X_val)), rel=1e-6
    )
    assert row["val_loss_se"] == pytest.approx(losses.std(ddof=1) / np.sqrt(150))
    acc = row["val_accuracy"]
    assert row["val_accuracy_se"] == pytest.approx(np.sqrt(acc * (1 - acc) / 150))
    noise = scorer.val(["early"])
    assert noise["val_loss"] > row["val_loss"] + 3 * paired_se(scorer.losses(["early"]), losses)
    assert paired_se(losses, losses) == 0.0 and scorer.test(["signal"]) == search.test_accuracy
    # A subset of a cache with no column record says why, and how to get one.
    bare = write_arrays(tmp_path / "bare", {"train": split(30)}, class_names=["x", "y", "z"])
    with pytest.raises(CacheError, match="no per-layer column ranges .* extract it again"):
        bare.select("signal")
    with pytest.raises(CacheError, match="has no layer 'signl'. Did you mean signal"):
        cache.select("signl")


def test_pixels_backbone_features_are_the_resized_pixels(images, tmp_path, make_image_folder):
    from bottleneck.data import resize_image

    cache = extract(images, backbone="pixels", cache_dir=tmp_path).cache
    assert cache.config.image_size == 32 and cache.config.weights == "none"
    assert cache.feature_shape == (32 * 32 * 3,) and cache.columns == [("pixels_flat", 0, 3072)]
    ids = [str(i) for i in cache.ids("train")]
    x = np.asarray(cache.features("train")[:])
    for i in (0, 9, 23):
        img = np.asarray(Image.open(images / ids[i]).convert("RGB"))
        np.testing.assert_array_equal(x[i], resize_image(img, 32, "squash").reshape(-1).astype(np.float32))
    # Images smaller than 32 px stay at their own side.
    small = make_image_folder(tmp_path / "small", {"a": 2, "b": 2}, size=(20, 20))
    assert extract(small, backbone="pixels", cache_dir=tmp_path).cache.feature_shape == (20 * 20 * 3,)
    with pytest.raises(BackboneError, match="pixels has no weights"):
        extract(images, backbone="pixels", weights=str(images / "a" / "0.png"), cache_dir=tmp_path)


def test_compare_scores_subsets_greedy_and_the_pixel_baseline(blocks, tmp_path):
    res = runner.invoke(
        app,
        [
            "compare",
            str(blocks.path),
            "--heads",
            "logreg",
            "--layers",
            "top",
            "--layers",
            "block4c_add,block6a_project_bn",
            "--layer-search",
            "greedy",
            "--out",
            str(tmp_path),
            "--json",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    caches = [r["cache"] for r in out["rows"]]
    assert caches[0].endswith("[top_activation]") and caches[1].endswith("[block4c_add,block6a_project_bn]")
    assert out["rows"][-1]["backbone"].startswith("pixels@32 (baseline)")
    search = out["searches"][0]
    assert search["steps"] and search["layers"] == search["steps"][-1]["layers"]
    no_base = runner.invoke(
        app,
        [
            "compare",
            str(blocks.path),
            "--heads",
            "logreg",
            "--layers",
            "top",
            "--no-baseline",
            "--json",
            "-q",
            "--out",
            str(tmp_path / "n"),
        ],
    )
    assert [r["backbone"] for r in json.loads(no_base.stdout)["rows"]] == [
        "efficientnet_lite0@64[top_activation]"
    ]
    bad = runner.invoke(app, ["compare", str(blocks.path), "--layers", "block6_add", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "has no layer 'block6_add'" in bad.stderr and "Traceback" not in bad.output


@pytest.mark.parametrize(
    "layer, backbone, message",
    [
        ("multiscale", "resnet50", "layer='multiscale' has not been measured for resnet50"),
        ("blocks,top_activation", "efficientnet_lite0", "mixes the layer set 'blocks' with other names"),
    ],
)
def test_bad_layer_sets(layer, backbone, message):
    with pytest.raises(BottleneckError, match=message):
        ExtractConfig(backbone=backbone, layer=layer)


def test_multiscale_is_the_measured_list_and_shares_its_cache_key():
    from bottleneck.backbones.presets import LITE0_MULTISCALE_LAYERS

    assert ExtractConfig(layer="multiscale") == ExtractConfig(layer=LITE0_MULTISCALE_LAYERS)


@pytest.fixture(scope="module")
def stripes(tmp_path_factory):
    """3 classes x 12 images of stripes (horizontal, vertical, diagonal) at random phase, frequency and colour:
    the raw pixels cannot tell them apart, pooled features of early layers (random weights too) can."""
    src = tmp_path_factory.mktemp("stripes") / "data"
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:40]
    for c, cls in enumerate(("h", "v", "d")):
        (src / cls).mkdir(parents=True)
        for i in range(12):
            wave = np.sin((yy, xx, xx + yy)[c] * rng.uniform(0.5, 0.9) + rng.uniform(0, 2 * np.pi))
            colour = rng.uniform(60, 200, 3)
            img = 128 + wave[..., None] * colour * 0.6 + rng.normal(0, 10, (40, 40, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(src / cls / f"{i}.png")
    return src


@pytest.fixture(scope="module")
def advised(stripes, tmp_path_factory):
    """`bottleneck advise` on the stripes (random weights, 32 px; a pilot too small for its fine-tune by default):
    its JSON and its folders."""
    tmp = tmp_path_factory.mktemp("advised")
    args = ["advise", str(stripes), "--weights", "none", "--image-size", "32", "--per-class", "12"]
    args += ["--cache-dir", str(tmp / "c"), "--runs-dir", str(tmp / "runs"), "--out"]
    args += [str(tmp / "adv")]
    res = runner.invoke(app, [*args, "--json", "-q"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), args, tmp


def test_advise_scores_every_candidate_and_prints_every_row(advised):
    advice, args, tmp = advised
    # Pilot: a fifth of each class (2 of 12) held out as test, then at most 12 train per class (all 10 left), a
    # fifth of them as val.
    assert advice["pilot"] == {"train": 24, "val": 6, "test": 6}
    rows = advice["rows"]
    kinds = [r["kind"] for r in rows]
    # pixels, the top layer, Lite0's 16 block outputs and 15 expand activations alone, the presets, greedy.
    assert kinds[:2] == ["pixels", "top"] and kinds[-1] == "greedy"
    assert kinds.count("block") == 16 and kinds.count("wide") == 15
    presets = {r["name"]: r for r in rows if r["kind"] == "preset"}
    assert set(presets) == {"multiscale", "blocks", "wide"}
    assert presets["blocks"]["dims"] == 3088 and len(presets["blocks"]["layers"]) == 17
    assert len(presets["wide"]["layers"]) == 16 and presets["wide"]["layers"][-1] == "top_activation"
    assert all(n.endswith("_expand_activation") for n in presets["wide"]["layers"][:-1])
    assert rows[1]["layers"] == ["top_activation"] and rows[1]["dims"] == 1280
    # The presets select by name on the pilot cache (`compare --layers wide` reads the same columns).
    pilot = bottleneck_open(advice["caches"]["pilot"])
    assert pilot.config.layer == "blocks,wide"
    assert list(pilot.select("wide").layers) == presets["wide"]["layers"]
    assert list(pilot.select("blocks").layers) == presets["blocks"]["layers"]
    assert pilot.select("top").layers == ("top_activation",)
    n_val = advice["pilot"]["val"]
    for r in rows:
        acc = r["val_accuracy"]
        assert r["val_accuracy_se"] == pytest.approx(np.sqrt(acc * (1 - acc) / n_val))
        assert r["val_loss"] > 0 and r["val_loss_se"] >= 0 and r["test_accuracy"] is not None
    # The rule: nothing scored has a val loss lower than the chosen one by more than... one standard error of
    # the chosen; and the reason says which was lowest.
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1
    best = min(rows, key=lambda r: r["val_loss"])
    assert f"lowest val log loss: {best['name']} ({best['val_loss']:.4f})" in advice["reason"]
    assert advice["recommendation"]["layers"] == chosen[0]["layers"]
    # On stripes, the pixels are at chance and the backbone's early layers are not.
    assert rows[0]["val_accuracy"] < 0.7 and advice["recommendation"]["backbone"] == "efficientnet_lite0"
    printed = (tmp / "adv" / "advice.md").read_text()
    table = [line for line in printed.splitlines() if line.startswith("| ") and "configuration" not in line]
    assert len(table) == len(rows)
    for line, row in zip(table, rows, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == markdown_text(row["name"] + (" <-" if row["chosen"] else ""))  # as in any table
        assert cells[3] == f"{row['val_accuracy']:.4f} ± {row['val_accuracy_se']:.4f}"
        assert cells[4] == f"{row['val_loss']:.4f} ± {row['val_loss_se']:.4f}"
        assert cells[5] == f"{row['test_accuracy']:.4f}"
    assert f"Why: {advice['reason']}" in printed
    # a pilot of at most 12 train images per class: no fine-tune by default, and the note says why
    assert "fine-tune" not in {r["kind"] for r in rows} and "fine_tune" not in advice["timings"]
    n = min(12, advice["train_per_class"])
    assert f"The short fine-tune did not run: the pilot has ~{n} train images per class" in printed
    step = advice["search"]["steps"][0]
    assert f"+{step['added']} ({step['val_accuracy']:.4f}, loss {step['val_loss']:.4f})" in printed
    assert (tmp / "adv" / "layers.png").stat().st_size > 1000
    # A second advice on the same source and backbone is a cache hit: no new cache folders.
    before = sorted(p.name for p in (tmp / "c").iterdir())
    again = runner.invoke(app, [*args, "-q"])
    assert again.exit_code == 0 and "Recommended" in again.stdout
    assert sorted(p.name for p in (tmp / "c").iterdir()) == before


def test_the_printed_commands_build_the_recommended_configuration(advised):
    """The commands run verbatim in a shell, through the real CLI, on the whole source."""
    import subprocess
    import sys

    advice, _, tmp = advised
    rec = advice["recommendation"]
    script = f'bottleneck() {{ "{sys.executable}" -m bottleneck "$@"; }}\nset -e\n' + "\n".join(
        advice["commands"]
    )
    done = subprocess.run(["bash", "-c", script], cwd=tmp, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert advice["commands"][0].startswith("CACHE=$(bottleneck extract ")
    assert advice["commands"][-1].startswith("bottleneck export ")
    run = tmp / "runs" / "advised-data"
    summary = json.loads((run / "metrics.json").read_text())
    cache = bottleneck_open(summary["cache"]["path"])
    assert cache.config.backbone == rec["backbone"] == "efficientnet_lite0"
    assert [n for n, _, _ in cache.columns] == rec["layers"]
    assert summary["head"] == rec["head"] == "logreg"
    # The whole source this time: every image, not the pilot's sample.
    assert sum(cache.n(s) for s in cache.splits) == 36
    assert (run / "export" / "model.onnx").stat().st_size > 1000


def bottleneck_open(path):
    from bottleneck.cache.reader import open_cache

    return open_cache(path)


def test_the_choice_prefers_the_cheaper_configuration_within_one_standard_error():
    from bottleneck.runs.advise import choose

    def row(name, kind, dims, loss):
        return {"name": name, "kind": kind, "dims": dims, "val_loss": loss}

    pixels, top = row("pixels", "pixels", 3072, 0.40), row("top layer", "top", 1280, 0.35)
    wide = row("wide", "preset", 10208, 0.30)
    rows = [pixels, top, wide]
    # A wide standard error: every configuration is within it of the best, so the cheapest wins (no backbone).
    chosen, reason = choose(rows, lambda a, b: 0.0 if a is b else 0.2)
    assert chosen is pixels
    assert reason == (
        "lowest val log loss: wide (0.3000); pixels is within one standard error of it (+0.1000, standard error "
        "0.2000) and cheaper (no backbone), so it is chosen."
    )
    # 0.07: the top layer is within one standard error of wide, the pixels are not; fewer dims win.
    chosen, reason = choose(rows, lambda a, b: 0.0 if a is b else 0.07)
    assert chosen is top and "(1280 dims against 10208)" in reason
    # A narrow one: the lowest loss wins, and the reason names the runner-up and the margin.
    chosen, reason = choose(rows, lambda a, b: 0.0 if a is b else 0.01)
    assert chosen is wide
    assert reason.endswith("(the next, top layer, is +0.0500, standard error 0.0100).")


def test_commands_name_the_exact_configuration():
    from bottleneck.runs.recommendation import commands

    rec = {"backbone": "efficientnet_lite0", "layer": "multiscale", "fine_tune": True}
    rec["recipe"] = {
        "unfreeze": 1,
        "optimizer": "sgd",
        "lr": 0.0001,
        "momentum": 0.9,
        "gradual": True,
        "train_bn": False,
        "augment": None,
        "seed": 0,
        "stem_lr": 0.5,  # a setting the CLI has no option for goes into the comment
    }
    out = commands("data/my signs", rec, {"weights": "imagenet", "image_size": None})
    assert out == [
        "CACHE=$(bottleneck extract 'data/my signs' --backbone efficientnet_lite0 --layer multiscale)",
        """bottleneck fit-head "$CACHE" --head logreg --out 'runs/advised-my signs'""",
        "bottleneck fine-tune 'runs/advised-my signs' --unfreeze 1 --optimizer sgd --lr 0.0001 --momentum 0.9 "
        "--gradual --no-train-bn --out 'runs/advised-my signs-fine-tuned'    # and stem_lr=0.5, fine-tune's defaults",
        "bottleneck export 'runs/advised-my signs-fine-tuned' --format onnx",
    ]
    # Every option the fine-tune line may carry is an option of `bottleneck fine-tune`.
    from bottleneck.runs.recommendation import FINE_TUNE_OPTIONS

    helped = runner.invoke(app, ["fine-tune", "--help"], env={"COLUMNS": "200"}).stdout
    for key in FINE_TUNE_OPTIONS:
        assert f"--{key.replace('_', '-')}" in helped
    from bottleneck.tuning.recipe import TuneSettings

    assert set(TuneSettings().recipe()) - {"seed"} <= set(FINE_TUNE_OPTIONS)
    pixels = commands("d", {"backbone": "pixels", "layer": None, "fine_tune": False}, {"weights": "none"})
    assert pixels[0] == "CACHE=$(bottleneck extract d --backbone pixels)"
    assert pixels[-1] == "bottleneck export runs/advised-d --format onnx"


def test_advise_refuses_sources_it_cannot_measure(tmp_path, make_image_folder):
    from bottleneck.runs.advise import advise

    one = make_image_folder(tmp_path / "one", {"a": 6})
    with pytest.raises(SourceError, match="1 class\\(es\\) with train images; .* at least 2 classes"):
        advise(one, cache_dir=tmp_path / "c")
    few = make_image_folder(tmp_path / "few", {"a": 6, "b": 3})
    with pytest.raises(SourceError, match="1 class\\(es\\) have fewer than 5 train images: b \\(3\\)"):
        advise(few, cache_dir=tmp_path / "c")
    res = runner.invoke(app, ["advise", str(few), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 2 and "fewer than 5 train images" in res.stderr and "Traceback" not in res.output


def test_per_class_above_the_smallest_class_uses_what_there_is(tmp_path, make_image_folder):
    from bottleneck.data import open_source
    from bottleneck.runs.advise import check_source

    src = make_image_folder(tmp_path / "s", {"a": 12, "b": 7})
    lines = []
    with open_source(src) as s:
        assert check_source(s.manifest, 10, lines.append) == 9
    assert lines == ["per_class=10 is more than the smallest class has (7); using what there is"]
    with open_source(src, pilot={"per_class": 10, "seed": 0, "holdout": 0.2}) as s:
        counts = {(it.split, it.label) for it in s.manifest.items}
        per = {k: sum(1 for it in s.manifest.items if (it.split, it.label) == k) for k in counts}
    # 12 -> 2 held out as test, 10 train; 7 -> 1 test, 6 train.
    assert per == {("train", 0): 10, ("test", 0): 2, ("train", 1): 6, ("test", 1): 1}


def test_top_is_the_feature_layer_by_name_everywhere(images, tmp_path):
    """`top` on a multiscale cache (the feature layer first) is top_activation, not the last column."""
    options = ["--weights", "none", "--image-size", "32", "--cache-dir", str(tmp_path / "c"), "-q"]
    res = runner.invoke(app, ["extract", str(images), "--layer", "multiscale", *options])
    assert res.exit_code == 0, res.output
    cache = bottleneck_open(res.stdout.strip())
    assert [n for n, _, _ in cache.columns][0] == "top_activation"
    assert cache.select("top").layers == ("top_activation",)
    assert cache.select("top,block6a_expand_activation").layers == (
        "top_activation",
        "block6a_expand_activation",
    )
    fit = runner.invoke(
        app,
        ["fit-head", str(cache.path), "--layers", "top", "--runs-dir", str(tmp_path / "r"), "--json", "-q"],
    )
    assert fit.exit_code == 0, fit.output
    path = json.loads(fit.stdout)["path"]
    assert path.endswith("-top_activation-logreg")
    assert (
        json.loads((Path(path) / "metrics.json").read_text())["cache"]["config"]["layer"] == "top_activation"
    )
    # `extract --layer top` is the default extraction: the same cache folder.
    top = runner.invoke(app, ["extract", str(images), "--layer", "top", *options])
    default = runner.invoke(app, ["extract", str(images), *options])
    assert top.exit_code == 0 and top.stdout == default.stdout
    assert bottleneck_open(top.stdout.strip()).config.layer is None
    # In a list, top is the feature layer, recorded by its name.
    listed = runner.invoke(
        app, ["extract", str(images), "--layer", "block6a_expand_activation,top", *options]
    )
    assert listed.exit_code == 0, listed.output
    assert [n for n, _, _ in bottleneck_open(listed.stdout.strip()).columns] == [
        "block6a_expand_activation",
        "top_activation",
    ]
    # A cache without the top layer says so.
    view = cache.select("block6a_expand_activation")
    with pytest.raises(
        CacheError, match="does not hold the top layer of efficientnet_lite0 \\(top_activation\\)"
    ):
        view.select("top")


def test_wide_reads_the_widest_points_of_a_family():
    from bottleneck.backbones.build import build_feature_model

    model = build_feature_model("mobilenet_v2", weights="none", image_size=32, layer="wide")
    names = [n for n, _, _ in model.columns]
    assert len(names) == 17 and names[-1] == "out_relu"
    assert all(n.startswith("block_") and n.endswith("_expand_relu") for n in names[:-1])
    both = build_feature_model("mobilenet_v2", weights="none", image_size=32, layer="blocks,wide")
    got = [n for n, _, _ in both.columns]
    assert set(names) < set(got) and got[-1] == "out_relu" and len(got) > len(names)
    with pytest.raises(BackboneError, match="layer='wide' is not defined for vgg networks"):
        build_feature_model("vgg16", weights="none", image_size=32, layer="wide")


@pytest.mark.slow
def test_a_printed_fine_tune_command_runs_with_the_recipe_advise_measured(advised):
    """The fine-tune line (as advise prints it when a fine-tune pays) runs verbatim and repeats the recipe."""
    import subprocess
    import sys

    from bottleneck.runs.fit import fit_head
    from bottleneck.runs.recommendation import commands
    from bottleneck.tuning import fine_tune

    advice, _, tmp = advised
    rec = dict(advice["recommendation"])
    start = fit_head(bottleneck_open(advice["caches"]["pilot"]).select(rec["layers"]), "logreg", save=False)
    rec["recipe"] = fine_tune(start, epochs=1, save=False).summary["params"]
    rec["fine_tune"] = True
    names = {"backbone": rec["backbone"], "weights": "none", "image_size": 32}
    lines = commands(advice["source"], rec, names, cache_dir=tmp / "c", runs_dir=tmp / "ft")
    # Every setting of the recipe is an option now (nothing left for a comment); this network has 2 blocks, so the
    # default top 3 became both, and the line says so.
    assert "--epochs 1" in lines[2] and "--unfreeze 2 " in lines[2] and "#" not in lines[2]
    script = f'bottleneck() {{ "{sys.executable}" -m bottleneck "$@"; }}\nset -e\n' + "\n".join(lines)
    done = subprocess.run(["bash", "-c", script], cwd=tmp, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    tuned = json.loads((tmp / "ft" / "advised-data-fine-tuned" / "metrics.json").read_text())
    assert tuned["kind"] == "fine-tune" and tuned["params"]["epochs"] == 1
    assert (tmp / "ft" / "advised-data-fine-tuned" / "export" / "model.onnx").exists()


@pytest.mark.slow
def test_advise_s_short_fine_tune_runs_without_views_and_prints_that_recipe(advised, monkeypatch):
    """The pilot's fine-tune builds no augmented views (PILOT_FINE_TUNE), and a printed command repeats it."""
    from bottleneck.runs import advise as advise_module
    from bottleneck.runs.recommendation import commands

    advice, _, tmp = advised
    monkeypatch.setitem(advise_module.PILOT_FINE_TUNE, "epochs", 1)  # one epoch is enough to see the recipe
    rec = dict(advice["recommendation"])
    start = next(r for r in advice["rows"] if r["layers"] == rec["layers"] and r["kind"] != "pixels")
    notes = []
    row = advise_module._short_fine_tune(
        bottleneck_open(advice["caches"]["pilot"]), start, 0, tmp / "ft-runs", None, None, notes
    )
    assert notes == [] and row["kind"] == "fine-tune"
    assert row["recipe"]["views"] == 0 and row["recipe"]["epochs"] == 1
    rec |= {"fine_tune": True, "recipe": row["recipe"]}
    names = {"backbone": rec["backbone"], "weights": "none", "image_size": 32}
    [line] = [c for c in commands(advice["source"], rec, names, cache_dir=tmp / "c", runs_dir=tmp / "ft")
              if c.startswith("bottleneck fine-tune")]  # fmt: skip
    assert " --views 0 " in line and " --epochs 1 " in line


def test_advise_runs_its_short_fine_tune_by_default_only_on_a_pilot_of_500_per_class():
    """Below PILOT_FINE_TUNE_FROM train images per class the default advise skips the fine-tune and says why; with
    much data in the whole source the note names the fine-tune of the printed commands' run."""
    from bottleneck.runs import advise as advise_module

    pays = advise_module._pilot_fine_tune_pays
    assert advise_module.PILOT_FINE_TUNE_FROM == 500
    notes = []
    little = {"data": "little"}
    assert pays(100, little, 12, "data/my signs", "runs", notes) is False  # a pilot of 12: the smallest class
    [note] = notes
    assert note.startswith("The short fine-tune did not run: the pilot has ~12 train images per class")
    assert note.endswith("--fine-tune runs it anyway.")
    notes.clear()
    assert pays(499, {"data": "much"}, 6000, "data/my signs", "runs", notes) is False
    assert "the pilot has ~499 train images per class" in notes[0]
    assert notes[0].endswith(
        "The whole source has ~6000 per class, where fine-tuning can pay (all of Fashion-MNIST: test 0.905 -> "
        "0.941); after the commands above, `bottleneck fine-tune 'runs/advised-my signs'` measures it."
    )
    notes.clear()
    assert pays(500, little, 6000, "data/my signs", "runs", notes) is True and notes == []
    assert pays(800, little, 499, "data/my signs", "runs", notes) is False  # the source has fewer
    # not given on the command line is None: the library's default, this rule
    assert advise_module.advise.__kwdefaults__["fine_tune"] is None
