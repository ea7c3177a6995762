"""Keras-applications registry, in-graph preprocessing and the feature-model builder (bottleneck.backbones.build)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bottleneck.backbones import PREPROCESS_MODES, get_spec, list_backbones
from bottleneck.errors import BackboneError, BottleneckError

KERAS_SPECS = [s for s in list_backbones() if s.weights == "keras"]


# The quick subset builds the smallest member of each family (every constructor and preprocess path); the
# others build the same code at a larger scale, marked slow (all 44 take ~6 min on 2 cores; CI runs them).
FAST_SPECS = {
    min((s for s in KERAS_SPECS if s.family == family), key=lambda s: s.params).name
    for family in {s.family for s in KERAS_SPECS}
}


def pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random float32 RGB pixels in 0..255, shape (n, size, size, 3)."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def fresh_keras():
    """Each test starts from a clean Keras graph and seed, so layer names and random weights are reproducible."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def build(*args, seed: int = 0, **kw):
    """build_feature_model with a fixed seed, so two builds with weights="none" have the same weights."""
    import keras

    from bottleneck.backbones.build import build_feature_model

    keras.utils.set_random_seed(seed)
    return build_feature_model(*args, **kw)


# --- registry -------------------------------------------------------------------------------------------------

EXPECTED_PREPROCESS = {
    "vgg": "caffe",
    "resnet": "caffe",
    "resnet_v2": "tf",
    "inception": "tf",
    "xception": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    "mobilenet_v3": "none",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "convnext": "none",
}


def test_registry_lists_every_keras_application():
    names = {s.name for s in KERAS_SPECS}
    expected = (
        {
            "vgg16",
            "vgg19",
            "resnet50",
            "resnet101",
            "resnet152",
            "resnet50_v2",
            "resnet101_v2",
            "resnet152_v2",
        }
        | {"inception_v3", "inception_resnet_v2", "xception", "mobilenet", "mobilenet_v2"}
        | {"mobilenet_v3_small", "mobilenet_v3_large", "densenet121", "densenet169", "densenet201"}
        | {f"efficientnet_b{i}" for i in range(8)}
        | {f"efficientnet_v2_{v}" for v in ("b0", "b1", "b2", "b3", "s", "m", "l")}
        | {f"convnext_{v}" for v in ("tiny", "small", "base", "large", "xlarge")}
        | {"nasnet_mobile", "nasnet_large"}
    )
    assert names == expected
    sizes = {s.name: s.input_size for s in KERAS_SPECS}
    assert [sizes[f"efficientnet_b{i}"] for i in range(8)] == [224, 240, 260, 300, 380, 456, 528, 600]
    assert [sizes[f"efficientnet_v2_{v}"] for v in ("b0", "b1", "b2", "b3", "s", "m", "l")] == [
        224,
        240,
        260,
        300,
        384,
        480,
        480,
    ]
    assert (sizes["inception_v3"], sizes["xception"], sizes["nasnet_large"]) == (299, 299, 331)


def test_spec_fields_agree_with_keras():
    import keras

    for spec in KERAS_SPECS:
        module, _, attr = spec.constructor.partition(":")
        assert module == "keras.applications" and callable(getattr(keras.applications, attr)), spec.name
        assert spec.preprocess == EXPECTED_PREPROCESS[spec.family], spec.name
        assert spec.min_size == {"inception": 75, "xception": 71}.get(spec.family, 32), spec.name


