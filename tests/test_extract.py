import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import CFG as BASE_CFG
from conftest import MeanColor, run_python
from PIL import Image
from typer.testing import CliRunner

from bottleneck.cache import open_cache
from bottleneck.cache.meta import read_manifest
from bottleneck.cli import app
from bottleneck.config import ExtractConfig
from bottleneck.errors import BackboneError, BadImageError, CacheError, SourceError
from bottleneck.inference.runner import run_extraction

COLORS = {
    "cat": [(200, 10, 10), (190, 20, 30), (210, 0, 5), (180, 40, 40)],
    "dog": [(10, 200, 10), (0, 220, 40), (30, 190, 0)],
}


def make_folder(root, colors=COLORS, size=(24, 16)):
    for cls, cols in colors.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(cols):
            Image.new("RGB", size, c).save(root / cls / f"{i:02d}.png")
    return root


def factory(engines):
    def make(config):
        e = MeanColor()
        engines.append(e)
        return e

    return make


CFG = BASE_CFG.replace(batch_size=3)


def test_every_image_one_row_aligned_with_label_and_id(tmp_path):
    src = make_folder(tmp_path / "data")
    engines = []
    r = run_extraction(src, CFG, cache_dir=tmp_path / "cache", engine_factory=factory(engines))
    c = r.cache
    assert not r.hit and r.computed == 7 and c.splits == ["train"] and c.class_names == ["cat", "dog"]
    x, y = c.load("train")
    assert x.shape == (7, 3) and x.dtype == np.float32
    assert list(y) == [0, 0, 0, 0, 1, 1, 1]
    ids = list(c.ids("train"))
    assert ids == [
        "cat/00.png",
        "cat/01.png",
        "cat/02.png",
        "cat/03.png",
        "dog/00.png",
        "dog/01.png",
        "dog/02.png",
    ]
    expected = [COLORS[i.split("/")[0]][int(i.split("/")[1][:2])] for i in ids]
    np.testing.assert_allclose(x, np.array(expected, dtype=np.float32), atol=0.5)
    assert engines[0].calls == 3  # 3 + 3 + 1: the tail is never dropped
    meta = json.loads((c.path / "meta.json").read_text())
    assert meta["complete"] and meta["progress"] == {"train": 7}
    manifest, skipped = read_manifest(c.path)
    assert len(manifest) == 7 and not skipped and manifest.fingerprint() == meta["key_material"]["manifest"]


def test_identical_images_identical_rows_and_split_folders(tmp_path):
    colors = {"a": [(5, 5, 5), (5, 5, 5)], "b": [(250, 250, 250)]}
    make_folder(tmp_path / "d" / "train", colors)
    make_folder(tmp_path / "d" / "validation", {"a": [(5, 5, 5)], "b": [(250, 250, 250)]})
    make_folder(tmp_path / "d" / "test", {"a": [(5, 5, 5)], "b": [(250, 250, 250)]})
    c = run_extraction(tmp_path / "d", CFG, cache_dir=tmp_path / "c", engine_factory=factory([])).cache
    assert c.splits == ["train", "val", "test"] and [c.n(s) for s in c.splits] == [3, 2, 2]
    x = c.load("train")[0]
    np.testing.assert_array_equal(x[0], x[1])
    assert not np.allclose(x[0], x[2])
    np.testing.assert_array_equal(c.load("val")[0], c.load("test")[0])


def test_second_run_is_a_hit_and_force_recomputes(tmp_path):
    src = make_folder(tmp_path / "data")
    engines = []
    first = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=factory(engines))
    second = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=factory(engines))
    assert second.hit and second.path == first.path and len(engines) == 1 and second.computed == 0
    third = run_extraction(src, CFG, cache_dir=tmp_path / "c", force=True, engine_factory=factory(engines))
    assert not third.hit and third.computed == 7 and len(engines) == 2
    # batch size is not part of the key: a different batch size is still a hit
    assert run_extraction(
        src, CFG.replace(batch_size=5), cache_dir=tmp_path / "c", engine_factory=factory(engines)
    ).hit


def test_changed_image_changes_key(tmp_path):
    src = make_folder(tmp_path / "data")
    a = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=factory([]))
    Image.new("RGB", (24, 16), (1, 2, 3)).save(src / "dog" / "00.png")
    b = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=factory([]))
    assert not b.hit and a.cache.key != b.cache.key


