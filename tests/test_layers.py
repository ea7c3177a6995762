"""Features from several layers: each pooled, concatenated in the order given, identical to the single-layer
caches side by side; same on the ONNX engine; clear errors; `backbones --layers` lists the names."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bottleneck.cli import app
from bottleneck.config import ExtractConfig
from bottleneck.errors import BackboneError, BottleneckError
from bottleneck.inference.engines import ONNX_TOLERANCE, relative_difference
from bottleneck.inference.runner import extract

MID, MID2, TOP = "block5c_add", "block6a_expand_activation", "top_activation"  # 112, 672 and 1280 channels
runner = CliRunner()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    src = tmp_path_factory.mktemp("layers") / "data"
    rng = np.random.default_rng(3)
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(small).resize((40, 40), Image.BILINEAR).save(src / cls / f"{i}.png")
    return src


def lite0(layer, **kw):
    # Real offline weights, so the features are deterministic across separate model builds.
    return ExtractConfig(weights="imagenet", image_size=64, layer=layer, engine="tensorflow", **kw)


def test_several_layers_are_the_single_layer_features_side_by_side(images, tmp_path):
    multi = extract(images, lite0(f"{TOP}, {MID},{MID2}"), cache_dir=tmp_path / "c").cache
    assert multi.feature_shape == (1280 + 112 + 672,)
    x, y = multi.load("train")
    singles = [extract(images, lite0(n), cache_dir=tmp_path / "c").cache for n in (TOP, MID, MID2)]
    assert len({multi.key, *(c.key for c in singles)}) == 4
    expected = np.concatenate([np.asarray(c.load("train")[0]) for c in singles], axis=1)
    np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-5, atol=1e-5)
    assert list(y) == [0, 0, 0, 1, 1, 1]
    # The default layer of Lite0 is its top activation: naming it alone gives the default features.
    default = extract(images, lite0(None), cache_dir=tmp_path / "c").cache.load("train")[0]
    np.testing.assert_allclose(np.asarray(default), expected[:, :1280], rtol=1e-5, atol=1e-5)
    # Spaces after commas are one spelling of the same list: a cache hit, not a second cache.
    again = extract(images, lite0(f"{TOP},{MID},{MID2}"), cache_dir=tmp_path / "c")
    assert again.hit and again.cache.key == multi.key
    # Order is part of the features (and so of the key).
    swapped = extract(images, lite0(f"{MID},{TOP},{MID2}"), cache_dir=tmp_path / "c").cache
    assert swapped.key != multi.key
    np.testing.assert_allclose(
        np.asarray(swapped.load("train")[0])[:, :112], expected[:, 1280:1392], atol=1e-5
    )


def test_max_pooling_of_several_layers(images, tmp_path):
    multi = extract(images, lite0(f"{MID},{TOP}", pooling="max"), cache_dir=tmp_path / "c").cache
    single = extract(images, lite0(MID, pooling="max"), cache_dir=tmp_path / "c").cache
    np.testing.assert_allclose(
        np.asarray(multi.load("train")[0])[:, :112], np.asarray(single.load("train")[0]), atol=1e-5
    )


def test_onnx_engine_gives_the_same_multi_layer_features(images, tmp_path):
    tf = extract(images, lite0(f"{TOP},{MID2}"), cache_dir=tmp_path / "tf").cache.load("train")[0]
    onnx = extract(images, lite0(f"{TOP},{MID2}").replace(engine="onnx"), cache_dir=tmp_path / "onnx")
    assert onnx.engine == "onnx"
    assert relative_difference(np.asarray(onnx.cache.load("train")[0]), np.asarray(tf)) <= ONNX_TOLERANCE


@pytest.mark.parametrize(
    "layer,pooling,message",
    [
        ("a,,b", "avg", "layer='a,,b' has an empty layer name; pass names separated by single commas"),
        ("a, b,a", "avg", "layer='a, b,a' lists a more than once; list each layer once."),
        (
            "a,b",
            "none",
            "layer='a,b' lists 2 layers, whose maps have different sizes, so they can only be joined",
        ),
    ],
)
def test_bad_layer_lists_are_refused(layer, pooling, message):
    with pytest.raises(BottleneckError) as exc:
        ExtractConfig(layer=layer, pooling=pooling)
    assert str(exc.value).startswith(message)


def test_an_unknown_layer_in_a_list_is_named_before_anything_is_written(images, tmp_path):
    with pytest.raises(
        BackboneError, match=r"^unknown layer 'top_activaton' in efficientnet_lite0\. Did you mean"
    ):
        extract(images, lite0(f"{MID},top_activaton"), cache_dir=tmp_path / "c")
    assert not any((tmp_path / "c").glob("*/meta.json"))
    res = runner.invoke(
        app,
        ["extract", str(images), "--layer", "a,a", "--cache-dir", str(tmp_path / "c")],
    )
    assert (
        res.exit_code == 2
        and res.stderr.strip() == "error: --layer a,a lists a more than once; list each layer once."
    )


def test_backbones_lists_layers_with_shapes():
    res = runner.invoke(app, ["backbones", "efficientnet_lite0", "--layers", "--image-size", "64"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("efficientnet_lite0: ") and "layers, input to output" in lines[0]
    assert lines[-1].split() == ["top_activation", "2x2x1280"]
    assert any(line.split() == [MID2, "4x4x672"] for line in lines)
    rows = json.loads(runner.invoke(app, ["backbones", "efficientnet_lite0", "--layers", "--json"]).output)
    assert rows[-1] == {"name": "top_activation", "shape": [7, 7, 1280]} and len(rows) == len(lines) - 1
    many = runner.invoke(app, ["backbones", "resnet*", "--layers"])
    assert many.exit_code == 2 and "matches 6 (resnet101, resnet101_v2" in many.stderr


def test_predict_rebuilds_the_same_layers_as_the_cache(images, tmp_path):
    from bottleneck.runs import fit_head, predict_images

    cache = extract(images, lite0(f"{TOP},{MID2}"), cache_dir=tmp_path / "c").cache
    run = fit_head(cache, "logreg", params={"Cs": [1.0], "val_fraction": 0.34}, out=tmp_path / "run")
    rows = predict_images(run.path, [images], top=2)
    ids = list(cache.ids("train"))
    assert [r["image"].split("data/")[-1] for r in rows] == ids
    # The probabilities from fresh images equal the head's on the cached rows: same layers, same order.
    cached = run.head.predict_proba(np.asarray(cache.load("train")[0]))
    for r, p in zip(rows, cached, strict=True):
        assert r["top"][0]["prob"] == pytest.approx(p.max(), abs=1e-4)


def test_compare_tells_caches_of_one_backbone_apart(images, tmp_path):
    from bottleneck.runs import compare

    caches = [
        extract(images, lite0(layer), cache_dir=tmp_path / "c").cache
        for layer in (None, MID2, f"{TOP},{MID2}")
    ]
    result = compare(caches, ["logreg"], params={"Cs": [1.0], "val_fraction": 0.34})
    assert [r["backbone"] for r in result.rows] == [
        "efficientnet_lite0@64",
        f"efficientnet_lite0@64[{MID2}]",
        "efficientnet_lite0@64[2 layers]",
    ]


def test_layers_without_maps_or_vectors_cannot_be_joined(tmp_path):
    import keras

    from bottleneck.backbones.build import build_feature_model

    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    tokens = keras.layers.Reshape((14 * 14, 4), name="tokens")(conv)  # (N, 196, 4): neither map nor vector
    path = tmp_path / "tokens.keras"
    keras.Model(inputs, keras.layers.GlobalAveragePooling1D(name="gap")(tokens)).save(path)
    joined = build_feature_model(str(path), layer="conv,gap", preprocess="none")
    assert tuple(joined.output_shape) == (None, 8)
    with pytest.raises(
        BackboneError, match=r"^layer='conv,tokens' mixes layers whose outputs are not feature"
    ):
        build_feature_model(str(path), layer="conv,tokens", preprocess="none")


def test_example_scripts_default_to_the_multiscale_set_for_lite0_only():
    from bottleneck.backbones.presets import LITE0_MULTISCALE_LAYERS, example_layers

    assert example_layers(None) == LITE0_MULTISCALE_LAYERS
    assert example_layers(None, "vgg16") is None
    # "top" is the backbone's feature layer, as everywhere: the default extraction's cache.
    assert example_layers("top") == "top" and ExtractConfig(layer=example_layers("top")).layer is None
    assert example_layers(f"{TOP},{MID}", "vgg16") == f"{TOP},{MID}"