def test_registry_does_not_import_tensorflow():
    code = (
        "import sys; from bottleneck.backbones import list_backbones, get_spec; "
        "n = len(list_backbones()); get_spec('vgg16'); "
        "print(n, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    n, tf_loaded, keras_loaded = out.split()
    assert int(n) >= len(KERAS_SPECS) and (tf_loaded, keras_loaded) == ("False", "False")


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(BackboneError, match=r"unknown backbone 'resnet_50'\. Did you mean resnet50"):
        build("resnet_50", weights="none")
    with pytest.raises(BackboneError, match=r"Did you mean .*efficientnet_b0"):
        get_spec("efficientnetb0")


# --- every spec matches the real network ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(s, id=s.name, marks=[] if s.name in FAST_SPECS else [pytest.mark.slow])
        for s in KERAS_SPECS
    ],
)
def test_spec_matches_the_built_model(spec):
    model = build(spec.name, weights="none")
    assert model.input_shape == (None, spec.input_size, spec.input_size, 3)
    out = np.asarray(model(pixels(2, spec.input_size), training=False))
    assert out.shape == (2, *spec.feature_shape("avg")) and out.dtype == np.float32
    assert np.isfinite(out).all()
    # The layer before the pooling is the feature map that pooling="none" keeps.
    assert tuple(model.layers[-2].output.shape) == (None, *spec.feature_shape("none"))
    assert spec.feature_hw == tuple(model.layers[-2].output.shape[1:3])
    assert model.count_params() == spec.params


# --- preprocessing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, reference",
    [
        ("caffe", "vgg16"),
        ("caffe", "resnet50"),
        ("torch", "densenet"),
        ("tf", "mobilenet_v2"),
        ("tf", "inception_v3"),
        ("none", "efficientnet"),
        ("none", "convnext"),
    ],
)
def test_preprocess_equals_keras_preprocess_input(mode, reference):
    import keras

    from bottleneck.backbones.preprocess import preprocess

    x = pixels(3, 9, seed=1)
    expected = getattr(keras.applications, reference).preprocess_input(x.copy())
    got = np.asarray(preprocess(keras.ops.convert_to_tensor(x), mode))
    np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-6, atol=1e-5)


def test_preprocess_127_and_unknown_mode():
    from bottleneck.backbones.preprocess import Preprocess, preprocess

    x = np.array([[[[0.0, 127.0, 255.0]]]], np.float32)
    np.testing.assert_allclose(np.asarray(preprocess(x, "127")), [[[[-127 / 128, 0.0, 1.0]]]])
    assert set(PREPROCESS_MODES) == {"caffe", "torch", "tf", "127", "none"}
    with pytest.raises(BottleneckError, match=r"unknown preprocess='bgr'; choose one of: caffe, torch, tf"):
        Preprocess("bgr")


def test_preprocessing_is_inside_the_model():
    import keras

    model = build("vgg16", weights="none", image_size=32)
    assert model.layers[1].name == "preprocess" and model.layers[1].mode == "caffe"
    base = model.get_layer("vgg16")
    x = pixels(2, 32)
    pool = keras.layers.GlobalAveragePooling2D()
    with_pre = np.asarray(pool(base(keras.applications.vgg16.preprocess_input(x.copy()))))
    without = np.asarray(pool(base(x)))
    got = np.asarray(model(x))
    assert_close(got, with_pre)
    assert relative_difference(without, got) > 0.1


def test_preprocess_option_is_only_for_model_files():
    with pytest.raises(BackboneError, match=r"preprocess='tf' does not apply to vgg16: .*fixed \(caffe\)"):
        build("vgg16", weights="none", image_size=32, preprocess="tf")
    assert build("vgg16", weights="none", image_size=32, preprocess="caffe").output_shape == (None, 512)


# --- layers, pooling, sizes -----------------------------------------------------------------------------------


def test_layer_returns_spatial_maps_and_pooling_reduces_them():
    x = pixels(2, 64)
    maps = np.asarray(build("vgg16", weights="none", image_size=64, layer="block4_pool", pooling="none")(x))
    assert maps.shape == (2, 4, 4, 512)
    avg = np.asarray(build("vgg16", weights="none", image_size=64, layer="block4_pool", pooling="avg")(x))
    mx = np.asarray(build("vgg16", weights="none", image_size=64, layer="block4_pool", pooling="max")(x))
    np.testing.assert_allclose(avg, maps.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mx, maps.max(axis=(1, 2)), rtol=1e-6)
    assert avg.shape == mx.shape == (2, 512) and not np.allclose(avg, mx)


