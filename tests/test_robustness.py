"""Never lose work: SIGKILL resume, concurrent runs, incremental updates, verify."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CFG as BASE_CFG
from conftest import MeanColor
from PIL import Image

from bottleneck.cache import open_cache
from bottleneck.cache.manage import gc_caches, list_caches, remove_cache, verify_cache
from bottleneck.cache.meta import read_manifest
from bottleneck.inference.runner import run_extraction

CFG = BASE_CFG.replace(batch_size=2)


def make_folder(root, n_per_class=(9, 8)):
    for c, n in enumerate(n_per_class):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (12, 10), ((37 * i) % 256, 100 * c, (11 * i + 50 * c) % 256)).save(
                d / f"{i:03d}.png"
            )
    return root


WORKER = textwrap.dedent(
    """
    import sys, time, json
    import numpy as np
    from bottleneck.config import ExtractConfig
    from bottleneck.inference.runner import run_extraction

    class Slow:
        name = "fake"; input_size = 8; feature_shape = (3,); threads = 1; verification = None; columns = ()
        def __call__(self, b):
            time.sleep(float(sys.argv[3]))
            return b.reshape(len(b), -1, 3).mean(axis=1).astype(np.float32)

    r = run_extraction(sys.argv[1], ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=2),
                cache_dir=sys.argv[2], engine_factory=lambda c: Slow(), chunk_rows=2,
                notify=lambda m: print("NOTE", m, flush=True))
    print(json.dumps({"hit": r.hit, "computed": r.computed, "resumed": r.resumed_from, "path": str(r.path)}), flush=True)
    """
)


def _spawn(tmp_path, src, cache, delay):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen(
        [sys.executable, str(script), str(src), str(cache), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _progress(cache_dir):
    for meta in cache_dir.glob("*/meta.json"):
        try:
            return sum(json.loads(meta.read_text()).get("progress", {}).values())
        except ValueError:
            return 0
    return 0


@pytest.mark.parametrize("kill_after_rows", [0, 4, 11])
def test_sigkill_then_rerun_gives_identical_cache(tmp_path, kill_after_rows):
    src = make_folder(tmp_path / "data")
    full = run_extraction(
        src, CFG, cache_dir=tmp_path / "full", engine_factory=lambda c: MeanColor(), chunk_rows=2
    ).cache
    cache_dir = tmp_path / "c"
    proc = _spawn(tmp_path, src, cache_dir, 0.15)
    deadline = time.time() + 60
    while _progress(cache_dir) < kill_after_rows and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    engine = MeanColor()
    r = run_extraction(src, CFG, cache_dir=cache_dir, engine_factory=lambda c: engine, chunk_rows=2)
    assert r.resumed_from >= kill_after_rows and r.resumed_from + r.computed == 17
    assert engine.images == r.computed
    for split in full.splits:
        np.testing.assert_array_equal(r.cache.load(split)[0], full.load(split)[0])
        np.testing.assert_array_equal(r.cache.ids(split), full.ids(split))
    assert verify_cache(r.path).ok


def _holds_a_lock(cache_dir) -> bool:
    from bottleneck.cache.lock import is_locked

    return any(is_locked(p.with_name(p.name[1 : -len(".lock")])) for p in Path(cache_dir).glob(".*.lock"))


def test_two_concurrent_runs_of_one_key_end_with_one_valid_cache(tmp_path):
    src = make_folder(tmp_path / "data")
    cache_dir = tmp_path / "c"
    a = _spawn(tmp_path, src, cache_dir, 0.05)
    deadline = time.time() + 60
    while not _holds_a_lock(cache_dir) and a.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # polling the lock itself: b starts once a is extracting
    b = _spawn(tmp_path, src, cache_dir, 0.05)
    out_a, err_a = a.communicate(timeout=120)
    out_b, err_b = b.communicate(timeout=120)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    ra, rb = json.loads(out_a.splitlines()[-1]), json.loads(out_b.splitlines()[-1])
    assert ra["path"] == rb["path"]
    assert sorted([ra["computed"], rb["computed"]]) == [0, 17]  # one computed everything, the other reused it
    assert "waiting" in (out_a + out_b)
    assert len(list(cache_dir.glob("*/meta.json"))) == 1
    c = open_cache(ra["path"])
    assert c.n("train") == 17 and verify_cache(c.path).ok


def test_incremental_run_computes_only_new_images_and_equals_full_run(tmp_path):
    src = make_folder(tmp_path / "data")
    run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor())
    # add two images, change one, remove one
    Image.new("RGB", (12, 10), (1, 2, 3)).save(src / "class0" / "new1.png")
    Image.new("RGB", (12, 10), (4, 5, 6)).save(src / "class1" / "new2.png")
    Image.new("RGB", (12, 10), (200, 201, 202)).save(src / "class0" / "000.png")
    (src / "class1" / "003.png").unlink()
    engine = MeanColor()
    r = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=lambda c: engine)
    assert not r.hit and r.computed == 3 and r.reused == 15 and engine.images == 3
    fresh = run_extraction(src, CFG, cache_dir=tmp_path / "fresh", engine_factory=lambda c: MeanColor()).cache
    np.testing.assert_array_equal(r.cache.load("train")[0], fresh.load("train")[0])
    np.testing.assert_array_equal(r.cache.load("train")[1], fresh.load("train")[1])
    np.testing.assert_array_equal(r.cache.ids("train"), fresh.ids("train"))


def test_reuse_works_across_formats(tmp_path):
    src = make_folder(tmp_path / "data")
    run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor())
    engine = MeanColor()
    r = run_extraction(
        src, CFG.replace(format="h5"), cache_dir=tmp_path / "c", engine_factory=lambda c: engine
    )
    assert r.computed == 0 and r.reused == 17


@pytest.mark.parametrize("fmt", ["zarr", "npy", "h5"])
def test_verify_detects_a_flipped_byte(tmp_path, fmt):
    src = make_folder(tmp_path / "data")
    r = run_extraction(
        src,
        CFG.replace(format=fmt),
        cache_dir=tmp_path / "c",
        engine_factory=lambda c: MeanColor(),
        chunk_rows=4,
    )
    assert verify_cache(r.path).ok
    if fmt == "npy":
        target = r.path / "npy" / "train" / "features.npy"
        offset = os.path.getsize(target) - 5  # inside the last rows' data
    elif fmt == "zarr":
        chunks = sorted((r.path / "features.zarr" / "train" / "features").rglob("c/*/*"))
        target = [p for p in chunks if p.is_file()][1]
        offset = os.path.getsize(target) // 2
    else:
        import h5py

        target = r.path / "features.h5"
        with h5py.File(target) as f:  # a byte inside the second compressed chunk
            offset = f["train/features"].id.get_chunk_info(1).byte_offset + 3
    with open(target, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))
    report = verify_cache(r.path)
    assert not report.ok and report.bad[0]["split"] == "train"


def test_list_remove_and_gc(tmp_path):
    src = make_folder(tmp_path / "data")
    r = run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor())
    rows = list_caches(tmp_path / "c")
    assert len(rows) == 1 and rows[0]["rows"] == 17 and rows[0]["complete"] and rows[0]["bytes"] > 0

    # an interrupted cache, made old
    class Boom(MeanColor):
        def __call__(self, batch):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_extraction(
            src, CFG.replace(pooling="max"), cache_dir=tmp_path / "c", engine_factory=lambda c: Boom()
        )
    incomplete = [row for row in list_caches(tmp_path / "c") if not row["complete"]]
    assert len(incomplete) == 1 and incomplete[0]["status"].startswith("incomplete (0/17")
    assert gc_caches(tmp_path / "c", older_than_s=3600) == []  # too recent
    removed = gc_caches(tmp_path / "c", older_than_s=0)
    assert [x["reason"] for x in removed] == ["incomplete"]
    assert len(list_caches(tmp_path / "c")) == 1
    assert remove_cache(r.path) > 0 and list_caches(tmp_path / "c") == []


def test_reuse_after_a_run_with_skipped_images(tmp_path):
    src = make_folder(tmp_path / "data")
    (src / "class0" / "bad.png").write_bytes(b"not an image")
    cfg = CFG.replace(on_bad_image="skip")
    first = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor())
    manifest, skipped = read_manifest(first.path)
    assert len(manifest) == 18 and [s["id"] for s in skipped] == ["class0/bad.png"]
    Image.new("RGB", (12, 10), (9, 9, 9)).save(src / "class1" / "zzz.png")
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor())
    assert r.reused == 17 and r.computed == 1 and r.cache.n("train") == 18
