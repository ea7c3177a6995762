"""bottleneck.backbones.model_file: a user's saved Keras model (.keras, .h5, SavedModel folder) as a backbone."""

from __future__ import annotations

import numpy as np
import pytest

from bottleneck.backbones.model_file import input_size, load_model_file
from bottleneck.errors import BackboneError


def tiny_cnn(size=32):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    x = layers.MaxPooling2D(name="pool_a")(x)
    x = layers.Conv2D(16, 3, activation="relu", name="conv_b")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_file_round_trips(tmp_path, batch, suffix):
    model = tiny_cnn()
    path = tmp_path / f"model{suffix}"
    model.save(path)
    loaded = load_model_file(path)
    assert loaded.input_shape == (None, 32, 32, 3)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(np.asarray(loaded(batch)), np.asarray(model(batch)), rtol=1e-6)
    assert input_size(loaded) == 32


def test_savedmodel_folder(tmp_path, batch):
    model = tiny_cnn()
    path = tmp_path / "exported"
    model.export(path, verbose=False)
    loaded = load_model_file(path)
    assert loaded.input_shape == (None, 32, 32, 3)
    assert loaded.output_shape == (None, 5)
    np.testing.assert_allclose(np.asarray(loaded(batch)), np.asarray(model(batch)), rtol=1e-5)


def test_lambda_layer_is_refused_in_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(BackboneError, match=r"Lambda layer with Python code.*safe_mode"):
        load_model_file(path)


def test_saved_model_with_our_alexnet_layers_loads(tmp_path):
    # e.g. a fine-tuned AlexNet saved by a user: its custom LRN and split-group conv layers must deserialize.
    import keras

    from bottleneck.backbones.arch.alexnet import layer_classes

    classes = layer_classes()
    inputs = keras.Input((8, 8, 3))
    x = classes["lrn"](name="norm1")(keras.layers.Conv2D(4, 1)(inputs))
    x = classes["group_conv"](6, 3, groups=2, padding="same", name="conv2")(x)
    model = keras.Model(inputs, x)
    path = tmp_path / "alex_layers.keras"
    model.save(path)
    loaded = load_model_file(path)
    assert loaded.get_layer("norm1").__class__.__name__ == "LocalResponseNormalization"
    assert loaded.get_layer("conv2").groups == 2
    batch = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(batch)), np.asarray(model(batch)), rtol=1e-6)


def test_bad_paths(tmp_path):
    with pytest.raises(BackboneError, match="does not exist; pass a .keras/.h5 file"):
        load_model_file(tmp_path / "missing.keras")
    (tmp_path / "folder").mkdir()
    with pytest.raises(BackboneError, match=r"not a TensorFlow SavedModel \(no saved_model.pb\)"):
        load_model_file(tmp_path / "folder")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(BackboneError, match=r"unknown type '.onnx'"):
        load_model_file(tmp_path / "model.onnx")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(BackboneError, match=r"broken.keras is damaged \(not a complete .keras archive"):
        load_model_file(tmp_path / "broken.keras")


def test_models_that_are_not_image_backbones(tmp_path):
    import keras

    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    path = tmp_path / "two.keras"
    keras.Model([a, b], keras.layers.Add()([a, b])).save(path)
    with pytest.raises(BackboneError, match="has 2 inputs; a backbone needs exactly one image input"):
        load_model_file(path)

    v = keras.Input((10,))
    path = tmp_path / "vector.keras"
    keras.Model(v, keras.layers.Dense(2)(v)).save(path)
    with pytest.raises(BackboneError, match=r"takes input of shape \(None, 10\); a backbone needs"):
        load_model_file(path)


def test_free_size_input(tmp_path):
    import keras

    inputs = keras.Input((None, None, 3))
    path = tmp_path / "free.keras"
    keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs)).save(path)
    assert input_size(load_model_file(path)) is None


def test_custom_model_end_to_end_through_build_feature_model(tmp_path, batch):
    from bottleneck.backbones.build import build_feature_model

    model = tiny_cnn()
    path = tmp_path / "model.keras"
    model.save(path)
    feats = build_feature_model(
        str(path), weights="imagenet", layer="conv_b", pooling="avg", preprocess="none"
    )
    import keras

    expected = keras.Model(model.input, model.get_layer("conv_b").output)(batch)
    got = np.asarray(feats(batch))
    assert got.shape == (4, 16)
    np.testing.assert_allclose(got, np.asarray(expected).mean(axis=(1, 2)), rtol=1e-5)
