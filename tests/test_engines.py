"""Engines: ONNX Runtime agrees with TensorFlow within the documented tolerance, falls back cleanly, is cached,
and the chosen engine is recorded in the cache and shown by `info`."""

import json
import os

import numpy as np
import pytest
from conftest import run_python
from PIL import Image
from typer.testing import CliRunner

from bottleneck.cli import app
from bottleneck.config import ExtractConfig
from bottleneck.inference import chooser
from bottleneck.inference.engines import ONNX_TOLERANCE, OnnxEngine, TensorFlowEngine, relative_difference
from bottleneck.inference.runner import extract

# The steps of the one chooser (``choose_engine``), tested one by one.
create_engine = chooser._tensorflow_engine
select_engine = chooser._select_engine


def probe_batch(size: int, n: int = 4, seed: int = 0) -> np.ndarray:
    """Smooth random images (not white noise), closer to what a backbone sees."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in small])


def config(backbone, size, **kw):
    # Lite0's real ImageNet weights install offline; random weights elsewhere (Keras would download them).
    weights = "imagenet" if backbone == "efficientnet_lite0" else "none"
    return ExtractConfig(backbone=backbone, weights=kw.pop("weights", weights), image_size=size, **kw)


@pytest.mark.parametrize(
    "backbone,size,pooling",
    [
        ("efficientnet_lite0", 96, "avg"),  # our own Keras build, in-graph (x - 127) / 128
        ("mobilenet_v2", 96, "avg"),  # Keras application, depthwise convs, tf-mode preprocessing
        ("vgg16", 32, "max"),  # caffe-mode preprocessing (BGR, mean subtraction), max pooling
        pytest.param("resnet50", 64, "avg", marks=pytest.mark.slow),
        pytest.param("densenet121", 64, "avg", marks=pytest.mark.slow),
        pytest.param("inception_v3", 75, "avg", marks=pytest.mark.slow),
    ],
)
def test_onnx_matches_tensorflow_within_tolerance(tmp_path, backbone, size, pooling):
    cfg = config(backbone, size, pooling=pooling, engine="onnx")
    tf_engine = create_engine(cfg)
    probe = probe_batch(size)
    notes = []
    env = dict(os.environ)
    chosen = select_engine(tf_engine, cfg, probe, cache_dir=tmp_path, notify=notes.append)
    assert dict(os.environ) == env  # converting imports tf2onnx, which sets TF_CPP_MIN_LOG_LEVEL: undone
    assert isinstance(chosen, OnnxEngine), notes
    assert chosen.feature_shape == tf_engine.feature_shape
    assert notes == [f"converting {backbone} to ONNX (once; cached in {tmp_path / 'engines'})"]
    other = probe_batch(size, n=3, seed=1)  # a batch the verification never saw, of another size
    a, b = chosen(other), tf_engine(other)
    assert a.shape == b.shape == (3, *tf_engine.feature_shape) and a.dtype == np.float32
    assert relative_difference(a, b) <= ONNX_TOLERANCE
    assert 0 <= chosen.verification.difference <= ONNX_TOLERANCE
    assert chosen.verification.feature_shape == tf_engine.feature_shape and tf_engine.verification is None
    # Distinct images give distinct features, so agreeing within the tolerance compares real signal.
    assert np.abs(a[0] - a[1]).max() > 100 * ONNX_TOLERANCE * np.abs(b).max()


def test_conversion_is_cached_and_failures_fall_back_to_tensorflow(tmp_path, monkeypatch):
    cfg = config("efficientnet_lite0", 64, engine="onnx")
    tf_engine = create_engine(cfg)
    probe = probe_batch(64)
    first = select_engine(tf_engine, cfg, probe, cache_dir=tmp_path)
    (onnx_file,) = (tmp_path / "engines").glob("*.onnx")
    assert first.path == onnx_file

    def no_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(chooser, "convert_to_onnx", no_conversion)
    notes = []
    again = select_engine(tf_engine, cfg, probe, cache_dir=tmp_path, notify=notes.append)
    assert isinstance(again, OnnxEngine) and notes == []  # cached model reused, still verified

    # A converter failure: TensorFlow, with one warning line naming the error.
    onnx_file.unlink()

    def broken(*a, **k):
        raise RuntimeError("unsupported op Foo\nwith a long trace")

    monkeypatch.setattr(chooser, "convert_to_onnx", broken)
    notes = []
    chosen = select_engine(tf_engine, cfg, probe, cache_dir=tmp_path, notify=notes.append)
    assert chosen is tf_engine
    assert (
        notes[-1] == "warning: ONNX engine unavailable (RuntimeError: unsupported op Foo); using tensorflow"
    )

    # A converted model whose features drift past the tolerance is refused and deleted.
    monkeypatch.undo()
    real_call = OnnxEngine.__call__
    monkeypatch.setattr(OnnxEngine, "__call__", lambda self, x: real_call(self, x) * 1.01)
    notes = []
    chosen = select_engine(tf_engine, cfg, probe, cache_dir=tmp_path, notify=notes.append)
    assert chosen is tf_engine and not list((tmp_path / "engines").glob("*"))  # model and its record
    assert notes[-1].startswith("warning: ONNX features differ from TensorFlow by 1.0e-02 (> 1e-04)")


def _images(root, n, seed):
    rng = np.random.default_rng(seed)
    for i, im in enumerate(probe_batch(48, n, seed)):
        cls = root / ("ab"[i % 2])
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(im.astype(int) + rng.integers(-9, 9), 0, 255).astype(np.uint8)).save(
            cls / f"{i}.png"
        )
    return root


def test_a_verified_model_is_reused_without_tensorflow(tmp_path):
    cfg = config("efficientnet_lite0", 64, engine="onnx")
    first = extract(_images(tmp_path / "one", 6, 0), cfg, cache_dir=tmp_path / "c")
    (record,) = (tmp_path / "c" / "engines").glob("*.verified.json")
    saved = json.loads(record.read_text())
    assert (
        saved["feature_shape"] == [1280] and saved["difference"] <= ONNX_TOLERANCE and saved["faster"] is None
    )
    assert first.engine == "onnx"
    # New images (a cache miss) in a fresh process: ONNX straight from the record, TensorFlow never imported.
    other = _images(tmp_path / "two", 6, 1)
    code = (
        "import sys; from bottleneck.inference.runner import extract; from bottleneck.config import ExtractConfig;"
        f"r = extract({str(other)!r}, ExtractConfig(image_size=64, engine='onnx'), cache_dir={str(tmp_path / 'c')!r});"
        "assert not r.hit and r.computed == 6 and r.engine == 'onnx', r;"
        "assert 'tensorflow' not in sys.modules, 'TF imported'"
    )
    run_python(code)
    fast = extract(other, cfg, cache_dir=tmp_path / "c").cache
    assert fast.meta["engine_difference"] == saved["difference"]
    # predict on new images takes the same shortcut.
    from bottleneck.runs import fit_head

    run = fit_head(fast, "logreg", params={"Cs": [1.0], "val_fraction": 0.34}, out=tmp_path / "run")
    code = (
        "import sys; from bottleneck.runs import predict_images;"
        f"rows = predict_images({str(run.path)!r}, [{str(other)!r}]);"
        "assert len(rows) == 6 and 'tensorflow' not in sys.modules, (len(rows), 'TF imported')"
    )
    run_python(code)
    tf = extract(other, cfg.replace(engine="tensorflow"), cache_dir=tmp_path / "tf").cache
    assert (
        relative_difference(np.asarray(fast.load("train")[0]), np.asarray(tf.load("train")[0]))
        <= ONNX_TOLERANCE
    )
    # auto trusts the record only once it has timed ONNX as the faster engine.
    assert chooser._verified_onnx_engine(cfg.replace(engine="auto"), tmp_path / "c") is None
    record.write_text(json.dumps(saved | {"faster": True}))
    assert isinstance(chooser._verified_onnx_engine(cfg.replace(engine="auto"), tmp_path / "c"), OnnxEngine)
    assert chooser._verified_onnx_engine(cfg.replace(engine="tensorflow"), tmp_path / "c") is None
    # Without its model file a record means nothing: the next run converts and verifies again.
    next(iter((tmp_path / "c" / "engines").glob("*.onnx"))).unlink()
    assert chooser._verified_onnx_engine(cfg, tmp_path / "c") is None


def test_auto_skips_conversion_on_small_runs_and_tensorflow_is_never_converted(tmp_path, monkeypatch):
    def no_conversion(*a, **k):
        raise AssertionError("should not convert")

    monkeypatch.setattr(chooser, "convert_to_onnx", no_conversion)
    tf_engine = create_engine(config("efficientnet_lite0", 64))
    probe = probe_batch(64)
    for engine, n in (("auto", chooser.AUTO_ONNX_MIN_IMAGES - 1), ("tensorflow", 10**6)):
        cfg = config("efficientnet_lite0", 64, engine=engine)
        assert select_engine(tf_engine, cfg, probe, cache_dir=tmp_path, n_images=n) is tf_engine
    assert isinstance(tf_engine, TensorFlowEngine)


def test_engine_is_recorded_and_shown_by_info(tmp_path):
    src = tmp_path / "data"
    for cls, color in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (color[0], color[1] + 20 * i, color[2])).save(src / cls / f"{i}.png")
    runner = CliRunner()
    args = [
        "extract",
        str(src),
        "--weights",
        "none",
        "--image-size",
        "64",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    res = runner.invoke(app, [*args, "--engine", "onnx", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    assert out["engine"] == "onnx" and out["splits"]["train"]["n"] == 6
    meta = json.loads((tmp_path / "c" / out["path"].split("/")[-1] / "meta.json").read_text())
    assert meta["engine"] == "onnx" and 0 <= meta["engine_difference"] <= ONNX_TOLERANCE
    info = runner.invoke(app, ["info", out["path"]])
    assert "engine onnx" in info.output
    info_json = json.loads(runner.invoke(app, ["info", out["path"], "--json"]).output)
    assert info_json["engine"] == "onnx"
    # The same data through TensorFlow: same key (engine is not a key field), same features within tolerance.
    tf_run = extract(
        src,
        ExtractConfig(weights="none", image_size=64, engine="tensorflow"),
        cache_dir=tmp_path / "tf",
    )
    assert tf_run.cache.key == out["key"] and tf_run.engine == "tensorflow"
    onnx_x = np.asarray(
        extract(src, ExtractConfig(weights="none", image_size=64), cache_dir=tmp_path / "c").cache.load(
            "train"
        )[0]
    )
    assert relative_difference(onnx_x, tf_run.cache.load("train")[0]) <= ONNX_TOLERANCE


def test_xla_tensorflow_engine_gives_the_same_features():
    plain = create_engine(config("efficientnet_lite0", 64))
    xla = create_engine(config("efficientnet_lite0", 64, xla=True))
    probe = probe_batch(64)
    assert relative_difference(xla(probe), plain(probe)) <= ONNX_TOLERANCE


def test_compute_threads_and_decode_workers_are_separate_settings(tmp_path):
    """ONNX Runtime's threads come from `threads`, not from the decode worker count (they used to be one)."""
    cfg = config("efficientnet_lite0", 64, engine="onnx", workers=2, threads=1)
    tf_engine = create_engine(cfg)
    assert tf_engine.threads == 1
    chosen = select_engine(tf_engine, cfg, probe_batch(64), cache_dir=tmp_path)
    assert isinstance(chosen, OnnxEngine) and chosen.threads == 1
    assert chosen.session.get_session_options().intra_op_num_threads == 1
    reused = chooser._verified_onnx_engine(cfg.replace(threads=2, workers=1), tmp_path)
    assert reused.threads == 2 and reused.verification == chosen.verification
    # Every engine answers the protocol's fields, so callers never guess with getattr.
    for engine in (tf_engine, chosen, reused):
        assert {"name", "input_size", "feature_shape", "threads", "verification"} <= set(dir(engine))


def test_random_weights_are_a_function_of_the_config_and_leave_the_global_random_state_alone():
    import random

    random.seed(7)
    np.random.seed(7)
    expected = (random.random(), np.random.random())
    random.seed(7)
    np.random.seed(7)
    a = create_engine(config("mobilenet_v2", 32))
    assert (random.random(), np.random.random()) == expected
    b = create_engine(config("mobilenet_v2", 32))
    batch = probe_batch(32)
    np.testing.assert_array_equal(a(batch), b(batch))
