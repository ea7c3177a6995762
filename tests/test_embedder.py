"""bottleneck.Embedder: images -> features as a scikit-learn transformer, equal to extract's rows."""

import pickle

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import bottleneck
from bottleneck.errors import BottleneckError

SETTINGS = {"image_size": 64, "engine": "tensorflow"}  # real Lite0 ImageNet weights, small input


def tinted_images(n, hue, seed):
    """n noisy 48x40 images around one colour: a class the backbone must tell from the other by content."""
    rng = np.random.default_rng(seed)
    base = np.array(hue, np.float64)
    return np.clip(base + rng.normal(0, 25, size=(n, 40, 48, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    for split, n, seed in (("train", 10, 0), ("test", 5, 1)):
        for name, hue in (("blue", (30, 60, 200)), ("red", (200, 40, 30))):
            (root / split / name).mkdir(parents=True)
            for i, im in enumerate(tinted_images(n, hue, seed)):
                Image.fromarray(im).save(root / split / name / f"{i:02d}.png")
    return root


def paths_and_labels(root, split):
    paths = sorted((root / split).glob("*/*.png"))
    return [str(p) for p in paths], [p.parent.name for p in paths]


def test_embedder_in_a_pipeline_with_logistic_regression(folder):
    X_train, y_train = paths_and_labels(folder, "train")
    X_test, y_test = paths_and_labels(folder, "test")
    pipe = Pipeline(
        [
            ("embed", bottleneck.Embedder(**SETTINGS)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    pipe.fit(X_train, y_train)
    assert pipe.score(X_test, y_test) == 1.0
    assert list(pipe.predict(X_test[:1])) == [y_test[0]]
    feats = pipe.named_steps["embed"].transform(X_test)
    assert feats.shape == (10, 1280) and feats.dtype == np.float32


def test_embedder_features_equal_the_cache_rows(folder, tmp_path):
    res = bottleneck.extract(folder, backbone="efficientnet_lite0", cache_dir=tmp_path / "c", **SETTINGS)
    ids = res.cache.ids("test")
    cached = np.asarray(res.cache.features("test")[:])
    embedded = bottleneck.Embedder(**SETTINGS).transform([str(folder / i) for i in ids])
    scale = np.abs(cached).max()
    np.testing.assert_allclose(embedded, cached, rtol=0, atol=1e-6 * scale)
    # uint8 arrays go through the same RGB conversion and resize as decoded files.
    arrays = np.stack([np.asarray(Image.open(folder / i)) for i in ids])
    np.testing.assert_allclose(bottleneck.Embedder(**SETTINGS).transform(arrays), cached, atol=1e-6 * scale)


def test_embedder_is_a_clean_estimator():
    emb = bottleneck.Embedder(backbone="mobilenet_v2", weights="none", image_size=32, layer=None)
    assert emb.fit() is emb
    assert emb.get_params()["backbone"] == "mobilenet_v2"
    gray = np.zeros((2, 20, 20), np.uint8)
    first = emb.transform(gray)
    clone = pickle.loads(pickle.dumps(emb))  # the built network is not pickled, and is rebuilt equal
    assert "_engine" not in clone.__dict__
    np.testing.assert_array_equal(clone.transform(gray), first)


@pytest.mark.parametrize(
    "X,match",
    [
        (np.zeros((2, 8, 8, 3), np.float32), r"X has dtype float32; pass uint8 images"),
        (np.zeros((2, 8, 8, 2), np.uint8), r"X has shape \(2, 8, 8, 2\)"),
        ("photo.jpg", r"X is one path \(photo.jpg\); pass a list of image paths"),
        ([1, 2], r"X holds int items"),
        (3.5, r"X is a float"),
    ],
)
def test_embedder_bad_input_names_the_problem(X, match):
    with pytest.raises(BottleneckError, match=match):
        bottleneck.Embedder(backbone="mobilenet_v2", weights="none", image_size=32).transform(X)


def test_bad_setting_is_refused_at_fit():
    with pytest.raises(BottleneckError, match=r"unknown pooling='median'"):
        bottleneck.Embedder(pooling="median").fit()


def test_public_api_is_listed():
    names = set(bottleneck.__all__)
    assert {
        "extract",
        "open_cache",
        "Embedder",
        "LogRegHead",
        "MLPHead",
        "compare",
        "list_backbones",
    } <= names
    assert names <= set(dir(bottleneck))
    assert all(getattr(bottleneck, n) is not None for n in bottleneck.__all__)