def test_default_pooling_none_keeps_the_last_feature_map():
    model = build("mobilenet_v2", weights="none", image_size=64, pooling="none")
    assert np.asarray(model(pixels(2, 64))).shape == (2, 2, 2, 1280)


def test_unknown_layer_lists_valid_names():
    with pytest.raises(BackboneError) as err:
        build("vgg16", weights="none", image_size=32, layer="block5_conv")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("unknown layer 'block5_conv' in vgg16. Did you mean block5_conv3, block5_conv2")
    assert "The last 10 of its 18 layers are: block3_conv3, block3_pool," in msg
    assert "block5_conv3, block5_pool;" in msg


def test_unknown_pooling():
    with pytest.raises(
        BottleneckError, match=r"unknown pooling='median'; choose one of: avg, max, none, cls, mean"
    ):
        build("vgg16", weights="none", pooling="median")


def test_image_size_below_the_minimum():
    with pytest.raises(BackboneError, match=r"image_size=64 is too small for xception: it needs at least 71"):
        build("xception", weights="none", image_size=64)
    with pytest.raises(BackboneError, match=r"image_size=31 is too small for resnet50"):
        build("resnet50", weights="none", image_size=31)
    with pytest.raises(BackboneError, match=r"image_size=32\.5 is not a whole number of pixels"):
        build("vgg16", weights="none", image_size=32.5)
    assert build("inception_v3", weights="none", image_size=75).output_shape == (None, 2048)
    assert build("vgg16", weights="none", image_size=np.int64(32)).input_shape == (None, 32, 32, 3)


def test_feature_shape():
    from bottleneck.backbones.build import count_params, feature_shape

    assert feature_shape("resnet50") == (2048,)
    assert feature_shape("resnet50", pooling="none") == (7, 7, 2048)
    assert feature_shape("vgg16", image_size=64, pooling="none") == (2, 2, 512)
    assert feature_shape("vgg16", image_size=64, layer="block3_pool", pooling="max") == (256,)
    assert count_params("vgg16") == 14_714_688


def test_model_is_frozen_and_batchnorm_uses_moving_statistics():
    model = build("mobilenet_v2", weights="none", image_size=32)
    assert not model.trainable and model.trainable_weights == []
    x = pixels(4, 32)
    np.testing.assert_array_equal(np.asarray(model(x, training=True)), np.asarray(model(x, training=False)))


def test_feature_model_saves_and_reloads_without_lambda(tmp_path):
    import keras

    import bottleneck.backbones.preprocess  # noqa: F401  registers the Preprocess layer

    model = build("vgg16", weights="none", image_size=32, pooling="max")
    path = tmp_path / "features.keras"
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    x = pixels(2, 32)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), rtol=1e-6)


# --- weights --------------------------------------------------------------------------------------------------