def test_all_formats_hold_the_same_arrays(tmp_path):
    src = make_folder(tmp_path / "data")
    got = {}
    for fmt in ("zarr", "npy", "h5"):
        c = run_extraction(
            src, CFG.replace(format=fmt), cache_dir=tmp_path / "c", engine_factory=factory([])
        ).cache
        got[fmt] = (c.load("train"), list(c.ids("train")))
    for fmt in ("npy", "h5"):
        np.testing.assert_array_equal(got[fmt][0][0], got["zarr"][0][0])
        np.testing.assert_array_equal(got[fmt][0][1], got["zarr"][0][1])
        assert got[fmt][1] == got["zarr"][1]


def test_interrupted_run_resumes_to_identical_cache(tmp_path):
    src = make_folder(
        tmp_path / "data", {"a": [(i * 9, 0, 0) for i in range(20)], "b": [(0, i * 9, 0) for i in range(13)]}
    )
    cfg = CFG.replace(batch_size=4)
    full = run_extraction(src, cfg, cache_dir=tmp_path / "full", engine_factory=factory([])).cache.load(
        "train"
    )[0]

    def crashing(config):
        return MeanColor(fail_after=5)

    # Ctrl-C in the 6th batch: two chunks of 8 were committed, the half-done third is dropped.
    with pytest.raises(
        KeyboardInterrupt,
        match=r"stopped at a chunk boundary with 16/33 rows saved in .*; re-run the same command",
    ):
        run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=crashing, chunk_rows=8)
    with pytest.raises(Exception, match="incomplete"):
        open_cache(next((tmp_path / "c").glob("efficientnet_lite0-*")))
    engines = []
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=factory(engines), chunk_rows=8)
    assert r.resumed_from > 0 and r.resumed_from + r.computed == 33
    np.testing.assert_array_equal(r.cache.load("train")[0], full)


def test_bad_images_fail_names_them_or_skip_records_them(tmp_path):
    src = make_folder(tmp_path / "data")
    (src / "cat" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (src / "dog" / "empty.png").write_bytes(b"")
    with pytest.raises(
        BadImageError, match=r"2 unreadable image\(s\): cat/broken.jpg .*dog/empty.png.*on_bad_image='skip'"
    ):
        run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=factory([]))
    assert not any((tmp_path / "c").glob("*/meta.json"))  # nothing that looks like a cache
    r = run_extraction(
        src, CFG.replace(on_bad_image="skip"), cache_dir=tmp_path / "c", engine_factory=factory([])
    )
    assert r.cache.n("train") == 7 and len(r.skipped) == 2
    assert "cat/broken.jpg" not in list(r.cache.ids("train"))
    manifest, skipped = read_manifest(r.path)
    assert sorted(s["id"] for s in skipped) == ["cat/broken.jpg", "dog/empty.png"] and len(manifest) == 9


def test_bad_backbone_and_source_errors(tmp_path):
    with pytest.raises(SourceError):
        run_extraction(tmp_path / "missing", CFG, cache_dir=tmp_path / "c")
    src = make_folder(tmp_path / "data")
    with pytest.raises(BackboneError, match="Did you mean efficientnet_lite"):
        run_extraction(src, CFG.replace(backbone="efficientnet_lite9"), cache_dir=tmp_path / "c")
    with pytest.raises(BackboneError, match="weights file .*nope.h5 does not exist"):
        run_extraction(src, CFG.replace(weights=str(tmp_path / "nope.h5")), cache_dir=tmp_path / "c")


