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
        ("pooling", "mean", r"unknown pooling 'mean'; choose one of: avg, max, none"),
        ("resize", "stretch", r"unknown resize 'stretch'.*squash, crop, pad"),
        ("dtype", "float64", r"unknown dtype 'float64'"),
        ("format", "parquet", r"unknown format 'parquet'; choose one of: zarr, npy, h5"),
        ("on_bad_image", "ignore", r"unknown on-bad-image 'ignore'"),
        ("image_size", 4, r"image-size 4"),
        ("batch_size", 0, r"batch-size 0"),
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
