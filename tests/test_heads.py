import numpy as np
import pytest
import sklearn.base
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.linear_model import LogisticRegression

from bottleneck.cache import write_arrays
from bottleneck.config import ExtractConfig
from bottleneck.errors import HeadError
from bottleneck.heads import HEADS, NotFittedError, load_head, make_head
from bottleneck.heads.streaming import ArrayBatches

# Few epochs, large steps: the blobs are far apart, so every head separates them within seconds.
FAST = {"epochs": 15, "lr": 0.05, "batch_size": 32, "patience": 15}


def blobs(n_per_class=40, k=3, shape=(8,), seed=0, sep=6.0):
    """Well-separated Gaussian blobs: class c has mean sep * e_c (on the channel axis), noise std 1."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    X = rng.normal(size=(len(y), *shape)).astype(np.float32)
    X[..., :k][np.arange(len(y)), ..., y] += sep  # same shift at every spatial position
    return X, y


def spatial_blobs(n_per_class=40, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    X = rng.normal(size=(len(y), 3, 3, 4)).astype(np.float32)
    X[np.arange(len(y)), :, :, y] += 6.0
    return X, y


def params_for(name):
    return {} if name == "logreg" else dict(FAST)


@pytest.fixture(scope="module")
def fitted():
    """One fitted head per name on separable data, with its held-out test set: (head, X_test, y_test)."""
    out = {}
    for name in HEADS:
        if name == "pool-dense":
            X, y = spatial_blobs()
            Xt, yt = spatial_blobs(seed=1)
        elif name == "sigmoid":
            X, y = blobs(k=2)
            Xt, yt = blobs(k=2, seed=1)
        else:
            X, y = blobs()
            Xt, yt = blobs(seed=1)
        out[name] = (make_head(name, **params_for(name)).fit(X, y), Xt, yt)
    return out


@pytest.mark.parametrize("name", list(HEADS))
def test_each_head_learns_a_separable_problem(fitted, name):
    head, Xt, yt = fitted[name]
    assert (head.predict(Xt) == yt).mean() >= 0.97
    proba = head.predict_proba(Xt)
    assert proba.shape == (len(yt), len(np.unique(yt))) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert head.feature_shape_ == Xt.shape[1:]
    assert list(head.classes_) == list(np.unique(yt))


@pytest.mark.parametrize("name", list(HEADS))
def test_save_load_gives_identical_predictions(fitted, tmp_path, name):
    head, Xt, _ = fitted[name]
    head.save(tmp_path / name)
    assert (tmp_path / name / "head.json").is_file()
    assert (tmp_path / name / ("logreg.npz" if name == "logreg" else "model.keras")).is_file()
    assert not list((tmp_path / name).glob("*.pkl"))
    loaded = load_head(tmp_path / name)
    assert type(loaded) is type(head) and loaded.get_params() == head.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(Xt), head.predict_proba(Xt))
    np.testing.assert_array_equal(loaded.predict(Xt), head.predict(Xt))
    assert loaded.history_.keys() == head.history_.keys()


def test_keras_history_and_early_stopping(fitted):
    head, _, _ = fitted["mlp"]
    h = head.history_
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(h)
    assert len(h["loss"]) == len(h["val_loss"]) <= FAST["epochs"]
    assert h["best_epoch"] == int(np.argmin(h["val_loss"])) + 1
    # No validation data was passed: a stratified tenth of train (4 rows per class) was held out.
    assert len(head.holdout_) == 12 and not head.streamed_


def test_patience_stops_early_and_restores_best_weights():
    X, y = blobs(n_per_class=30)
    head = make_head("linear", epochs=60, lr=0.5, batch_size=16, patience=1, random_state=3).fit(X, y)
    h = head.history_
    assert len(h["val_loss"]) < 60  # stopped
    best = h["best_epoch"]
    Xv, yv = X[head.holdout_], y[head.holdout_]
    p = head.predict_proba(Xv)
    loss = -np.mean(np.log(p[np.arange(len(yv)), yv]))
    assert loss == pytest.approx(
        h["val_loss"][best - 1], rel=1e-3
    )  # the restored weights are the best epoch's


@pytest.mark.parametrize("name", list(HEADS))
def test_bad_input_fails_with_clear_errors(name):
    head = make_head(name, **params_for(name))
    X, y = spatial_blobs() if name == "pool-dense" else blobs(k=2)
    with pytest.raises(HeadError, match=r"features must be 2-D or more.*X\[None\]"):
        head.fit(np.zeros(10, np.float32), np.zeros(10, int))
    with pytest.raises(HeadError, match=rf"y has shape \(5,\) but there are {len(X)} feature rows"):
        head.fit(X, y[:5])
    with pytest.raises(HeadError, match=r"single class \(1\).*at least 2 classes"):
        head.fit(X, np.ones(len(X), int))
    bad = X.copy()
    bad[3].flat[0] = np.nan
    with pytest.raises(HeadError, match=r"1 NaN or infinite value\(s\)"):
        head.fit(bad, y)
    with pytest.raises(HeadError, match="labels must be integer class indices"):
        head.fit(X, y.astype(str))
    with pytest.raises(NotFittedError, match=f"this {name} head is not fitted yet"):
        head.predict(X)


def test_not_fitted_is_also_sklearns_error():
    with pytest.raises(SkNotFittedError):
        make_head("logreg").predict_proba(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("name", ["logreg", "linear"])
def test_predict_refuses_other_feature_shapes_and_nan(fitted, name):
    head, Xt, _ = fitted[name]
    with pytest.raises(HeadError, match=r"feature shape \(9,\) but this .* head was trained on \(8,\)"):
        head.predict(np.zeros((2, 9), np.float32))
    with pytest.raises(HeadError, match="NaN"):
        head.predict(np.full((2, 8), np.nan, np.float32))


def test_sigmoid_is_two_class_only():
    X, y = blobs(k=3)
    with pytest.raises(HeadError, match=r"exactly 2 classes, but y has 3 \(0, 1, 2\); use --head linear"):
        make_head("sigmoid").fit(X, y)


def test_pool_dense_needs_spatial_features():
    X, y = blobs()
    with pytest.raises(HeadError, match=r"needs spatial features \(N, H, W, C\).*--pooling none"):
        make_head("pool-dense").fit(X, y)


def test_make_head_unknown_names_and_params():
    with pytest.raises(
        HeadError,
        match=r"unknown head 'mpl'; choose one of: logreg, linear, mlp, sigmoid, pool-dense\. Did you mean mlp",
    ):
        make_head("mpl")
    with pytest.raises(
        HeadError,
        match=r"head mlp has no parameter 'epoch'; its parameters are: width, .*Did you mean epochs",
    ):
        make_head("mlp", epoch=3)
    assert make_head("pool_dense").name == "pool-dense"
    with pytest.raises(HeadError, match="class_weight 'even' is not allowed"):
        make_head("linear", class_weight="even").fit(*blobs())


def test_sklearn_contract():
    head = make_head("mlp", width=32, dropout=0.1)
    assert head.get_params()["width"] == 32
    assert not [k for k in vars(head) if k.endswith("_")]  # __init__ stores hyper-parameters only
    clone = sklearn.base.clone(head)
    assert clone.get_params() == head.get_params() and clone is not head
    X, y = blobs()
    lr = make_head("logreg")
    assert lr.fit(X, y) is lr and lr.score(*blobs(seed=1)) >= 0.97


def test_logreg_matches_sklearn_for_a_fixed_c():
    X, y = blobs(k=3, sep=1.0)
    Xv, yv = blobs(k=3, sep=1.0, seed=1)
    head = make_head("logreg", Cs=[0.3], standardize=False, tol=1e-8, max_iter=5000).fit(X, y, Xv, yv)
    ref = LogisticRegression(C=0.3, tol=1e-8, max_iter=5000).fit(X, y)
    np.testing.assert_allclose(head.predict_proba(Xv), ref.predict_proba(Xv), atol=1e-5)
    assert head.C_ == 0.3 and head.history_["C"] == [0.3]


def test_logreg_chooses_c_on_validation_accuracy():
    X, y = blobs(k=3, sep=1.0)
    Xv, yv = blobs(k=3, sep=1.0, seed=1)
    grid = [1e-4, 1e-2, 1.0]
    head = make_head("logreg", Cs=grid).fit(X, y, Xv, yv)
    h = head.history_
    assert h["C"] == grid and len(h["val_accuracy"]) == 3
    best = max(range(3), key=lambda i: (h["val_accuracy"][i], -h["val_loss"][i]))
    assert head.C_ == grid[best] == h["best_C"]
    assert head.holdout_ is None
    # The recorded accuracy of the chosen C is the head's accuracy on the validation data.
    assert (head.predict(Xv) == yv).mean() == pytest.approx(h["val_accuracy"][best])


def test_logreg_default_sweep_refines_around_the_best_decade():
    X, y = blobs(k=3, sep=1.0)
    head = make_head("logreg").fit(X, y)
    cs = head.history_["C"]
    assert cs == sorted(cs) and head.C_ in cs
    assert any(not np.isclose(np.log10(c), round(np.log10(c))) for c in cs)  # half-decades tried
    assert len(head.holdout_) == 12


def test_logreg_sweep_extends_below_the_grid_when_its_edge_wins(monkeypatch):
    import bottleneck.heads.logreg as logreg

    monkeypatch.setattr(logreg, "DEFAULT_CS", (10.0, 100.0))
    X, y = blobs(n_per_class=20, k=3, shape=(200,), sep=1.0)  # few rows, many noise features: regularise
    head = make_head("logreg").fit(X, y)
    cs = head.history_["C"]
    assert min(cs) < 1.0 and head.C_ < 10.0
    assert head.C_ != min(c for c in cs if np.isclose(np.log10(c), round(np.log10(c))))  # not the edge


def test_logreg_sweeps_on_a_subset_then_fits_all_train_rows():
    X, y = blobs(k=3, sep=1.0)
    Xv, yv = blobs(k=3, sep=1.0, seed=1)
    head = make_head("logreg", Cs=[0.01, 1.0], sweep_rows=30).fit(X, y, Xv, yv)
    h = head.history_
    assert h["sweep_rows"] == 30 and len(h["C"]) == 2
    assert h["final_val_accuracy"] == pytest.approx((head.predict(Xv) == yv).mean())
    ref = LogisticRegression(C=head.C_, max_iter=1000).fit((X - head.mean_) / head.scale_, y)
    np.testing.assert_allclose(head.coef_, ref.coef_, atol=1e-2)  # the final fit saw all 120 rows
    with pytest.raises(HeadError, match="sweep_rows 0 must be a positive integer or None"):
        make_head("logreg", sweep_rows=0).fit(X, y)


def test_logreg_refit_uses_validation_rows():
    X, y = blobs(k=3, sep=1.0)
    Xv, yv = blobs(k=3, sep=1.0, seed=1)
    a = make_head("logreg", Cs=[1.0]).fit(X, y, Xv, yv)
    b = make_head("logreg", Cs=[1.0], refit=True).fit(X, y, Xv, yv)
    assert a.C_ == b.C_ == 1.0
    assert not np.allclose(a.coef_, b.coef_)
    full = np.concatenate([X, Xv])
    ref = LogisticRegression(C=1.0, max_iter=1000).fit((full - b.mean_) / b.scale_, np.concatenate([y, yv]))
    np.testing.assert_allclose(b.coef_, ref.coef_, atol=1e-2)


def test_keras_heads_are_reproducible_with_a_seed():
    X, y = blobs(sep=1.5)
    p = [
        make_head("mlp", epochs=3, batch_size=16, random_state=7).fit(X, y).predict_proba(X) for _ in range(2)
    ]
    np.testing.assert_allclose(p[0], p[1], atol=1e-6)
    q = make_head("mlp", epochs=3, batch_size=16, random_state=8).fit(X, y).predict_proba(X)
    assert not np.allclose(p[0], q, atol=1e-4)


def test_validation_classes_must_occur_in_train():
    X, y = blobs(k=2)
    Xv, yv = blobs(k=3, n_per_class=2)
    with pytest.raises(HeadError, match=r"y_val has class\(es\) \[2\] that do not occur in y"):
        make_head("logreg").fit(X, y, Xv, yv)
    with pytest.raises(HeadError, match="pass both X_val and y_val"):
        make_head("logreg").fit(X, y, Xv)


def test_streaming_from_a_zarr_cache(tmp_path):
    X, y = blobs(n_per_class=300)
    Xt, yt = blobs(n_per_class=20, seed=1)
    cache = write_arrays(tmp_path / "c", {"train": (X, y), "test": (Xt, yt)}, class_names=["a", "b", "c"])
    head = make_head("linear", in_memory=False, **FAST).fit(cache.features("train"), cache.labels("train"))
    assert head.streamed_
    assert (head.predict(cache.features("test")) == yt).mean() >= 0.97


def test_array_batches_visit_every_row_once_and_mix_classes():
    X, y = blobs(n_per_class=100, k=4)  # stored sorted by class, like a cache
    rows = np.arange(0, 400, 2)  # a subset, as when part of train is held out
    ds = ArrayBatches(X, y, rows, 16, shuffle=True, seed=0, block_rows=10, window_bytes=4 * 10 * 8 * 4)
    assert ds.blocks_per_window == 4 and len(ds) == 13

    def epoch():
        xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
        return np.concatenate(xs), np.concatenate(ys)

    x1, y1 = epoch()
    seen = np.sort(x1[:, 5])
    np.testing.assert_array_equal(seen, np.sort(X[rows, 5]))  # every selected row exactly once
    np.testing.assert_array_equal(np.bincount(y1), np.bincount(y[rows]))
    assert np.mean([len(np.unique(ds[i][1])) > 1 for i in range(len(ds))]) > 0.5  # batches mix classes
    ds.on_epoch_end()
    x2, _ = epoch()
    assert not np.array_equal(x1, x2) and np.array_equal(np.sort(x2[:, 5]), seen)
    plain = ArrayBatches(X, y, rows, 16, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([plain[i][0] for i in range(len(plain))]), X[rows])


def test_balanced_class_weight_on_imbalanced_data():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(150, int), np.ones(15, int)]
    X = (rng.normal(size=(len(y), 8)) + 1.2 * y[:, None]).astype(np.float32)
    plain = make_head("linear", **FAST).fit(X, y)
    balanced = make_head("linear", class_weight="balanced", **FAST).fit(X, y)
    # Weighting the rare class moves predictions towards it.
    assert balanced.predict_proba(X)[:, 1].mean() > plain.predict_proba(X)[:, 1].mean()


def _cache(path, shape=(8,), classes=("a", "b", "c"), key="k" * 64, **cfg):
    X, y = blobs(shape=shape)
    config = ExtractConfig(backbone="arrays", weights="none", **cfg)
    return write_arrays(path, {"train": (X, y)}, class_names=list(classes), config=config, key=key)


def test_saved_head_refuses_mismatched_caches(fitted, tmp_path):
    head, _, _ = fitted["logreg"]
    train = _cache(tmp_path / "train")
    head.save(tmp_path / "h", cache=train)
    loaded = load_head(tmp_path / "h")
    assert loaded.trained_on_["cache_key"] == "k" * 64 and loaded.trained_on_["class_names"] == [
        "a",
        "b",
        "c",
    ]
    loaded.check_cache(train)  # the same cache is fine
    with pytest.raises(
        HeadError,
        match=r"has feature shape \(9,\) but this logreg head was trained on \(8,\) \(cache train\)",
    ):
        loaded.check_cache(_cache(tmp_path / "wide", shape=(9,)))
    with pytest.raises(
        HeadError,
        match=r"other settings than the cache train this head was trained on \(pooling max here, avg when trained\)",
    ):
        loaded.check_cache(_cache(tmp_path / "other", key="o" * 64, pooling="max"))
    with pytest.raises(
        HeadError, match=r"has classes \['x', 'y', 'z'\] but this head was trained on \['a', 'b', 'c'\]"
    ):
        loaded.check_cache(_cache(tmp_path / "names", classes=("x", "y", "z")))


def test_load_head_errors(tmp_path):
    with pytest.raises(HeadError, match="no saved head at .*pass the head/ folder"):
        load_head(tmp_path)
    (tmp_path / "head.json").write_text('{"format_version": 99, "head": "logreg"}')
    with pytest.raises(HeadError, match="head format 99 .* Fit the head again"):
        load_head(tmp_path)