def save_legacy_h5(model, path) -> None:
    """Write weights in the legacy Keras 2 layout, as in the hand-downloaded keras.applications *_notop.h5."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.parametrize("fmt", ["weights.h5", "legacy.h5"])
def test_weights_file_of_the_same_backbone_reproduces_features(tmp_path, fmt):
    import keras

    model = build("mobilenet", weights="none", image_size=32)
    base = model.get_layer(model.layers[2].name)
    # Non-trivial BatchNorm statistics, so a file that skipped them would show.
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([g * 1.2, b + 0.05, m + 0.01, v * 0.8])
    path = tmp_path / f"mobilenet.{fmt}"
    if fmt == "weights.h5":
        base.save_weights(path)
    else:
        save_legacy_h5(base, path)
    x = pixels(2, 32)
    expected = np.asarray(model(x))
    loaded = np.asarray(build("mobilenet", weights=str(path), image_size=32, seed=1)(x))
    fresh = np.asarray(build("mobilenet", weights="none", image_size=32, seed=1)(x))
    assert expected.std() > 1e-2
    assert_close(loaded, expected)
    assert relative_difference(fresh, expected) > 0.1


@pytest.mark.parametrize(
    "source, target, detail",
    [
        (
            "vgg16",
            "vgg19",
            r"block3_conv4/kernel has shape \(3, 3, 256, 256\) in the model but \(3, 3, 256, 512\)",
        ),
        ("vgg16", "mobilenet", r"54 layers could not be loaded \(Layer 'conv1' expected 1 variables"),
    ],
)
def test_weights_file_of_another_backbone_is_a_one_line_error(tmp_path, source, target, detail):
    path = tmp_path / f"{source}.weights.h5"
    src = build(source, weights="none", image_size=32)
    src.get_layer(source).save_weights(path)
    with pytest.raises(BackboneError) as err:
        build(target, weights=str(path), image_size=32)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400
    assert msg.startswith(f"weights file {path} does not fit {target}: ")
    assert re_search(detail, msg)
    assert msg.endswith("weights='imagenet', or weights='none'.")


def test_legacy_weights_file_of_another_backbone(tmp_path):
    path = tmp_path / "vgg16_notop.h5"
    save_legacy_h5(build("vgg16", weights="none", image_size=32).get_layer("vgg16"), path)
    with pytest.raises(
        BackboneError, match=r"does not fit vgg19: Layer count mismatch .* expected 16 layers, found 13"
    ):
        build("vgg19", weights=str(path), image_size=32)


def test_missing_or_foreign_weights_file(tmp_path):
    with pytest.raises(
        BackboneError, match=r"weights file .*nope\.h5 does not exist; pass weights='imagenet', 'none'"
    ):
        build("vgg16", weights=str(tmp_path / "nope.h5"), image_size=32)
    other = tmp_path / "weights.npz"
    other.write_bytes(b"x")
    with pytest.raises(
        BackboneError, match=r"weights\.npz is not a Keras weights file; pass a \.weights\.h5"
    ):
        build("vgg16", weights=str(other), image_size=32)


@pytest.fixture
def fake_download(monkeypatch):
    """Replace Keras' downloader: weights="imagenet" then loads a local file (recording the requested name)."""
    requested = []

    def install(path=None, error=None):
        def get_file(fname=None, origin=None, **kwargs):
            requested.append(fname)
            if error:
                raise Exception(error)
            return str(path)

        monkeypatch.setattr("keras.src.utils.file_utils.get_file", get_file)
        return requested

    return install


def test_imagenet_weights_go_through_keras_download(tmp_path, fake_download):
    path = tmp_path / "notop.h5"
    reference = build("vgg16", weights="none", image_size=32)
    save_legacy_h5(reference.get_layer("vgg16"), path)
    requested = fake_download(path)
    x = pixels(2, 32)
    got = np.asarray(build("vgg16", weights="imagenet", image_size=32)(x))
    assert requested == ["vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"]
    assert_close(got, np.asarray(reference(x)))


def test_failed_download_is_a_one_line_error(fake_download):
    fake_download(
        error="URL fetch failure on https://storage.googleapis.com/x: None -- [Errno -3] name resolution"
    )
    with pytest.raises(BackboneError) as err:
        build("resnet50", weights="imagenet", image_size=32)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("cannot download the ImageNet weights of resnet50 (Exception: URL fetch failure")
    assert "pass weights=path/to/file.h5, or weights='none'." in msg


def efficientnet_b0_file(path, include_top: bool):
    """An EfficientNetB0 weights file (random weights, 32 px without the top, 224 px with it) whose stem
    Normalization holds what the real file stores: the ImageNet mean, and the stddev in the variance slot."""
    import keras

    shape = None if include_top else (32, 32, 3)
    model = keras.applications.EfficientNetB0(include_top=include_top, weights=None, input_shape=shape)
    norm = next(lyr for lyr in model.layers if isinstance(lyr, keras.layers.Normalization))
    norm.set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]), np.array(0)])
    save_legacy_h5(model, path)
    return path


