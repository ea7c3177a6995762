import json

import h5py
import numpy as np
import pytest
import zarr
from conftest import MeanColor

from bottleneck.cache import STORES, CacheWriter, open_cache, open_store, write_arrays
from bottleneck.config import ExtractConfig
from bottleneck.data.manifest import Manifest
from bottleneck.errors import BottleneckError, CacheError

EMPTY = Manifest([], [], [], [], ["a"], "", "arrays")


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
        tmp_path / "c",
        key="k" * 64,
        key_material={},
        config=cfg,
        class_names=["a"],
        manifest=EMPTY,
        skipped=[],
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


# --- backbone names vs model paths (bottleneck.cache.key.is_model_path) ---


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_bare_backbone_name_is_not_a_model_even_when_cwd_has_one(tmp_path, monkeypatch, kind):
    from bottleneck.backbones import get_spec
    from bottleneck.cache.key import cache_dir_name, is_model_path, weights_identity

    monkeypatch.chdir(tmp_path)
    if kind == "folder":
        (tmp_path / "resnet50").mkdir()
    else:
        (tmp_path / "resnet50").write_bytes(b"not a model")
    assert is_model_path("resnet50") is False
    assert get_spec("resnet50").name == "resnet50"
    config = ExtractConfig(backbone="resnet50")
    assert weights_identity(config).startswith("imagenet@keras-")  # not the hash of ./resnet50
    assert cache_dir_name(config, "ab" * 32) == "resnet50-abababab"
    assert is_model_path("./resnet50") is True  # an explicit path is a model


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [
        ("./resnet50", True),
        ("models/x", True),
        ("/abs/exported", True),
        ("model.keras", True),
        ("model.h5", True),
        ("model.hdf5", True),
        ("Model.KERAS", True),
        ("resnet50", False),
        ("efficientnet_lite0", False),
        ("mymodel", False),
    ],
)
def test_model_paths_are_explicit_paths_or_model_extensions(tmp_path, monkeypatch, backbone, expected):
    from bottleneck.cache.key import is_model_path

    monkeypatch.chdir(tmp_path)  # none of these exist here: the answer depends on the text alone
    assert is_model_path(backbone) is expected


def test_unknown_bare_name_with_a_local_folder_says_pass_dot_slash(tmp_path, monkeypatch):
    from bottleneck.backbones import get_spec
    from bottleneck.cache.key import is_model_path
    from bottleneck.errors import BackboneError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackboneError) as plain:
        get_spec("mymodel")
    assert "./mymodel" not in str(plain.value)
    (tmp_path / "mymodel").mkdir()
    assert is_model_path("mymodel") is False
    with pytest.raises(BackboneError, match=r"unknown backbone 'mymodel'\..*pass \./mymodel") as exc:
        get_spec("mymodel")
    assert "\n" not in str(exc.value)


def test_extract_with_registry_name_ignores_same_named_folder(tmp_path, monkeypatch):
    from conftest import make_image_folder

    from bottleneck.inference.runner import run_extraction

    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet50").mkdir()  # e.g. a folder of notes or downloads, not a model
    src = make_image_folder(tmp_path / "data")
    cfg = ExtractConfig(backbone="resnet50", weights="none", batch_size=2)
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor())
    assert r.path.name.startswith("resnet50-") and r.cache.n("train") == 5
    assert (
        r.cache.meta["key_material"]["weights"] == "none"
    )  # the registry backbone, not a hash of ./resnet50
