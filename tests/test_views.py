"""Augmented views cached below the cut: keyed per view, reused, resumed after an interruption, drawn per epoch."""

from __future__ import annotations

import numpy as np
import pytest

import bottleneck


def _features(cache) -> np.ndarray:
    return np.asarray(cache.features("train")[:], np.float32)


def test_views_are_keyed_reused_and_drawn_per_epoch(frozen_run, tmp_path):  # noqa: F811
    from bottleneck.tuning import fine_tune

    run, cache, _, _ = frozen_run
    args = {"unfreeze_from": "block3_conv", "epochs": 2, "save": False, "cache_dir": tmp_path}
    lines = []
    first = fine_tune(run, views=2, notify=lines.append, **args)
    v = first.summary["views"]
    assert v["k"] == 2 and v["augment"] == "crop,rotate,zoom,contrast" and v["computed"] == 2
    assert first.summary["mode"] == "cached activations"
    assert sum(x.startswith("computing augmented view") for x in lines) == 2
    views = [bottleneck.open_cache(p) for p in v["caches"]]
    prefix = bottleneck.open_cache(first.summary["prefix_cache"])
    assert len({c.key for c in views} | {prefix.key}) == 3  # each view its own key, none the plain one's
    for i, c in enumerate(views):
        assert c.splits == ["train"] and c.n("train") == cache.n("train")
        assert np.array_equal(c.ids("train"), cache.ids("train"))
        assert c.config.dtype == "float16" and c.config.layer == "block2_relu" and c.config.pooling == "none"
        assert c.meta["view"] == {
            "index": i,
            "seed": 0,
            "augment": ["crop", "rotate", "zoom", "contrast"],
            "version": 1,
            "batch": 32,
            "split": "train",
        }
    a, b, plain = _features(views[0]), _features(views[1]), _features(prefix)
    assert not np.array_equal(a, b) and not np.array_equal(a, plain)
    # A later run with more views reuses the first two and computes only the third.
    lines = []
    more = fine_tune(run, views=3, notify=lines.append, **args)
    assert more.summary["views"]["computed"] == 1 and more.summary["views"]["caches"][:2] == v["caches"]
    assert sum(x.startswith("computing augmented view") for x in lines) == 1
    # Another seed or other augmentations: other views (other keys).
    other = fine_tune(run, views=1, augment="flip", **args)
    assert other.summary["views"]["caches"][0] not in v["caches"]
    reseeded = fine_tune(run, views=1, seed=1, **args)
    assert reseeded.summary["views"]["caches"][0] not in v["caches"]


def test_each_epoch_draws_one_view_per_image():
    from bottleneck.tuning.views import CachedTrain

    rows = np.arange(40)
    arrays = [np.full((40, 2), k, np.float32) + rows[:, None] / 100 for k in range(3)]
    data = CachedTrain(arrays, rows % 4, rows, batch_size=16, seed=0)
    drawn = []
    for epoch in (1, 2):
        x = np.concatenate([b[0] for b in data.epoch(epoch)])
        ids = np.round((x[:, 0] % 1) * 100).astype(int)
        assert sorted(ids) == list(range(40))  # every image once per epoch
        assert np.allclose(x[:, 0], x[:, 1])  # a whole row comes from one view
        drawn.append(np.floor(x[:, 0]).astype(int)[np.argsort(ids)])
    assert set(drawn[0]) == {0, 1, 2} and not np.array_equal(drawn[0], drawn[1])
    again = np.concatenate([b[0] for b in data.epoch(1)])
    assert np.array_equal(again, np.concatenate([b[0] for b in data.epoch(1)]))  # seeded


def test_an_interrupted_view_resumes_where_it_stopped(frozen_run, tmp_path, monkeypatch):  # noqa: F811
    from bottleneck.tuning import fine_tune, views

    run, cache, _, _ = frozen_run
    monkeypatch.setattr(views, "VIEW_BATCH", 4)  # several commits in 30 train rows
    monkeypatch.setattr(views, "VIEW_CHUNK_ROWS", 8)
    args = {"unfreeze_from": "block3_conv", "epochs": 1, "save": False, "views": 1}
    whole = fine_tune(run, cache_dir=tmp_path / "a", **args)

    def stop(stage, done, total):
        if stage == "view 1/1" and done >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fine_tune(run, cache_dir=tmp_path / "b", progress=stop, **args)
    lines = []
    resumed = fine_tune(run, cache_dir=tmp_path / "b", notify=lines.append, **args)
    assert any("resuming at row 16" in x for x in lines)
    a = bottleneck.open_cache(whole.summary["views"]["caches"][0])
    b = bottleneck.open_cache(resumed.summary["views"]["caches"][0])
    assert a.key == b.key and b.meta["complete"]
    # The same view, bit for bit: each batch is augmented with its own seed, whenever it is computed.
    assert np.array_equal(_features(a), _features(b))


def test_plain_view_draws_the_plain_images_beside_the_views(frozen_run, tmp_path):
    from bottleneck.tuning.fine_tuning import prepare
    from bottleneck.tuning.images import open_cache_images
    from bottleneck.tuning.recipe import TuneSettings

    run, cache, _, _ = frozen_run
    assert TuneSettings().plain_view and TuneSettings(views=0).plain_view  # without views it changes nothing
    arrays = {}
    for plain in (False, True):
        settings = TuneSettings(unfreeze_from="block3_conv", views=2, plain_view=plain)
        with open_cache_images(cache) as images:
            prep = prepare(run, cache, images, settings, tmp_path, None, lambda line: None)
        arrays[plain] = [np.asarray(a[:], np.float32) for a in prep.train_data.arrays]
    assert len(arrays[False]) == 2 and len(arrays[True]) == 3
    assert np.array_equal(arrays[True][0], _features(prep.prefix))  # the plain images' activations
    assert all(np.array_equal(a, b) for a, b in zip(arrays[True][1:], arrays[False], strict=True))
