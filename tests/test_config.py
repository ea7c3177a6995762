import dataclasses

import pytest

from bottleneck.cache.key import compute_key
from bottleneck.config import ExtractConfig
from bottleneck.errors import BottleneckError


def test_defaults_and_round_trip():
    c = ExtractConfig()
    assert c.backbone == "efficientnet_lite0" and c.pooling == "avg" and c.format == "zarr"
    assert ExtractConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("pooling", "median", r"unknown pooling='median'; choose one of: avg, max, none, cls, mean"),
        ("resize", "stretch", r"unknown resize='stretch'.*squash, crop, pad"),
        ("dtype", "float64", r"unknown dtype='float64'"),
        ("format", "parquet", r"unknown format='parquet'; choose one of: zarr, npy, h5"),
        ("on_bad_image", "ignore", r"unknown on_bad_image='ignore'"),
        ("image_size", 4, r"image_size=4"),
        ("batch_size", 0, r"batch_size=0"),
    ],
)
def test_bad_values_name_the_value_and_choices(field, value, match):
    with pytest.raises(BottleneckError, match=match):
        ExtractConfig(**{field: value})


def test_close_name_suggested():
    with pytest.raises(BottleneckError, match="Did you mean max"):
        ExtractConfig(pooling="maxx")


# One alternative value per key field: every field that changes features must change the key.
ALTERNATIVES = {
    "backbone": "vgg16",
    "weights": "imagenet",
    "image_size": 128,
    "layer": "block5_conv3",
    "pooling": "none",
    "resize": "crop",
    "dtype": "float16",
    "format": "h5",
    "on_bad_image": "skip",
    "preprocess": "tf",
    "max_image_pixels": 10**9,
}


def test_every_key_field_changes_the_key():
    base = ExtractConfig(backbone="mobilenet_v2", weights="none")
    key_fields = set(base.key_fields())
    assert key_fields == set(ALTERNATIVES), "a new ExtractConfig field needs an alternative value here"
    k0, _ = compute_key(base, "f" * 64)
    keys = {k0}
    for name, value in ALTERNATIVES.items():
        changed = dataclasses.replace(base, **{name: value})
        k, _ = compute_key(changed, "f" * 64)
        assert k not in keys, name
        keys.add(k)
    assert compute_key(base, "e" * 64)[0] != k0  # the manifest fingerprint is in the key too


def test_non_feature_settings_keep_the_key():
    base = ExtractConfig(backbone="mobilenet_v2", weights="none")
    k0, _ = compute_key(base, "f" * 64)
    for change in ({"batch_size": 7}, {"workers": 1}):
        assert compute_key(dataclasses.replace(base, **change), "f" * 64)[0] == k0


def test_one_source_for_what_changes_the_features():
    """The cache key, the per-row key and the heads' settings check all follow the fields' declared roles."""
    from bottleneck.cache.key import features_key
    from bottleneck.config import FEATURE_SETTINGS, ROW_NEUTRAL_SETTINGS
    from bottleneck.heads.base import _settings_diff

    added = {
        "precision",
        "calibration",
        "fast_decode",
        "shard_rows",
        "mean",
        "std",
        "channels",
    }  # settings added after caches existed: keyed away from their defaults
    assert set(FEATURE_SETTINGS) | set(ROW_NEUTRAL_SETTINGS) == set(ALTERNATIVES) | added
    base = ExtractConfig(backbone="mobilenet_v2", weights="none")
    _, material = compute_key(base, "f" * 64)
    fkey = features_key(material)
    for name, value in ALTERNATIVES.items():
        changed = dataclasses.replace(base, **{name: value})
        per_row_changed = features_key(compute_key(changed, "f" * 64)[1]) != fkey
        heads_see_it = bool(_settings_diff(base.to_dict(), changed.to_dict()))
        feature = name in FEATURE_SETTINGS
        assert per_row_changed == feature, name  # max_image_pixels only decides which rows exist
        assert heads_see_it == feature, name
    assert set(ROW_NEUTRAL_SETTINGS) == {"format", "on_bad_image", "max_image_pixels", "shard_rows"}
    int8 = dataclasses.replace(base, precision="int8")
    for start, change in (
        (base, {"precision": "int8"}),
        (int8, {"calibration": 64}),
        (base, {"fast_decode": True}),
    ):
        changed = dataclasses.replace(start, **change)
        assert features_key(compute_key(changed, "f" * 64)[1]) != features_key(
            compute_key(start, "f" * 64)[1]
        )
        assert _settings_diff(start.to_dict(), changed.to_dict()), change
    # shard_rows (storage): another cache key away from its default, the same rows (per-row key) and heads.
    sharded = dataclasses.replace(base, shard_rows=4096)
    assert "shard_rows" not in base.key_fields()
    assert compute_key(sharded, "f" * 64)[0] != compute_key(base, "f" * 64)[0]
    assert features_key(compute_key(sharded, "f" * 64)[1]) == fkey
    assert not _settings_diff(base.to_dict(), sharded.to_dict())
    # A config saved before the added settings existed meant their defaults: heads trained then still match.
    old = {k: v for k, v in base.to_dict().items() if k not in added}
    assert not _settings_diff(old, base.to_dict())


def test_heads_saved_with_the_older_per_row_key_still_match_their_caches(tmp_path):
    from conftest import MeanColor, make_image_folder

    from bottleneck.cache.key import _LEGACY_ROW_NEUTRAL, features_key
    from bottleneck.errors import HeadError
    from bottleneck.heads import make_head
    from bottleneck.inference.runner import run_extraction

    src = make_image_folder(tmp_path / "d", {"a": 4, "b": 4})
    cfg = ExtractConfig(weights="none", batch_size=4)
    cache = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor()).cache
    head = make_head("logreg").fit(*cache.load("train"))
    head.save(tmp_path / "h", cache=cache)
    legacy = features_key(cache.meta["key_material"], _LEGACY_ROW_NEUTRAL)
    assert legacy != head.trained_on_["features_key"]  # the form changed (max_image_pixels left out)
    head.trained_on_["features_key"] = legacy  # what a head saved before the change recorded
    head.check_cache(cache)
    head.trained_on_["features_key"] = "0" * 64
    with pytest.raises(HeadError, match="its feature key differs"):
        head.check_cache(cache)