def test_real_backbone_end_to_end(tmp_path):
    src = make_folder(tmp_path / "data")
    cfg = ExtractConfig(backbone="mobilenet_v2", weights="none", image_size=32, batch_size=4)
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c")
    x, y = r.cache.load("train")
    assert x.shape == (7, 1280) and np.isfinite(x).all()
    # An independent computation: Keras' own MobileNetV2 and preprocess_input on PIL-decoded images, with the
    # random init of keras.utils.set_random_seed(0) (in a fresh process: it reseeds the whole process).
    paths = [str(src / i) for i in r.cache.ids("train")]
    ref = tmp_path / "ref.npy"
    run_python(
        "import numpy as np, keras; from PIL import Image; keras.utils.set_random_seed(0);"
        "m = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), pooling='avg');"
        f"imgs = np.stack([np.asarray(Image.open(p).convert('RGB').resize((32, 32), Image.BILINEAR)) for p in {paths!r}]);"
        "x = keras.applications.mobilenet_v2.preprocess_input(imgs.astype('float32'));"
        f"np.save({str(ref)!r}, np.asarray(m(x, training=False)))"
    )
    expected = np.load(ref)
    np.testing.assert_allclose(x, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.abs(x - x[:1]).max() > 0  # the images differ, so must their features
    # deterministic random init: the same key gives the same features
    again = run_extraction(src, cfg, cache_dir=tmp_path / "c2").cache.load("train")[0]
    np.testing.assert_allclose(again, x, rtol=1e-5, atol=1e-5)
    spatial = run_extraction(src, cfg.replace(pooling="none"), cache_dir=tmp_path / "c").cache
    assert spatial.feature_shape == (1, 1, 1280)


runner = CliRunner()


def test_cli_extract_json_info_and_errors(tmp_path):
    src = make_folder(tmp_path / "data")
    args = [
        "extract",
        str(src),
        "--backbone",
        "mobilenet_v2",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--cache-dir",
        str(tmp_path / "c"),
        "--json",
        "-q",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["hit"] is False and out["splits"] == {"train": {"n": 7, "feature_shape": [1280]}}
    res2 = runner.invoke(app, args)
    assert json.loads(res2.stdout)["hit"] is True
    info = runner.invoke(app, ["info", out["path"], "--json"])
    assert json.loads(info.stdout)["splits"]["train"]["n"] == 7
    text = runner.invoke(app, ["info", out["path"]]).stdout
    assert "[complete]" in text and "train     7 x (1280,)" in text
    bad = runner.invoke(
        app, ["extract", str(src), "--backbone", "resnet5O", "--cache-dir", str(tmp_path / "c")]
    )
    assert bad.exit_code == 2
    assert (
        bad.stderr.strip().startswith("error: unknown backbone 'resnet5O'") and "Traceback" not in bad.output
    )
    assert len(bad.stderr.strip().splitlines()) == 1
    missing = runner.invoke(app, ["extract", str(tmp_path / "nope"), "--cache-dir", str(tmp_path / "c")])
    assert missing.exit_code == 2 and "error:" in missing.stderr


def test_cache_hit_does_not_import_tensorflow(tmp_path):
    # How long a hit takes is measured in scripts/bench_extract.py, not asserted here.
    src = make_folder(tmp_path / "data")
    run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=factory([]))
    code = (
        "import sys; from bottleneck import extract; from bottleneck.config import ExtractConfig;"
        f"r = extract({str(src)!r}, ExtractConfig(backbone='efficientnet_lite0', weights='none', batch_size=3), cache_dir={str(tmp_path / 'c')!r});"
        "print(r.hit, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    assert run_python(code).split() == ["True", "False", "False"]


def test_disk_full_and_unwritable_cache_dir_are_clear_and_resumable(tmp_path, monkeypatch):
    import errno

    from bottleneck.cache import CacheWriter

    src = make_folder(tmp_path / "data", {"a": [(i * 9, 0, 0) for i in range(10)], "b": [(0, 90, 0)] * 2})
    cfg = CFG.replace(batch_size=4)
    full = run_extraction(src, cfg, cache_dir=tmp_path / "full", engine_factory=factory([])).cache.load(
        "train"
    )[0]
    real_write = CacheWriter.write

    def write_until_full(self, split, start, batch):
        if start >= 8:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, split, start, batch)

    monkeypatch.setattr(CacheWriter, "write", write_until_full)
    with pytest.raises(
        CacheError,
        match=r"No space left on device \(8/12 rows are saved in .*\)\. Free space .*re-run the same command",
    ):
        run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=factory([]), chunk_rows=4)
    monkeypatch.setattr(CacheWriter, "write", real_write)
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=factory([]), chunk_rows=4)
    assert (r.resumed_from, r.computed) == (8, 4)
    np.testing.assert_array_equal(r.cache.load("train")[0], full)

    def read_only(self, *a, **k):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(CacheWriter, "__init__", read_only)
    with pytest.raises(CacheError, match=r"Read-only file system \(nothing was saved yet\)\..*cache_dir="):
        run_extraction(src, cfg, cache_dir=tmp_path / "ro", engine_factory=factory([]))
    res = CliRunner().invoke(
        app, ["extract", str(src), "--weights", "none", "--cache-dir", str(tmp_path / "ro")]
    )
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "Read-only file system" in res.output


