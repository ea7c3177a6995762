"""Cache.features: the same kind of array for every store format, read from disk on slicing."""

import numpy as np
import pytest

from bottleneck.cache import STORES, write_arrays
from bottleneck.cache.integrity import VerifiedArray
from bottleneck.cache.stores import FeatureArray
from bottleneck.config import ExtractConfig


@pytest.mark.parametrize("fmt", sorted(STORES))
def test_features_are_one_kind_of_array_whatever_the_format(tmp_path, fmt):
    x = np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2)
    config = ExtractConfig(backbone="arrays", weights="none", format=fmt)
    cache = write_arrays(
        tmp_path / fmt, {"train": (x, np.array([0, 1, 0, 1, 0]))}, class_names=["a", "b"], config=config
    )
    assert type(cache.features("train", verify=False)) is FeatureArray  # raw: for `cache verify` itself
    f = cache.features("train")
    assert type(f) is VerifiedArray  # checked against the checksums written with it
    assert (f.shape, f.dtype, f.ndim, len(f)) == ((5, 3, 2), np.float32, 3, 5)
    assert f.chunks[0] == 1024 and f.chunks[1:] == (3, 2)
    for index in (slice(1, 3), 4, (slice(None), 0)):
        got = f[index]
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, x[index])
    np.testing.assert_array_equal(np.asarray(f), x)
    assert np.asarray(f, dtype=np.float64).dtype == np.float64


def test_missing_or_corrupt_metadata_is_one_clear_line(tmp_path):
    from bottleneck.cache import open_cache
    from bottleneck.errors import CacheError, HeadError
    from bottleneck.runs import load_run

    (tmp_path / "c").mkdir()
    with pytest.raises(CacheError, match=r"is not a bottleneck cache \(no meta.json\)"):
        open_cache(tmp_path / "c")
    (tmp_path / "c" / "meta.json").write_text('{"key": ')
    with pytest.raises(
        CacheError, match=r"meta.json is corrupt \(.*\); remove the cache and extract again\.$"
    ):
        open_cache(tmp_path / "c")
    with pytest.raises(HeadError, match=r"is not a fit-head run folder \(no metrics.json\)"):
        load_run(tmp_path / "c")
    (tmp_path / "c" / "metrics.json").write_bytes(b"\xff\xfe")
    with pytest.raises(HeadError, match=r"metrics.json is corrupt \(.*\); fit the head again\.$"):
        load_run(tmp_path / "c")
