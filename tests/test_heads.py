import random

import numpy as np
import pytest
import scipy.sparse
import sklearn.base
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.linear_model import LogisticRegression

from bottleneck import _tf
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
    # Overlapping blobs: at lr 0.5 the validation loss turns up within a few epochs whatever the seed (far-apart
    # blobs may improve for all 60 epochs, depending on the batch order).
    X, y = blobs(n_per_class=30, sep=2.0)
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
    with pytest.raises(
        HeadError, match=r"y holds continuous values such as .*Unknown label type: continuous"
    ):
        head.fit(X, y + 0.5)
    with pytest.raises(HeadError, match=r"y cannot be read as class labels .*one kind for all rows"):
        head.fit(X, np.array(["a", 1] * (len(X) // 2), dtype=object))
    with pytest.raises(HeadError, match=r"y contains \d+ NaN or infinite label\(s\)"):
        head.fit(X, np.where(y == 0, np.nan, y))
    with pytest.raises(HeadError, match="requires y to be passed, but the target y is None"):
        head.fit(X, None)
    with pytest.raises(HeadError, match=r"sparse input is not supported.*X\.toarray\(\)"):
        head.fit(scipy.sparse.csr_matrix(X.reshape(len(X), -1)), y)
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
    with pytest.raises(HeadError, match=r"exactly 2 classes, but y has 3 \(0, 1, 2\); use head='linear'"):
        make_head("sigmoid").fit(X, y)


def test_pool_dense_needs_spatial_features():
    X, y = blobs()
    with pytest.raises(HeadError, match=r"needs spatial features \(N, H, W, C\).*pooling='none'"):
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
    with pytest.raises(HeadError, match=r"class_weight='even' is not allowed: None, 'balanced' or a dict"):
        make_head("linear", class_weight="even")
    head = make_head("linear")
    head.class_weight = "even"  # set after make_head: fit checks the declared constraints again
    with pytest.raises(HeadError, match=r"class_weight='even' is not allowed"):
        head.fit(*blobs())


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
    with pytest.raises(HeadError, match=r"sweep_rows=0 is not allowed: None or an integer of at least 1"):
        make_head("logreg", sweep_rows=0)


@pytest.mark.parametrize("options", [{}, {"sweep_rows": 40}, {"refit": True}, {"class_weight": "balanced"}])
def test_logreg_with_fewer_rows_than_features_solves_in_their_row_space(monkeypatch, options):
    import bottleneck.heads.logreg as logreg

    # 60 rows of 400 features (3 informative): the sweep runs on 60 (or its 40) columns, and gives the model
    # that lbfgs finds on all 400 features, within the solver's tolerance (float32 rows: about 1e-4 in
    # probability after a final fit on all rows, which starts from either sweep's solution).
    X, y = blobs(n_per_class=20, k=3, shape=(400,), sep=3.0)
    Xv, yv = blobs(n_per_class=20, k=3, shape=(400,), sep=3.0, seed=1)
    Xt, _ = blobs(n_per_class=50, k=3, shape=(400,), sep=3.0, seed=2)
    params = {"Cs": [0.003, 0.03], "tol": 1e-8, "max_iter": 5000} | options
    row = make_head("logreg", **params).fit(X, y, Xv, yv)
    assert row.history_["sweep_dims"] == row.history_["sweep_rows"] == (39 if "sweep_rows" in options else 60)
    monkeypatch.setattr(logreg, "ROW_SPACE_UP_TO", 0)
    full = make_head("logreg", **params).fit(X, y, Xv, yv)
    assert full.history_["sweep_dims"] == 400
    assert row.C_ == full.C_ and row.history_["val_accuracy"] == full.history_["val_accuracy"]
    np.testing.assert_allclose(row.history_["val_loss"], full.history_["val_loss"], atol=1e-5)
    assert row.coef_.shape == full.coef_.shape == (3, 400)
    np.testing.assert_allclose(row.predict_proba(Xt), full.predict_proba(Xt), atol=1e-3)


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


def test_array_batches_visit_every_row_once_and_mix_classes(tmp_path):
    X, y = blobs(n_per_class=100, k=4)  # stored sorted by class, like a cache
    # On disk (a memmap), as when streaming: windows of stored blocks are shuffled, not single rows.
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=X.dtype, shape=X.shape)
    X[:] = blobs(n_per_class=100, k=4)[0]
    rows = np.arange(0, 400, 2)  # a subset, as when part of train is held out
    ds = ArrayBatches(X, y, rows, 16, shuffle=True, seed=0, block_rows=10, window_bytes=4 * 10 * 8 * 4)
    assert ds.blocks_per_window == 4 and len(ds) == 13

    def epoch():
        xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
        return np.concatenate(xs), np.concatenate(ys)

    assert not ds.in_ram
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


def test_array_batches_in_ram_permute_rows_with_a_seed_per_epoch():
    X, y = blobs(n_per_class=10, k=3)
    rows = np.arange(1, 30, 2)
    ds = ArrayBatches(X, y, rows, 4, shuffle=True, seed=5, class_weights=np.array([1.0, 2.0, 3.0]))
    assert ds.in_ram and len(ds) == 4
    for epoch in range(2):
        order = np.random.default_rng([5, epoch]).permutation(rows)
        xs, ys, ws = (np.concatenate(parts) for parts in zip(*(ds[i] for i in range(len(ds))), strict=True))
        np.testing.assert_array_equal(xs, X[order])
        np.testing.assert_array_equal(ys, y[order])
        np.testing.assert_array_equal(ws, np.array([1.0, 2.0, 3.0], np.float32)[y[order]])
        ds.on_epoch_end()


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


def test_fit_leaves_the_global_random_generators_alone():
    """Heads seed their own generators: after a fit, Python's, NumPy's and TensorFlow's global sequences go
    on as if it had not happened (fit used to call keras.utils.set_random_seed, reseeding the process)."""
    _tf.configure_threads()
    tf = _tf.tensorflow()  # TensorFlow's import draws from Python's random: import it before seeding
    X, y = blobs()

    def seed_all():
        random.seed(11)
        np.random.seed(11)
        tf.random.set_seed(11)

    def draws():
        return [random.random() for _ in range(3)], np.random.random(3), tf.random.uniform([3]).numpy()

    seed_all()
    expected = draws()
    seed_all()
    make_head("mlp", epochs=2, batch_size=16, dropout=0.5, random_state=3).fit(X, y)
    got = draws()
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])