def test_importing_bottleneck_changes_nothing_global():
    code = (
        "import os, sys; env = dict(os.environ); hooks = list(sys.meta_path); import bottleneck;"
        "print(dict(os.environ) == env, list(sys.meta_path) == hooks, 'tensorflow' in sys.modules)"
    )
    assert run_python(code).split() == ["True", "True", "False"]


def test_the_library_imports_tensorflow_quietly_and_leaves_the_environment_as_it_was():
    code = (
        "import os; from bottleneck import _tf; tf = _tf.tensorflow();"
        "print(tf.constant(2).numpy() + 1, os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    )
    # tf2onnx, imported by other tests in this process, sets the variable in os.environ itself: start clean.
    clean = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=clean)
    assert out.stdout.split() == ["3", "None"]
    assert "absl" not in out.stderr and "cuda" not in out.stderr.lower(), out.stderr
    # A user who asks TensorFlow for its log lines gets them.
    env = {**clean, "TF_CPP_MIN_LOG_LEVEL": "0"}
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert loud.stdout.split() == ["3", "0"] and loud.stderr.strip()


def test_package_level_extract_stays_the_function(tmp_path):
    import bottleneck
    from bottleneck.inference.runner import (
        extract as direct,  # loading the runner module must not shadow the API
    )

    src = make_folder(tmp_path / "data")
    for _ in range(2):
        assert bottleneck.extract is direct
        r = bottleneck.extract(src, CFG, cache_dir=tmp_path / "c", engine="tensorflow", image_size=32)
        assert r.cache.n("train") == 7


def test_a_key_sharing_the_folder_prefix_never_takes_over_another_cache(tmp_path):
    """Folders are named by 8 hex digits of the key; another key with that prefix must not be a hit, nor be
    resumed or deleted as if it were ours."""
    src = make_folder(tmp_path / "data")
    first = run_extraction(src, CFG, cache_dir=tmp_path / "probe", engine_factory=factory([]))
    key, folder = first.cache.key, first.path.name
    for complete in (True, False):
        root = tmp_path / f"c-{complete}"
        other = root / folder  # a cache of another key whose first 8 digits are ours
        other.mkdir(parents=True)
        foreign = {"key": key[:8] + "0" * 56, "complete": complete, "splits": {}, "progress": {}}
        (other / "meta.json").write_text(json.dumps(foreign))
        r = run_extraction(src, CFG, cache_dir=root, engine_factory=factory([]))
        assert not r.hit and r.computed == 7 and r.cache.key == key
        assert r.path.name == f"{folder[:-8]}{key[:16]}"
        assert json.loads((other / "meta.json").read_text()) == foreign  # untouched
        again = run_extraction(src, CFG, cache_dir=root, engine_factory=factory([]))
        assert again.hit and again.path == r.path


def test_incomplete_counts_every_row_the_cache_will_hold(tmp_path):
    from conftest import MeanColor, make_image_folder

    src = make_image_folder(tmp_path / "d", {"a": 5, "b": 5}, splits=["train", "test"])

    class StopsAfterFourRows(MeanColor):
        calls = 0

        def __call__(self, batch):
            StopsAfterFourRows.calls += 1
            if StopsAfterFourRows.calls > 2:
                raise KeyboardInterrupt
            return super().__call__(batch)

    cfg = ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=2)
    with pytest.raises(KeyboardInterrupt, match=r"with 4/20 rows saved"):
        run_extraction(
            src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: StopsAfterFourRows(), chunk_rows=2
        )
    res = CliRunner().invoke(app, ["cache", "ls", "--cache-dir", str(tmp_path / "c"), "--json"])
    (row,) = json.loads(res.stdout)
    assert row["status"] == "incomplete (4/20 rows)"  # the test split, not started yet, counts too
    (folder,) = (tmp_path / "c").glob("efficientnet_lite0-*")
    assert "incomplete (4/20 rows)" in repr(open_cache(folder, allow_incomplete=True))
