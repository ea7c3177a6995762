import json

import h5py
import numpy as np
import pytest
import zarr

from bottleneck.cache import STORES, CacheWriter, open_cache, open_store, write_arrays
from bottleneck.config import ExtractConfig
from bottleneck.errors import BottleneckError, CacheError


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train": (
            rng.normal(size=(37, 6)).astype("float32"),
            np.arange(37) % 3,
            [f"t/{i}.png" for i in range(37)],
        ),
        "test": (rng.normal(size=(5, 6)).astype("float32"), np.array([0, 1, 2, 0, 1])),
    }


@pytest.mark.parametrize("fmt", sorted(STORES))
def test_round_trip_every_format(tmp_path, fmt):
    arrays = _arrays()
    cfg = ExtractConfig(backbone="x", weights="none", format=fmt)
    write_arrays(tmp_path / fmt, arrays, class_names=["a", "b", "c"], config=cfg, key="k" * 64)
    c = open_cache(tmp_path / fmt)
    assert c.complete and c.splits == ["train", "test"] and c.class_names == ["a", "b", "c"]
    assert c.feature_shape == (6,) and c.n("train") == 37 and c.config == cfg
    x, y = c.load("train")
    np.testing.assert_array_equal(x, arrays["train"][0])
    np.testing.assert_array_equal(y, arrays["train"][1])
    assert list(c.ids("train")[:2]) == ["t/0.png", "t/1.png"]
    assert list(c.ids("test")) == [f"test/{i}" for i in range(5)]
    np.testing.assert_array_equal(np.asarray(c.features("train")[10:12]), arrays["train"][0][10:12])


def test_formats_readable_without_bottleneck(tmp_path):
    arrays = _arrays()
    for fmt in STORES:
        write_arrays(
            tmp_path / fmt,
            arrays,
            class_names=["a", "b", "c"],
            config=ExtractConfig(format=fmt, weights="none"),
        )
    z = zarr.open_group(str(tmp_path / "zarr" / "features.zarr"), mode="r")
    np.testing.assert_array_equal(z["train/features"][:], arrays["train"][0])
    assert z.attrs["class_names"] == ["a", "b", "c"]
    np.testing.assert_array_equal(
        np.load(tmp_path / "npy" / "npy" / "train" / "features.npy"), arrays["train"][0]
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "npy" / "npy" / "train" / "labels.npy"), arrays["train"][1]
    )
    with h5py.File(tmp_path / "h5" / "features.h5") as f:
        np.testing.assert_array_equal(f["test/features"][:], arrays["test"][0])
        assert list(f["train/ids"].asstr()[:3]) == ["t/0.png", "t/1.png", "t/2.png"]
    meta = json.loads((tmp_path / "h5" / "meta.json").read_text())
    assert meta["complete"] is True and meta["splits"]["train"]["n"] == 37


def test_unknown_format_lists_valid_ones(tmp_path):
    with pytest.raises(BottleneckError, match="choose one of: zarr, npy, h5"):
        open_store("parquet", tmp_path)


def test_incomplete_cache_is_refused_with_resume_hint(tmp_path):
    cfg = ExtractConfig(weights="none")
    w = CacheWriter(
        tmp_path / "c", key="k", key_material={}, config=cfg, class_names=["a"], manifest_json={}, skipped=[]
    )
    w.create_split("train", 10, (4,), "float32", np.zeros(10), [str(i) for i in range(10)], 4)
    w.write("train", 0, np.ones((4, 4), "float32"))
    w.commit("train", 4)
    w.abort()
    with pytest.raises(CacheError, match=r"incomplete \(4/10 rows\).*Re-run the same `bottleneck extract`"):
        open_cache(tmp_path / "c")
    c = open_cache(tmp_path / "c", allow_incomplete=True)
    assert not c.complete and "incomplete (4/10 rows)" in repr(c)


def test_missing_and_foreign_folders(tmp_path):
    with pytest.raises(CacheError, match="does not exist"):
        open_cache(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    with pytest.raises(CacheError, match="is not a bottleneck cache"):
        open_cache(tmp_path / "other")


def test_unknown_split_names_present_ones(tmp_path):
    c = write_arrays(tmp_path / "c", _arrays(), class_names=["a", "b", "c"])
    with pytest.raises(CacheError, match="no split 'val'; it has: train, test"):
        c.labels("val")