@pytest.mark.parametrize("source", ["memory", "memmap"])
def test_same_random_state_gives_identical_keras_heads(tmp_path, source):
    X, y = blobs(sep=1.5)
    if source == "memmap":  # streamed in shuffled windows of blocks instead of shuffled rows
        X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=X.dtype, shape=X.shape)
        X[:] = blobs(sep=1.5)[0]
    params = {"epochs": 3, "batch_size": 16, "dropout": 0.5, "in_memory": source == "memory"}
    a, b, c = (make_head("mlp", random_state=rs, **params).fit(X, y) for rs in (7, 7, 8))
    assert a.streamed_ == (source == "memmap")
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.history_ == b.history_
    for wa, wc in zip(a.model_.get_weights(), c.model_.get_weights(), strict=True):
        if wa.std() > 0:  # every random layer starts elsewhere with another seed (biases start at 0)
            assert not np.allclose(wa, wc)


def test_random_state_must_be_an_integer():
    with pytest.raises(HeadError, match=r"random_state='a' is not allowed: None or an integer of at least 0"):
        make_head("mlp", random_state="a")


@pytest.mark.parametrize("name", ["logreg", "linear", "sigmoid"])
def test_string_labels_are_the_classes_and_survive_saving(tmp_path, name):
    k = 2 if name == "sigmoid" else 3
    X, yi = blobs(k=k)
    Xt, yti = blobs(k=k, seed=1)
    names = np.array(["zebra", "ant", "moth"])[:k]
    head = make_head(name, **params_for(name)).fit(X, names[yi].tolist())  # a plain list, as sklearn allows
    assert head.classes_.tolist() == sorted(names)
    pred = head.predict(Xt)
    assert pred.dtype.kind == "U" and (pred == names[yti]).mean() >= 0.97
    head.save(tmp_path / "h")
    loaded = load_head(tmp_path / "h")
    assert loaded.classes_.tolist() == head.classes_.tolist() and loaded.classes_.dtype.kind == "U"
    np.testing.assert_array_equal(loaded.predict(Xt), pred)


