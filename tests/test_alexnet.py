"""bottleneck.backbones.arch.alexnet: bvlc_alexnet.npy loads through a restricted unpickler; the graph matches the classic port."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from bottleneck.backbones import get_spec
from bottleneck.backbones.arch import alexnet
from bottleneck.errors import BackboneError


@pytest.fixture(scope="module")
def bvlc_file(tmp_path_factory):
    """A synthetic bvlc_alexnet.npy: the real layer names and shapes (61 M floats), small random values."""
    rng = np.random.default_rng(0)
    weights = {}
    for name, (w_shape, b_shape) in alexnet.WEIGHT_SHAPES.items():
        fan_in = int(np.prod(w_shape[:-1]))
        w = (rng.random(w_shape, dtype=np.float32) - 0.5) * np.float32(2 * np.sqrt(3.0 / fan_in))
        weights[name] = [w, (rng.random(b_shape, dtype=np.float32) * 0.1)]
    path = tmp_path_factory.mktemp("alexnet") / "bvlc_alexnet.npy"
    np.save(path, weights, allow_pickle=True)  # writing our own dict; reading goes through the safe loader
    return path, weights


@pytest.fixture(scope="module")
def model(bvlc_file):
    return alexnet.AlexNet(include_top=True, weights=str(bvlc_file[0]))


def test_loader_returns_every_layer_with_the_real_shapes(bvlc_file):
    path, weights = bvlc_file
    loaded = alexnet.load_bvlc_weights(path)
    assert list(loaded) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    for name, (w, b) in loaded.items():
        assert (w.shape, b.shape) == alexnet.WEIGHT_SHAPES[name]
        assert w.dtype == np.float32
        np.testing.assert_array_equal(w, weights[name][0])
        np.testing.assert_array_equal(b, weights[name][1])


def test_features_are_fc7_4096(bvlc_file, model):
    headless = alexnet.AlexNet(include_top=False, weights=str(bvlc_file[0]))
    assert headless.output_shape == (None, 4096)
    assert headless.layers[-1].name == "fc7"
    x = np.random.default_rng(1).normal(0, 50, (2, 227, 227, 3)).astype(np.float32)
    feats = np.asarray(headless(x))
    assert feats.shape == (2, 4096) and feats.dtype == np.float32
    assert (feats >= 0).all() and (feats > 0).any()  # post-ReLU, not dead
    np.testing.assert_allclose(
        feats, _fc7(model, x), rtol=1e-5
    )  # the headless model is the classifier's trunk
    np.testing.assert_array_equal(headless.get_layer("fc6").get_weights()[0], bvlc_file[1]["fc6"][0])


def _fc7(model, x):
    import keras

    return np.asarray(keras.Model(model.input, model.get_layer("fc7").output)(x))


def _classic_forward(weights, x):
    """The caffe-tensorflow AlexNet written with raw TF ops: groups as explicit splits, LRN, (h, w, c) flatten."""
    import tensorflow as tf

    def conv(x, name, stride, padding, groups):
        w, b = weights[name]
        xs = tf.split(x, groups, axis=3)
        ws = tf.split(w, groups, axis=3)
        y = tf.concat([tf.nn.conv2d(a, k, stride, padding) for a, k in zip(xs, ws, strict=True)], axis=3)
        return tf.nn.relu(y + b)

    def lrn(x):
        return tf.nn.local_response_normalization(x, depth_radius=2, alpha=2e-5, beta=0.75, bias=1.0)

    def pool(x):
        return tf.nn.max_pool2d(x, 3, 2, "VALID")

    x = pool(lrn(conv(x, "conv1", 4, "VALID", 1)))
    x = pool(lrn(conv(x, "conv2", 1, "SAME", 2)))
    x = conv(x, "conv3", 1, "SAME", 1)
    x = conv(x, "conv4", 1, "SAME", 2)
    x = pool(conv(x, "conv5", 1, "SAME", 2))
    x = tf.reshape(x, [x.shape[0], -1])
    x = tf.nn.relu(x @ weights["fc6"][0] + weights["fc6"][1])
    x = tf.nn.relu(x @ weights["fc7"][0] + weights["fc7"][1])
    return tf.nn.softmax(x @ weights["fc8"][0] + weights["fc8"][1]).numpy()


def test_graph_matches_the_classic_port(bvlc_file, model):
    x = np.random.default_rng(2).normal(0, 60, (2, 227, 227, 3)).astype(np.float32)
    probs = np.asarray(model(x))
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs, _classic_forward(bvlc_file[1], x), rtol=1e-4, atol=1e-7)


def test_spatial_sizes_follow_caffe(model):
    assert model.get_layer("conv1").output.shape[1:] == (55, 55, 96)
    assert model.get_layer("pool2").output.shape[1:] == (13, 13, 256)
    assert model.get_layer("pool5").output.shape[1:] == (6, 6, 256)


def test_random_model_matches_spec():
    spec = get_spec("alexnet")
    m = alexnet.AlexNet(weights=None)
    assert m.output_shape == (None, spec.feature_dim)
    assert m.count_params() == spec.params
    assert spec.preprocess == "caffe" and spec.weights == "file" and spec.input_size == 227
    assert alexnet.AlexNet(weights=None, input_shape=(242, 242, 3)).output_shape == (None, 4096)


def test_sizes_that_do_not_fit_the_fc_layers():
    with pytest.raises(BackboneError, match=r"side from 227 to 242 pixels; use image_size=227"):
        alexnet.AlexNet(weights=None, input_shape=(224, 224, 3))


def test_imagenet_weights_need_a_path():
    with pytest.raises(
        BackboneError, match=r"alexnet has no downloadable weights; pass weights=path/to/bvlc_alexnet.npy"
    ):
        alexnet.AlexNet(weights="imagenet")


def test_python2_style_protocol2_file(tmp_path):
    # Files re-saved with protocol 2 spell bytes as _codecs.encode(str, "latin1"): allowed, and only that.
    d = {"conv1": [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.float32)]}
    path = tmp_path / "p2.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array(d, dtype=object), fh, protocol=2)
    got = alexnet.load_npy_dict(path)
    np.testing.assert_array_equal(got["conv1"][0], d["conv1"][0])


def _npy_with_pickle(path, payload: bytes):
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(payload)


@pytest.mark.parametrize("module,name", [("os", "system"), ("subprocess", "getoutput"), ("builtins", "exec")])
def test_crafted_npy_is_refused_before_running_anything(tmp_path, module, name):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}".encode()
    payload = (
        b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"(X" + len(cmd).to_bytes(4, "little") + cmd + b"tR."
    )
    path = tmp_path / "evil.npy"
    _npy_with_pickle(path, payload)
    with pytest.raises(BackboneError, match=rf"asks to load {module}\.{name}.*only NumPy arrays"):
        alexnet.load_bvlc_weights(path)
    assert not marker.exists()


def test_codecs_encode_only_latin1(tmp_path):
    payload = b"\x80\x02c_codecs\nencode\n(X\x01\x00\x00\x00aX\x05\x00\x00\x00rot13tR."
    path = tmp_path / "codec.npy"
    _npy_with_pickle(path, payload)
    with pytest.raises(BackboneError, match="corrupt or truncated.*only latin1"):
        alexnet.load_npy_dict(path)


def test_plain_array_and_wrong_shapes(tmp_path):
    path = tmp_path / "plain.npy"
    np.save(path, np.zeros((3, 3), np.float32))
    with pytest.raises(
        BackboneError, match=r"holds a float32 array of shape \(3, 3\), not a pickled weights dict"
    ):
        alexnet.load_bvlc_weights(path)

    path = tmp_path / "small.npy"
    small = {name: [np.zeros(2, np.float32), np.zeros(2, np.float32)] for name in alexnet.WEIGHT_SHAPES}
    np.save(path, small, allow_pickle=True)
    with pytest.raises(
        BackboneError, match=r"conv1 weights have shape \(2,\), AlexNet needs \(11, 11, 3, 96\)"
    ):
        alexnet.load_bvlc_weights(path)

    path = tmp_path / "missing.npy"
    np.save(
        path, {"conv1": [np.zeros((11, 11, 3, 96), np.float32), np.zeros(96, np.float32)]}, allow_pickle=True
    )
    with pytest.raises(BackboneError, match=r"has no 'conv2'"):
        alexnet.load_bvlc_weights(path)

    with pytest.raises(BackboneError, match="does not exist"):
        alexnet.load_bvlc_weights(tmp_path / "nope.npy")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(BackboneError, match="is not a .npy file"):
        alexnet.load_bvlc_weights(tmp_path / "text.npy")


def test_lrn_matches_the_caffe_formula():
    x = np.random.default_rng(3).normal(0, 30, (1, 2, 2, 9)).astype(np.float32)
    y = np.asarray(alexnet.lrn_class()(name="lrn")(x))
    sq = np.pad(x**2, [(0, 0), (0, 0), (0, 0), (2, 2)])
    window = sum(sq[..., i : i + 9] for i in range(5))
    # Caffe: x / (1 + alpha / n * sum)^beta with n = 5, alpha = 1e-4.
    np.testing.assert_allclose(y, x / (1.0 + 1e-4 / 5 * window) ** 0.75, rtol=1e-5)


def test_split_group_conv_equals_keras_grouped_conv():
    """The ONNX-friendly split conv gives the same result as Keras' own grouped Conv2D with the same kernel."""
    import keras

    from bottleneck.backbones.arch.alexnet import layer_classes

    x = np.random.default_rng(4).normal(size=(2, 9, 9, 6)).astype(np.float32)
    ours = layer_classes()["group_conv"](4, 3, groups=2, padding="same")
    ref = keras.layers.Conv2D(4, 3, groups=2, padding="same")
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(ours.get_weights())
    assert ours.kernel.shape == (3, 3, 3, 4)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), rtol=1e-5, atol=1e-6)
