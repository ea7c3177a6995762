"""bottleneck.runs.imagenet_top_k and `bottleneck classify`: real ImageNet top-k offline, with names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bottleneck.backbones.imagenet import class_name
from bottleneck.errors import BackboneError, BadImageError, BottleneckError, SourceError
from bottleneck.runs.imagenet_top_k import classify

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The scikit-image sample photos as files, as a user would have them: PNG and JPEG."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    cat, coffee = folder / "chelsea.png", folder / "coffee.jpg"
    Image.fromarray(skimage_data.chelsea()).save(cat)
    Image.fromarray(skimage_data.coffee()).save(coffee, quality=95)
    return cat, coffee


@pytest.fixture(autouse=True)
def weights_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BOTTLENECK_HOME", str(tmp_path_factory.getbasetemp() / "home"))


def test_lite0_top5_on_real_photos(photos):
    cat, coffee = classify(photos, backbone="efficientnet_lite0", top=5)
    assert len(cat) == len(coffee) == 5
    for preds in (cat, coffee):
        probs = [p for _, _, p in preds]
        assert probs == sorted(probs, reverse=True)
        assert all(name == class_name(i) for i, name, _ in preds)
    assert cat[0][0] in CATS and cat[0][2] > 0.5  # measured: 285 Egyptian cat, 0.79
    assert coffee[0][0] in COFFEE and coffee[0][2] > 0.5  # measured: 967 espresso, 0.90
    assert cat[0][1] == "Egyptian cat" and coffee[0][1] == "espresso"
    assert {i for i, _, _ in cat[:3]} <= set(CATS)  # the next guesses are cats too


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_lite2_on_real_photos(photos, backbone):
    from bottleneck.backbones.arch.efficientnet_lite import VARIANTS

    pytest.importorskip(VARIANTS[backbone].module)
    cat, coffee = classify(photos, backbone=backbone, top=3)
    assert cat[0][0] in CATS and coffee[0][0] in COFFEE


def test_crop_resize_also_works(photos):
    (cat,) = classify(photos[:1], top=1, resize="crop")
    assert cat[0][0] in CATS


def test_bad_arguments(photos, tmp_path):
    with pytest.raises(SourceError, match="no images given"):
        classify([])
    with pytest.raises(SourceError, match=r"not found: .*missing.jpg"):
        classify([tmp_path / "missing.jpg"])
    with pytest.raises(BottleneckError, match=r"top=0 is not allowed: an integer of at least 1"):
        classify(photos, top=0)
    with pytest.raises(BottleneckError, match=r"unknown resize='stretch'"):
        classify(photos, resize="stretch")
    with pytest.raises(
        BackboneError,
        match=r"preprocess='caffe' does not apply to efficientnet_lite0: its preprocessing is fixed \(127\)",
    ):
        classify(photos, preprocess="caffe")
    with pytest.raises(BackboneError, match="unknown backbone 'efficientnet_lite9'"):
        classify(photos, backbone="efficientnet_lite9")
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(BadImageError, match=r"cannot decode image .*bad.jpg"):
        classify([photos[0], bad])


def _tiny_classifier(path, n_classes, activation):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3)(inputs))
    keras.Model(inputs, layers.Dense(n_classes, activation=activation)(x)).save(path)


def test_model_file_classifier(photos, tmp_path):
    path = tmp_path / "clf.keras"
    _tiny_classifier(path, 7, None)  # logits: classify applies the softmax
    with pytest.raises(BackboneError, match=r"a model file \(.*\) needs preprocess="):
        classify(photos, backbone=str(path))
    results = classify(photos, backbone=str(path), top=10, preprocess="tf")
    assert [len(r) for r in results] == [7, 7]  # top is clamped to the number of classes
    assert results[0][0][1] == f"class {results[0][0][0]}"
    np.testing.assert_allclose(sum(p for _, _, p in results[0]), 1.0, rtol=1e-6)


def test_classifier_graph_preprocesses_by_the_spec():
    from bottleneck.backbones.build import build_classifier

    model = build_classifier("efficientnet_lite0", weights="none", image_size=64)
    layer = model.get_layer("preprocess")
    assert layer.mode == "127"
    assert model.input_shape == (None, 64, 64, 3) and model.output_shape == (None, 1000)
    x = np.full((1, 64, 64, 3), 255.0, np.float32)
    np.testing.assert_allclose(np.asarray(layer(x)), 1.0)  # (255 - 127) / 128


# --- CLI ---


def test_cli_prints_names(photos):
    from typer.testing import CliRunner

    from bottleneck.cli import app

    result = CliRunner().invoke(app, ["classify", *map(str, photos), "--top", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith("chelsea.png") and lines[4].endswith("coffee.jpg")
    assert "Egyptian cat" in lines[1] and "285" in lines[1] and "%" in lines[1]
    assert "espresso" in lines[5]


def test_cli_json(photos):
    from typer.testing import CliRunner

    from bottleneck.cli import app

    result = CliRunner().invoke(app, ["classify", str(photos[1]), "--top", "2", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out[0]["image"] == str(photos[1])
    assert out[0]["top"][0]["class"] == 967 and out[0]["top"][0]["name"] == "espresso"
    assert 0.5 < out[0]["top"][0]["prob"] <= 1 and len(out[0]["top"]) == 2


def test_cli_user_error_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from bottleneck.cli import app

    result = CliRunner().invoke(app, ["classify", str(tmp_path / "nope.jpg")])
    assert result.exit_code == 2
    assert "error: image file(s) not found" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    result = CliRunner().invoke(app, ["classify", str(tmp_path / "bad.png")])
    assert result.exit_code == 2 and "error: cannot decode image" in result.output


def test_imagenet_class_names():
    from bottleneck.backbones.imagenet import class_names

    names = class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (names[0], names[285], names[967], names[999]) == (
        "tench",
        "Egyptian cat",
        "espresso",
        "toilet tissue",
    )
    with pytest.raises(BottleneckError, match="ImageNet class index 1000 is out of range; use 0 to 999"):
        class_name(1000)