def test_integer_labels_stay_int64_through_saving(tmp_path):
    X, yi = blobs()
    y = np.array([3, 7, 9], np.int32)[yi]
    head = make_head("logreg").fit(X, y)
    assert head.classes_.dtype == np.int64 and head.classes_.tolist() == [3, 7, 9]
    loaded = load_head(head.save(tmp_path / "h"))
    assert loaded.classes_.dtype == np.int64 and loaded.classes_.tolist() == [3, 7, 9]
    np.testing.assert_array_equal(loaded.predict(X), head.predict(X))


def test_validation_labels_must_be_of_the_training_kind():
    X, y = blobs()
    Xv, yv = blobs(seed=1)
    with pytest.raises(
        HeadError, match=r"y_val holds number labels \(0, \.\.\.\) but y holds string labels \('0', "
    ):
        make_head("logreg").fit(X, y.astype(str), Xv, yv)


def test_predict_explains_wrong_numbers_of_features_and_1d_input(fitted):
    head, Xt, _ = fitted["logreg"]
    with pytest.raises(HeadError, match=r"X has 2 features, but LogRegHead is expecting 8 features as input"):
        head.predict(Xt[:, :2])
    with pytest.raises(HeadError, match=r"Reshape your data.*X\[None\] for a single row"):
        head.predict(Xt[0])
    np.testing.assert_array_equal(
        head.predict(Xt.astype(np.int64)), head.predict(Xt.astype(np.int64).tolist())
    )


def test_class_weight_dict_by_label_and_saved(tmp_path):
    rng = np.random.default_rng(0)
    yi = np.r_[np.zeros(150, int), np.ones(15, int)]
    X = (rng.normal(size=(len(yi), 8)) + 1.2 * yi[:, None]).astype(np.float32)
    y = np.array(["common", "rare"])[yi]
    for name in ("logreg", "linear"):
        params = params_for(name)
        plain = make_head(name, **params).fit(X, y)
        heavy = make_head(name, class_weight={"rare": 20.0}, **params).fit(X, y)
        assert (heavy.predict(X) == "rare").sum() > (plain.predict(X) == "rare").sum()
        loaded = load_head(heavy.save(tmp_path / name))
        assert loaded.get_params()["class_weight"] == {"rare": 20.0}
    loaded = load_head(make_head("logreg", class_weight={1: 5.0}).fit(X, yi).save(tmp_path / "int"))
    assert loaded.get_params()["class_weight"] == {1: 5.0}  # an integer label stays an integer, not "1"
    with pytest.raises(HeadError, match=r"class_weight has label\(s\) \['bird'\] that do not occur in y"):
        make_head("logreg", class_weight={"bird": 2.0}).fit(X, y)
    with pytest.raises(HeadError, match=r"class_weight=\{'rare': -1\} is not allowed"):
        make_head("linear", class_weight={"rare": -1})


def test_class_weight_weighs_the_validation_loss_that_picks_the_best_epoch():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(150, int), np.ones(30, int)]
    X = (rng.normal(size=(len(y), 8)) + 1.0 * y[:, None]).astype(np.float32)
    head = make_head("linear", class_weight="balanced", **FAST).fit(X, y)
    h = head.history_
    train = np.setdiff1d(np.arange(len(y)), head.holdout_)
    weights = len(train) / (2 * np.bincount(y[train]))
    yv = y[head.holdout_]
    p = head.predict_proba(X[head.holdout_])
    weighted = np.mean(weights[yv] * -np.log(p[np.arange(len(yv)), yv]))
    assert weighted == pytest.approx(h["val_loss"][h["best_epoch"] - 1], rel=1e-3)
