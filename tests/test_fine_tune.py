"""Fine-tuning: block cuts per family, the start model, frozen / trained layers, cached activations, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tuning_data import CLASSES, make_model_file, noisy_images  # noqa: F401
from typer.testing import CliRunner

import bottleneck
from bottleneck import _tf
from bottleneck.errors import BackboneError, BottleneckError, TuneError


@pytest.fixture(scope="module")
def weak_run(frozen_run, tmp_path_factory):
    """An mlp head trained for one epoch on the same cache: a start that fine-tuning improves on val."""
    from bottleneck.runs import fit_head

    _, cache, _, _ = frozen_run
    return fit_head(cache, "mlp", params={"epochs": 1}, runs_dir=tmp_path_factory.mktemp("weak"))


def _weights(model) -> dict:
    return {w.path: np.array(w.numpy()) for w in model.weights}


def _one(weights: dict, suffix: str) -> np.ndarray:
    (match,) = [v for k, v in weights.items() if k.endswith(suffix)]
    return match


def test_block_cuts_of_lite0_and_resnet50():
    from bottleneck.backbones.blocks import plan_cut
    from bottleneck.backbones.build import build_backbone

    lite, *_ = build_backbone("efficientnet_lite0", weights="none", image_size=64)
    cut = plan_cut(lite, "efficientnet_lite", unfreeze=1)
    assert cut.trainable[0] == "block7a_expand_conv" and cut.trainable[-1] == "top_activation"
    assert cut.tensor_layer == "block6d_add"
    assert plan_cut(lite, "efficientnet_lite", unfreeze=2).trainable[0] == "block6d_expand_conv"
    with pytest.raises(BackboneError, match=r"unfreeze=40 is more than the 16 blocks .*block1a.*block7a"):
        plan_cut(lite, "efficientnet_lite", unfreeze=40)
    with pytest.raises(
        BackboneError, match="unknown layer 'block7a_expand_cnv'.*Did you mean block7a_expand_conv"
    ):
        plan_cut(lite, "efficientnet_lite", unfreeze_from="block7a_expand_cnv")
    resnet, *_ = build_backbone("resnet50", weights="none", image_size=64)
    cut = plan_cut(resnet, "resnet", unfreeze=1)
    assert cut.tensor_layer == "conv5_block2_out" and cut.trainable[0].startswith("conv5_block3_")
    with pytest.raises(BackboneError, match="does not know the blocks of a model file's network"):
        plan_cut(resnet, None, unfreeze=1)


def test_start_model_reproduces_the_run(frozen_run):
    from bottleneck.tuning.assembly import assemble, check_start
    from bottleneck.tuning.images import open_cache_images

    run, cache, _, _ = frozen_run
    assembled = assemble(run)
    with open_cache_images(cache) as images:
        check = check_start(assembled, run, cache, images, rows=12)
        pixels = images.pixels("test", np.arange(6))
    assert check["rows"] == 12 and check["difference"] <= 1e-4
    stored = np.asarray(cache.features("test")[:6])
    np.testing.assert_allclose(
        assembled.model.predict_on_batch(pixels), run.head.predict_proba(stored), atol=1e-4
    )
    # The start model is built from Keras' own layers only (it loads without bottleneck).
    assert all(type(lyr).__module__.startswith("keras") for lyr in assembled.model.layers)


def test_sigmoid_and_mlp_heads_become_layers():
    from bottleneck.heads import make_head
    from bottleneck.tuning.assembly import head_network

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    for name in ("sigmoid", "mlp", "logreg"):
        head = make_head(name, **({"epochs": 2} if name != "logreg" else {})).fit(X, y)
        net = head_network(head)
        np.testing.assert_allclose(net.predict_on_batch(X), head.predict_proba(X), atol=1e-5)


def test_fine_tune_trains_only_the_unfrozen_top(weak_run, tmp_path):
    from bottleneck.tuning import fine_tune
    from bottleneck.tuning.assembly import assemble

    run = weak_run
    before = _weights(assemble(run).model)
    lines = []
    tuned = fine_tune(
        run,
        unfreeze_from="block3_conv",
        epochs=3,
        lr=1e-2,
        prefix_cache="off",
        out=tmp_path / "ft",
        notify=lines.append,
    )
    keras = _tf.keras()
    after = _weights(keras.models.load_model(tmp_path / "ft" / "model.keras", compile=False))
    assert set(before) == set(after)
    for name in ("block1_conv", "block2_conv"):
        for path in [p for p in before if f"/{name}/" in p]:
            assert np.array_equal(before[path], after[path]), path
    assert not np.array_equal(_one(before, "block3_conv/kernel"), _one(after, "block3_conv/kernel"))
    head = [p for p in before if p.startswith("dense")]  # the mlp head's layers
    assert head and all(not np.array_equal(before[p], after[p]) for p in head)
    # BatchNorm: moving statistics and its scale/offset stay as loaded (train_bn=False, the default).
    for part in ("moving_mean", "moving_variance", "gamma", "beta"):
        assert np.array_equal(_one(before, f"block3_bn/{part}"), _one(after, f"block3_bn/{part}"))
    s = tuned.summary
    assert s["kind"] == "fine-tune" and s["unfrozen"]["first"] == "block3_conv"
    assert s["frozen_metrics"] == run.summary["metrics"]
    assert set(s["metrics"]) == {"val", "test"} and s["metrics"]["test"]["n"] == 18
    # Epoch 0 is the start; the kept epoch beat it on val loss without losing val accuracy.
    sel = s["selection"]
    assert sel["best epoch"] >= 1 and not sel["kept start"] and sel["epochs run"] == 3
    best = s["history"]["val_loss"][sel["best epoch"] - 1]
    assert best < sel["start"]["val_loss"] and best == min(s["history"]["val_loss"])
    assert s["metrics"]["val"]["accuracy"] >= sel["start"]["val_accuracy"]
    assert lines[1].startswith("epoch 0 (the start): val loss") and any("(best)" in x for x in lines)
    # The selection compares val losses after one temperature fitted on val (never worse than before it), and the
    # kept epoch's temperature is folded into the head: the saved model's val loss is the calibrated one.
    h = s["history"]
    assert all(c <= u + 1e-9 for c, u in zip(h["val_loss"], h["val_loss_uncalibrated"], strict=True))
    assert sel["temperature"] == h["temperature"][sel["best epoch"] - 1] and sel["temperature"] != 1.0
    assert s["metrics"]["val"]["log_loss"] == pytest.approx(best, rel=2e-3)
    assert len(s["epoch_seconds"]) == 3 and s["mode"] == "whole network"
    for f in ("model.keras", "metrics.json", "report.md", "history.png", "confusion.png"):
        assert (tmp_path / "ft" / f).is_file(), f
    # Built in a hidden sibling, renamed when whole: no partial folder or checkpoint is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft"]
    assert not (tmp_path / "ft" / "checkpoint.npz").exists()


def test_never_worse_than_the_start(frozen_run):
    """An absurd learning rate wrecks every epoch: the start weights are kept, and the run says so."""
    from bottleneck.tuning import fine_tune
    from bottleneck.tuning.assembly import assemble

    run, _, _, _ = frozen_run
    start = _weights(assemble(run).model)
    lines = []
    tuned = fine_tune(
        run,
        unfreeze_from="block2_conv",
        lr=1.0,
        lr_decay=1.0,
        warmup=0,
        epochs=3,
        patience=2,
        prefix_cache="off",
        save=False,
        notify=lines.append,
    )
    s = tuned.summary
    assert s["selection"]["best epoch"] == 0 and s["selection"]["kept start"]
    assert [x for x in lines if x.startswith("kept the start weights: no epoch beat")]
    assert any(x.startswith("kept the start weights") for x in s["notes"])
    # patience=2: two epochs without a better val loss stop the run, and it says so.
    assert s["selection"]["stopped early after"] == 2 and len(s["history"]["loss"]) == 2
    assert [x for x in lines if x.startswith("stopping early after epoch 2")]
    end = _weights(tuned.head.model)
    for path, value in start.items():
        assert np.array_equal(value, end[path]), path
    assert s["metrics"]["val"]["accuracy"] == run.summary["metrics"]["val"]["accuracy"]
    assert s["metrics"]["test"]["accuracy"] == run.summary["metrics"]["test"]["accuracy"]


def test_cached_activations_train_like_the_whole_network(frozen_run, tmp_path):
    from bottleneck.tuning import fine_tune

    run, _, _, _ = frozen_run
    # views=0: the plain images on both sides (the default draws cached views where the cut allows)
    args = {
        "unfreeze_from": "block3_conv",
        "epochs": 1,
        "lr": 1e-2,
        "save": False,
        "cache_dir": tmp_path,
        "views": 0,
    }
    cached = fine_tune(run, prefix_cache="auto", **args)
    full = fine_tune(run, prefix_cache="off", **args)
    assert cached.summary["prefix_cache"] is not None and full.summary["prefix_cache"] is None
    prefix = bottleneck.open_cache(cached.summary["prefix_cache"])
    assert prefix.config.layer == "block2_relu" and prefix.config.pooling == "none"
    assert prefix.config.dtype == "float16" and prefix.feature_shape == (16, 16, 16)
    # Same start, same batches: the first epoch's loss differs only by float16 rounding of the activations.
    a, b = cached.summary["history"]["loss"][0], full.summary["history"]["loss"][0]
    assert a == pytest.approx(b, rel=2e-3)
    # Augmentation on the fly (no views) changes the images every epoch, so it runs the whole network.
    augmented = fine_tune(run, augment="flip,contrast", **args)
    assert (
        augmented.summary["prefix_cache"] is None
        and augmented.summary["params"]["augment"] == "flip,contrast"
    )


def test_fine_tuned_run_predicts_evaluates_and_exports(frozen_run, tmp_path):
    from bottleneck.export import export_run
    from bottleneck.runs import evaluate_run, load_run, predict_images
    from bottleneck.tuning import fine_tune

    run, cache, data, _ = frozen_run
    fine_tune(run, unfreeze_from="block3_conv", epochs=1, lr=1e-2, out=tmp_path / "ft")
    tuned = load_run(tmp_path / "ft")
    result = evaluate_run(tuned, cache, split="test")
    assert result["metrics"]["test"]["accuracy"] == pytest.approx(
        tuned.summary["metrics"]["test"]["accuracy"]
    )
    record = export_run(tuned, format="keras")
    assert record["verification"]["max_difference"] <= 1e-4
    images = sorted((data / "test").rglob("*.png"))[:5]
    from_run = predict_images(tmp_path / "ft", images)
    from_file = predict_images(record["path"], images)
    for r, f in zip(from_run, from_file, strict=True):
        assert [t["class"] for t in r["top"]] == [t["class"] for t in f["top"]]
        assert np.allclose([t["prob"] for t in r["top"]], [t["prob"] for t in f["top"]], atol=1e-4)


def test_bad_input_is_one_clear_error(frozen_run, tmp_path):
    import shutil

    from bottleneck.tuning import fine_tune

    run, cache, data, _ = frozen_run
    with pytest.raises(BackboneError, match="does not know the blocks .* pass unfreeze_from=LAYER"):
        fine_tune(run, unfreeze=1, save=False)
    with pytest.raises(Exception, match="unknown augment='mirror'; choose one of: flip, crop"):
        fine_tune(run, unfreeze_from="block3_conv", augment="mirror", save=False)
    with pytest.raises(TuneError, match=r"lr=0 is not allowed: a number in \(0, 1\]; e.g. lr=0.001"):
        fine_tune(run, unfreeze_from="block3_conv", lr=0, save=False)
    # The source moved: say so, and --source finds it.
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    with pytest.raises(TuneError, match="does not exist here; pass source=PATH"):
        fine_tune(run, unfreeze_from="block3_conv", source=tmp_path / "nowhere", save=False)
    # A changed file: how many, and which.
    victim = moved / "train" / "b" / "003.png"
    Image.new("RGB", (36, 28), (1, 2, 3)).save(victim)
    (moved / "test" / "c" / "001.png").unlink()
    with pytest.raises(
        TuneError, match=r"2 image\(s\) .*1 changed \(train/b/003.png\); 1 missing \(test/c/001.png\)"
    ):
        fine_tune(run, unfreeze_from="block3_conv", source=moved, save=False)


def test_cli_fine_tune_and_export_errors(frozen_run, tmp_path):
    from bottleneck.cli import app

    run, _, _, _ = frozen_run
    runner = CliRunner()
    res = runner.invoke(app, ["fine-tune", str(run.path), "--unfreeze-from", "block9_conv", "-q"])
    assert res.exit_code == 2
    assert "unknown layer 'block9_conv'" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    out = tmp_path / "m.onnx"
    res = runner.invoke(app, ["export", str(run.path), "--format", "onnx", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "max difference" in res.output and out.is_file() and (tmp_path / "m.onnx.json").is_file()
    res = runner.invoke(app, ["export", str(run.path), "--format", "onnx", "--out", str(out)])
    assert res.exit_code == 0  # its own export, proven by the sealed sidecar: replaced
    out.write_bytes(out.read_bytes() + b"\0")  # edited since: no longer provably bottleneck's
    res = runner.invoke(app, ["export", str(run.path), "--format", "onnx", "--out", str(out)])
    assert (
        res.exit_code == 2
        and "no sealed m.onnx.json beside it proves" in res.output
        and "--force" in res.output
    )
    res = runner.invoke(app, ["export", str(run.path), "--format", "pickle"])
    assert (
        res.exit_code == 2
        and "unknown --format pickle; choose one of: keras, onnx, savedmodel, tflite" in res.output
    )


def test_unfreeze_all_with_adam_class_weights_and_augmentation(weak_run):
    from bottleneck.tuning import fine_tune
    from bottleneck.tuning.assembly import assemble

    run = weak_run
    before = _weights(assemble(run).model)
    tuned = fine_tune(
        run,
        unfreeze="all",
        optimizer="adam",
        lr=1e-2,
        class_weight="balanced",
        augment="crop,rotate,zoom",
        epochs=1,
        batch_size=8,
        save=False,
    )
    s = tuned.summary
    assert s["unfrozen"]["description"] == "all layers" and s["unfrozen"]["first"] == "block1_conv"
    assert s["params"]["optimizer"] == "adam" and "momentum" not in s["params"]
    assert s["params"]["augment"] == "crop,rotate,zoom" and s["prefix_cache"] is None
    # epochs=1: one entry of history.
    assert len(s["history"]["loss"]) == 1
    after = _weights(tuned.head.model)
    assert not np.array_equal(_one(before, "block1_conv/kernel"), _one(after, "block1_conv/kernel"))
    assert np.array_equal(_one(before, "block3_bn/moving_mean"), _one(after, "block3_bn/moving_mean"))


def test_one_step_on_cached_activations_equals_the_whole_network(frozen_run, tmp_path):
    """Two blocks unfrozen (block2, block3): one training step from the cached activations of block1_relu moves
    every trained weight as the same step through the whole network does, within float16 rounding."""
    from bottleneck.tuning.fine_tuning import prepare
    from bottleneck.tuning.images import open_cache_images
    from bottleneck.tuning.loop import Trainer
    from bottleneck.tuning.recipe import TuneSettings

    run, cache, _, _ = frozen_run
    # SGD: a step is lr x the gradient, so the moved weights compare the gradients themselves (Adam's first step
    # is lr x sign(gradient), which would hide them).
    settings = TuneSettings(
        unfreeze_from="block2_conv",
        optimizer="sgd",
        lr=1e-2,
        warmup=0,
        weight_decay=0.0,
        label_smoothing=0.1,  # the start is saturated on these easy images: smoothing gives it gradients
        batch_size=30,
        views=0,  # the plain images on both sides
    )
    moved = {}
    with open_cache_images(cache) as images:
        for mode in ("auto", "off"):
            prep = prepare(
                run, cache, images, settings.replace(prefix_cache=mode), tmp_path, None, lambda s: None
            )
            assert prep.cached == (mode == "auto")
            if prep.cached:
                assert prep.prefix.config.layer == "block1_relu"
            trainer = Trainer(prep.model, prep.groups, prep.state, settings, 1)
            before = trainer.snapshot()
            x, y, w = next(iter(prep.train_data.epoch(1)))
            assert len(y) == 30
            trainer.train_step(1, 0, x, y, w)
            moved[mode] = [a - b for a, b in zip(trainer.snapshot(), before, strict=True)]
            names = [v.path for v in prep.state]
    kernels = [i for i, n in enumerate(names) if n.endswith("conv/kernel")]
    assert {names[i].split("/")[0] for i in kernels} == {"block2_conv", "block3_conv"}
    for i in kernels + [i for i, n in enumerate(names) if n == "head_logreg/kernel"]:
        a, b = moved["auto"][i], moved["off"][i]
        assert np.abs(b).max() > 0, names[i]
        assert np.abs(a - b).max() <= 2e-2 * np.abs(b).max(), names[i]


def test_depth_groups_and_learning_rates_of_lite0():
    from bottleneck.backbones.blocks import depth_groups, plan_cut
    from bottleneck.backbones.build import build_backbone
    from bottleneck.tuning.recipe import TuneSettings, group_rates

    lite, *_ = build_backbone("efficientnet_lite0", weights="none", image_size=64)
    cut = plan_cut(lite, "efficientnet_lite", unfreeze=3)
    depth = depth_groups(lite, "efficientnet_lite", cut)
    assert set(depth) == set(cut.trainable)
    assert depth["top_conv"] == depth["block7a_project_conv"] == 1
    assert depth["block6d_expand_conv"] == 2 and depth["block6c_project_conv"] == 3
    assert group_rates(TuneSettings(lr=1e-3, lr_decay=0.5), 4) == [1e-3, 5e-4, 2.5e-4, 1.25e-4]


def test_interrupted_run_resumes_from_its_checkpoint(weak_run, tmp_path):
    from bottleneck.tuning import fine_tune
    from bottleneck.tuning.loop import TuneInterrupted

    args = {"unfreeze_from": "block3_conv", "epochs": 3, "lr": 1e-2, "prefix_cache": "off", "patience": 5}
    whole = fine_tune(weak_run, save=False, **args)

    def stop_in_epoch_2(stage, done, total):
        if stage == "epoch 2/3":
            raise KeyboardInterrupt

    out = tmp_path / "ft"
    with pytest.raises(
        TuneInterrupted, match=r"stopped in epoch 2 of 3; epochs 1-1 are saved in .*\.ft\.partial"
    ):
        fine_tune(weak_run, out=out, progress=stop_in_epoch_2, **args)
    assert (tmp_path / ".ft.partial" / "checkpoint.npz").is_file() and not out.exists()
    lines = []
    resumed = fine_tune(weak_run, out=out, notify=lines.append, **args)
    assert any(x.startswith("resuming after epoch 1 of 3") for x in lines)
    s = resumed.summary
    assert s["selection"]["resumed after"] == 1 and len(s["history"]["loss"]) == 3
    np.testing.assert_allclose(s["history"]["val_loss"], whole.summary["history"]["val_loss"], rtol=1e-4)
    assert s["selection"]["best epoch"] == whole.summary["selection"]["best epoch"]
    assert (out / "model.keras").is_file() and not (tmp_path / ".ft.partial").exists()
    # The finished run is bottleneck's own folder, sealed (metrics.json rewritten after the rename included);
    # with a user's file added it is theirs: refused before any epoch.
    from bottleneck._ownership import replace_problem

    assert replace_problem(out) is None
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BottleneckError, match=r"refusing to replace .*notes.txt\. Pass another out=FOLDER"):
        fine_tune(weak_run, out=out, **args)
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_new_options_and_their_errors(frozen_run, tmp_path):
    from bottleneck.cli import app

    run, _, _, _ = frozen_run
    runner = CliRunner()
    cases = [
        (["--lr-decay", "0"], "--lr-decay 0.0 is not allowed: a number in (0, 1]"),
        (["--views", "2", "--prefix-cache", "off"], "--views 2 trains from cached activations"),
        (["--optimizer", "adamx"], "unknown --optimizer adamx; choose one of: adamw, adam, sgd"),
        (["--schedule", "cos"], "unknown --schedule cos; choose one of: cosine, onecycle, constant"),
        (["--label-smoothing", "1"], "--label-smoothing 1.0 is not allowed: a number in [0, 1)"),
        (["--gradual"], "--gradual unfreezes one block per epoch, but --unfreeze-from block3_conv names"),
        (["--warmup", "-1"], "--warmup -1.0 is not allowed: a number in [0, inf]"),
    ]
    for extra, message in cases:
        res = runner.invoke(app, ["fine-tune", str(run.path), "--unfreeze-from", "block3_conv", "-q", *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert message in res.output and "Traceback" not in res.output, (extra, res.output)
        assert len(res.output.strip().splitlines()) == 1
    # The options reach the recipe: a run with several of them, its params as given.
    res = runner.invoke(
        app,
        [
            "fine-tune", str(run.path), "--unfreeze-from", "block3_conv", "--optimizer", "sgd", "--lr", "0.01",
            "--schedule", "onecycle", "--label-smoothing", "0", "--train-bn", "--epochs", "1", "--json",
            "--out", str(tmp_path / "ft"),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    import json

    params = json.loads(res.output)["params"]
    assert params["optimizer"] == "sgd" and params["lr"] == 0.01 and params["schedule"] == "onecycle"
    assert params["train_bn"] is True and params["label_smoothing"] == 0.0 and params["momentum"] == 0.9