def test_efficientnet_weights_file_computes_what_keras_imagenet_computes(tmp_path, fake_download):
    """Keras adds a Rescaling to EfficientNet only for weights="imagenet"; a *_notop.h5 path must match it."""
    import keras

    path = efficientnet_b0_file(tmp_path / "efficientnetb0_notop.h5", include_top=False)
    fake_download(path)
    x = pixels(2, 32)
    # The stem conv sees the normalised input directly, so a missing rescale shows at full scale there.
    opts = dict(image_size=32, layer="stem_conv", pooling="none")
    via_keras = np.asarray(build("efficientnet_b0", weights="imagenet", **opts)(x))
    via_file = np.asarray(build("efficientnet_b0", weights=str(path), **opts)(x))
    assert_close(via_file, via_keras)
    # What Keras itself computes for weights=<path>: no rescale, about 2x off.
    plain = keras.applications.EfficientNetB0(include_top=False, weights=str(path), input_shape=(32, 32, 3))
    unfolded = np.asarray(keras.Model(plain.input, plain.get_layer("stem_conv").output)(x))
    assert relative_difference(unfolded, via_keras) > 0.3


def test_efficientnet_classifier_weights_file_matches_keras_imagenet(tmp_path, fake_download):
    """classify folds the same stem rescale as extraction when B0-B7 weights come from a file."""
    import keras

    from bottleneck.backbones.build import build_classifier

    path = efficientnet_b0_file(tmp_path / "efficientnetb0.h5", include_top=True)
    fake_download(path)
    x = pixels(2, 224)

    def stem(weights):
        clf = build_classifier("efficientnet_b0", weights=weights)
        inner = next(lyr for lyr in clf.layers if isinstance(lyr, keras.Model))
        pre = next(lyr for lyr in clf.layers if lyr.name == "preprocess")
        return np.asarray(keras.Model(inner.input, inner.get_layer("stem_conv").output)(pre(x)))

    via_keras, via_file = stem("imagenet"), stem(str(path))
    assert_close(via_file, via_keras)


def test_offline_backbones_are_delegated():
    model = build("efficientnet_lite0", weights="none", image_size=32, pooling="none")
    assert model.layers[1].mode == "127"
    assert np.asarray(model(pixels(2, 32))).shape == (2, 1, 1, 1280)


# --- model files ----------------------------------------------------------------------------------------------


def test_model_file_needs_preprocess_and_its_own_weights(tmp_path):
    import keras

    inputs = keras.Input((None, None, 3))
    path = tmp_path / "free.keras"
    keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs), name="free").save(path)
    with pytest.raises(BackboneError, match=r"needs preprocess= .*: choose caffe, torch, tf, 127, none"):
        build(str(path))
    with pytest.raises(BackboneError, match=r"accepts any input size; pass image_size"):
        build(str(path), preprocess="tf")
    with pytest.raises(BackboneError, match=r"weights='none' does not apply to a model file"):
        build(str(path), preprocess="tf", weights="none", image_size=16)
    model = build(str(path), preprocess="tf", image_size=16, pooling="none")
    x = pixels(2, 16)
    assert model.output_shape == (None, 14, 14, 4)
    conv = model.get_layer("free").get_layer("conv")
    assert_close(np.asarray(model(x)), np.asarray(conv(x / 127.5 - 1.0)))
    # The model's own weights, whatever the seed.
    assert_close(
        np.asarray(build(str(path), preprocess="tf", image_size=16, pooling="none", seed=5)(x)),
        np.asarray(model(x)),
    )


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over max |b|: tolerances that hold whatever the scale of random-weight features."""
    scale = float(np.abs(b).max())
    assert scale > 0, "all-zero features compare equal to anything"
    return float(np.abs(a - b).max()) / scale


def assert_close(a: np.ndarray, b: np.ndarray, tol: float = 1e-5) -> None:
    assert a.shape == b.shape
    assert relative_difference(a, b) <= tol


def re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None
