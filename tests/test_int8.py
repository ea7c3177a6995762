"""`--precision int8`: the calibration sample, the key, the quantized model's agreement with fp32 and its reuse."""

import os
from pathlib import Path

import numpy as np
import pytest

from bottleneck.cache.key import compute_key, features_key
from bottleneck.config import ExtractConfig
from bottleneck.data import open_source
from bottleneck.errors import BackboneError, BottleneckError
from bottleneck.inference.quantize import agreement, calibration_hash, calibration_items

FASHION = "/usr/share/datasets/fashion-mnist"


def test_the_calibration_sample_is_stratified_and_deterministic(tmp_path, make_image_folder):
    src = make_image_folder(tmp_path / "s", {"a": 9, "b": 5, "c": 2})
    with open_source(src) as s:
        first = calibration_items(s.manifest, 8)
        again = calibration_items(s.manifest, 8)
        everything = calibration_items(s.manifest, 100)
    assert [it.id for it in first] == [it.id for it in again]
    # Classes in turn: 3 rounds of a, b, c would be 9; the 8th image is the third round's b.
    labels = [it.label for it in first]
    assert labels == [0, 1, 2, 0, 1, 2, 0, 1]
    assert len(everything) == 16 and len({it.id for it in everything}) == 16  # all train images, once each
    assert calibration_hash(first) == calibration_hash(again) != calibration_hash(everything)


def test_int8_and_fp32_caches_have_different_keys(tmp_path, make_image_folder):
    src = make_image_folder(tmp_path / "s", {"a": 4, "b": 4})
    with open_source(src) as s:
        fp = s.manifest.fingerprint()
        ids = {"calibration_ids": calibration_hash(calibration_items(s.manifest, 256))}
    key32, m32 = compute_key(ExtractConfig(), fp)
    key8, m8 = compute_key(ExtractConfig(precision="int8"), fp, ids)
    assert key32 != key8 and features_key(m32) != features_key(m8)
    # fp32 keys are what they were before precision existed: the new settings are left out at their defaults.
    assert "precision" not in m32["config"] and "calibration" not in m32["config"]
    assert m8["config"]["precision"] == "int8"
    with pytest.raises(BottleneckError, match="unknown precision='bogus'; choose one of: fp32, int8"):
        ExtractConfig(precision="bogus")


def test_int8_weight_type_follows_the_cpu_and_joins_the_key(tmp_path, make_image_folder, monkeypatch):
    # x86 CPUs without VNNI saturate u8s8 products: there the model gets u8 weights, another model and key.
    from bottleneck.inference.plan import calibration_material as _calibration_material
    from bottleneck.inference.quantize import WEIGHTS_ENV, int8_path, int8_weights

    src = make_image_folder(tmp_path / "s", {"a": 4, "b": 4})
    cfg = ExtractConfig(precision="int8")
    with open_source(src) as s:
        fp = s.manifest.fingerprint()
        monkeypatch.setenv(WEIGHTS_ENV, "s8")
        s8 = _calibration_material(cfg, s)
        monkeypatch.setenv(WEIGHTS_ENV, "u8")
        u8 = _calibration_material(cfg, s)
    assert int8_weights() == "u8" and s8 == {"calibration_ids": u8["calibration_ids"]}  # s8 keys as before
    assert u8["int8_weights"] == "u8" and compute_key(cfg, fp, s8)[0] != compute_key(cfg, fp, u8)[0]
    model = tmp_path / "m.onnx"
    assert int8_path(model, "ab" * 8).name == "m-int8-abababababab.onnx"
    assert int8_path(model, "ab" * 8, "u8").name == "m-int8-abababababab-u8.onnx"
    monkeypatch.delenv(WEIGHTS_ENV)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if "avx2" in flags and "vnni" not in flags:
        assert int8_weights() == "u8"


def test_agreement_measures_cosine_and_relative_difference():
    a = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    b = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)
    got = agreement(a, b)
    assert got["min_cosine"] == pytest.approx(1 / np.sqrt(2)) and got["mean_cosine"] == pytest.approx(
        (1 + 1 / np.sqrt(2)) / 2
    )
    assert got["max_relative_difference"] == pytest.approx(1.0)


def test_int8_with_the_tensorflow_engine_is_one_clear_error(tmp_path, make_image_folder):
    from bottleneck.inference.runner import extract

    src = make_image_folder(tmp_path / "s", {"a": 3, "b": 3})
    with pytest.raises(
        BackboneError, match="precision='int8' runs a quantized ONNX model; drop engine='tensorflow'"
    ):
        extract(src, precision="int8", engine="tensorflow", cache_dir=tmp_path / "c")
    assert not any((tmp_path / "c").glob("*/meta.json"))


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="apt-get install dataset-fashion-mnist")
def test_int8_features_agree_with_fp32_and_the_model_is_reused(tmp_path):
    from bottleneck.data.array_sources import read_idx
    from bottleneck.inference.runner import extract

    x = read_idx(Path(FASHION) / "train-images-idx3-ubyte.gz")[:400]
    y = read_idx(Path(FASHION) / "train-labels-idx1-ubyte.gz")[:400]
    data = tmp_path / "fm.npz"
    np.savez(data, x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    lines = []
    fp32 = extract(data, engine="onnx", cache_dir=tmp_path / "c").cache
    r8 = extract(data, precision="int8", calibration=64, cache_dir=tmp_path / "c", notify=lines.append)
    assert r8.engine == "onnx-int8" and r8.cache.key != fp32.key
    record = r8.cache.meta["int8"]
    assert record["calibration_images"] == 64 and record["agreement_images"] == 64
    assert record["mean_cosine"] >= 0.97
    a, b = np.asarray(r8.cache.features("test")[:]), np.asarray(fp32.features("test")[:])
    assert agreement(a, b)["mean_cosine"] >= 0.97
    assert sum("quantizing" in line for line in lines) == 1
    model = next((tmp_path / "c" / "engines").glob("*-int8-*.onnx"))
    stamp = model.stat().st_mtime_ns
    # Recomputing the cache reuses the quantized model and its record: no second quantization.
    lines.clear()
    again = extract(
        data, precision="int8", calibration=64, cache_dir=tmp_path / "c", force=True, notify=lines.append
    )
    assert not any("quantizing" in line for line in lines) and model.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(np.asarray(again.cache.features("test")[:]), a)
    # predict runs the int8 model too: the head sees the features it was trained on.
    from bottleneck.runs import fit_head
    from bottleneck.runs.predict import run_scorer

    run = fit_head(again.cache, "logreg", params={"Cs": [1.0]}, runs_dir=tmp_path / "runs")
    scorer = run_scorer(run.path)
    from bottleneck.data import resize_image
    from bottleneck.data.decode import array_to_rgb

    img = resize_image(array_to_rgb(x[300]), 224, "squash")[None]
    row = [str(i) for i in again.cache.ids("test")].index("test/0")  # rows are ordered by label, then row
    expected = run.head.predict_proba(a[row : row + 1])
    np.testing.assert_allclose(scorer.proba(img), expected, atol=1e-5)
