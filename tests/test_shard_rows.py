"""``shard_rows``: a zarr cache stores many chunks per object (zarr v3 shards), with the same rows as without, and
an interrupted or shrunk split never puts committed rows at risk (a shard is written whole, once, and counted only
when durable)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import CFG, MeanColor, PixelEngine, make_image_folder, truncated_png
from typer.testing import CliRunner

from bottleneck.cache.key import compute_key, features_key
from bottleneck.cache.manage import verify_cache
from bottleneck.cli import app
from bottleneck.config import ExtractConfig
from bottleneck.errors import BottleneckError
from bottleneck.inference.runner import run_extraction


def pixels(config):
    return PixelEngine()


def stored_objects(cache, split="train") -> list[str]:
    """The files of a split's features array on disk other than its zarr.json: one per chunk, or per shard."""
    root = cache.path / "features.zarr" / split / "features"
    return sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root)
        for f in files
        if f != "zarr.json"
    )


def test_sharded_cache_has_the_same_rows_in_one_file_per_shard(tmp_path):
    import zarr

    src = make_image_folder(tmp_path / "d", {"a": 20, "b": 13})  # 33 rows: 8 chunks of 4 and one of 1
    plain = run_extraction(src, CFG, cache_dir=tmp_path / "plain", engine_factory=pixels, chunk_rows=4)
    sharded = run_extraction(
        src, CFG.replace(shard_rows=8), cache_dir=tmp_path / "sharded", engine_factory=pixels, chunk_rows=4
    )
    assert sharded.path.name != plain.path.name  # a storage setting: another cache
    assert sharded.computed == 33 and sharded.reused == 0  # separate cache_dirs: no rows shared
    x, y = sharded.cache.load("train")
    px, py = plain.cache.load("train")
    assert x.tobytes() == px.tobytes() and x.dtype == px.dtype  # bitwise equal
    np.testing.assert_array_equal(y, py)
    assert list(sharded.cache.ids("train")) == list(plain.cache.ids("train"))
    assert len(stored_objects(plain.cache)) == 9  # one per chunk
    assert len(stored_objects(sharded.cache)) == 5  # ceil(33 / 8) shards
    meta = sharded.cache.meta
    assert meta["splits"]["train"]["shard_rows"] == 8 and meta["config"]["shard_rows"] == 8
    assert "shard_rows" not in plain.cache.meta["splits"]["train"]
    array = zarr.open_array(str(sharded.path / "features.zarr" / "train" / "features"), mode="r")
    assert array.shards == (8, 192) and array.chunks == (4, 192)  # plain zarr readers see the layout
    report = verify_cache(sharded.path)
    assert report.ok and report.regions == 9  # a checksum per chunk, all of them stored
    out = CliRunner().invoke(app, ["info", str(sharded.path)])
    assert out.exit_code == 0 and "zarr, 8 rows per shard," in out.output


def test_shards_are_whole_chunks_and_no_bigger_than_the_split(tmp_path):
    src = make_image_folder(tmp_path / "d", {"a": 6, "b": 5})  # 11 rows
    r = run_extraction(
        src, CFG.replace(shard_rows=12), cache_dir=tmp_path / "c", engine_factory=pixels, chunk_rows=8
    )
    # 12 rows is not whole chunks of 8: chunks shrink to 4 rows (a multiple of the batch that divides 12), a
    # shard is the 12 rows asked for, and this split of 11 is one object.
    assert (r.cache.meta["splits"]["train"]["shard_rows"], r.cache.meta["splits"]["train"]["chunk_rows"]) == (
        12,
        4,
    )
    assert len(stored_objects(r.cache)) == 1
    np.testing.assert_array_equal(
        r.cache.load("train")[0],
        run_extraction(src, CFG, cache_dir=tmp_path / "p", engine_factory=pixels).cache.load("train")[0],
    )


def test_key_is_unchanged_without_shard_rows_and_rows_are_shared_with_it():
    base = ExtractConfig(backbone="mobilenet_v2", weights="none")
    assert "shard_rows" not in base.key_fields()  # caches made before the setting keep their keys
    k0, material = compute_key(base, "f" * 64)
    old = {k: v for k, v in base.to_dict().items() if k != "shard_rows"}  # a config saved before it existed
    assert ExtractConfig.from_dict(old) == base
    assert compute_key(ExtractConfig.from_dict(old), "f" * 64)[0] == k0
    sharded = base.replace(shard_rows=4096)
    k1, material1 = compute_key(sharded, "f" * 64)
    assert k1 != k0  # another layout on disk: another cache
    assert features_key(material1) == features_key(material)  # the same rows: a donor for each other
    assert ExtractConfig.from_dict(sharded.to_dict()) == sharded


BAD = [
    (
        {"shard_rows": 100, "batch_size": 32},
        "shard_rows=100 is not a multiple of batch_size=32; pass a multiple such as 96 or 128.",
        "--shard-rows 100 is not a multiple of --batch-size 32; pass a multiple such as 96 or 128.",
    ),
    (
        {"shard_rows": 0, "batch_size": 32},
        "shard_rows=0 is not a positive number of rows; pass a multiple of batch_size=32, e.g. "
        "shard_rows=4096.",
        "--shard-rows 0 is not a positive number of rows; pass a multiple of --batch-size 32, e.g. "
        "--shard-rows 4096.",
    ),
    (
        {"shard_rows": -64, "batch_size": 32},
        "shard_rows=-64 is not a positive number of rows",
        "--shard-rows -64 is not a positive number of rows",
    ),
    (
        {"shard_rows": 64, "batch_size": 32, "format": "npy"},
        "shard_rows=64 needs format='zarr' (format='npy' keeps each split's features in one file already); "
        "pass format='zarr', or leave shard_rows out.",
        "--shard-rows 64 needs --format zarr (--format npy keeps each split's features in one file already); "
        "pass --format zarr, or leave --shard-rows out.",
    ),
    (
        {"shard_rows": 64, "batch_size": 32, "format": "h5"},
        "shard_rows=64 needs format='zarr' (format='h5'",
        "--shard-rows 64 needs --format zarr (--format h5",
    ),
]


@pytest.mark.parametrize("settings,message,_", BAD)
def test_bad_shard_rows_are_one_line_errors(settings, message, _):
    with pytest.raises(BottleneckError) as e:
        ExtractConfig(**settings)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_shard_rows_must_be_an_integer():
    for value in (True, 64.0, "64"):
        with pytest.raises(BottleneckError, match=r"is not a positive number of rows"):
            ExtractConfig(shard_rows=value)
    assert ExtractConfig(shard_rows=64, batch_size=32).shard_rows == 64


@pytest.mark.parametrize("settings,_,message", BAD)
def test_bad_shard_rows_on_the_command_line(tmp_path, settings, _, message):
    src = make_image_folder(tmp_path / "d", {"a": 2, "b": 2})
    args = ["extract", str(src), "--weights", "none", "--cache-dir", str(tmp_path / "c")]
    for name, value in settings.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: {message}") and res.output.count("\n") == 1, res.output
    assert "Traceback" not in res.output and not (tmp_path / "c").exists()


class Crashing(PixelEngine):
    """Ctrl-C from inside the loop after ``after`` batches."""

    def __init__(self, after):
        self.after, self.calls = after, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return super().__call__(batch)


@pytest.mark.parametrize("after", [3, 5])  # Ctrl-C inside the first shard, and inside the second
def test_interrupted_sharded_run_resumes_from_the_last_whole_shard(tmp_path, after):
    src = make_image_folder(tmp_path / "d", {"a": 20, "b": 13})
    cfg = CFG.replace(shard_rows=16)
    full = run_extraction(src, cfg, cache_dir=tmp_path / "full", engine_factory=pixels, chunk_rows=8)
    saved = 16 if after == 5 else 0  # 5 batches of 4 commit two chunks of 8: one whole shard
    with pytest.raises(
        KeyboardInterrupt, match=rf"with {saved}/33 rows saved in .*; re-run the same command"
    ):
        run_extraction(
            src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: Crashing(after), chunk_rows=8
        )
    (folder,) = [p for p in (tmp_path / "c").iterdir() if (p / "meta.json").is_file()]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["progress"] == {"train": saved} and not meta["complete"]
    assert all(stop <= saved for _, stop, _ in meta.get("checksums", {}).get("train", []))
    assert verify_cache(folder).ok  # what meta.json vouches for is in the store
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=pixels, chunk_rows=8)
    assert r.path == folder and (r.resumed_from, r.computed) == (saved, 33 - saved)
    assert r.cache.load("train")[0].tobytes() == full.cache.load("train")[0].tobytes()
    assert r.cache.meta["checksums"] == full.cache.meta["checksums"]  # each region once
    assert verify_cache(r.path).ok and len(stored_objects(r.cache)) == 3


class Watching(PixelEngine):
    """Looks at the cache on disk before each batch: what meta.json counts as saved, and shard 0's file."""

    def __init__(self, cache_dir):
        self.cache_dir, self.seen = cache_dir, []

    def __call__(self, batch):
        for meta in self.cache_dir.glob("*/meta.json"):
            progress = json.loads(meta.read_text())["progress"].get("train", 0)
            shard = meta.parent / "features.zarr" / "train" / "features" / "c" / "0" / "0"
            stat = shard.stat() if shard.exists() else None
            self.seen.append((progress, stat and (stat.st_ino, stat.st_mtime_ns, stat.st_size)))
        return super().__call__(batch)


def test_committed_shards_are_never_rewritten(tmp_path):
    src = make_image_folder(tmp_path / "d", {"a": 20, "b": 13})
    engine = Watching(tmp_path / "c")
    run_extraction(
        src,
        CFG.replace(shard_rows=8),
        cache_dir=tmp_path / "c",
        engine_factory=lambda c: engine,
        chunk_rows=4,
    )
    assert {p for p, _ in engine.seen} <= {0, 8, 16, 24, 32, 33}  # progress moves a whole shard at a time
    versions = {s for _, s in engine.seen if s is not None}
    assert len(versions) <= 1  # shard 0 appears once and is never written again


def test_late_bad_images_shrink_a_sharded_split(tmp_path):
    src = make_image_folder(tmp_path / "d", {"a": 10, "b": 10})
    (src / "a" / "005b.png").write_bytes(truncated_png(1))  # found while computing the first shard
    (src / "b" / "007b.png").write_bytes(truncated_png(2))  # and in the third, after two were committed
    cfg = CFG.replace(on_bad_image="skip", shard_rows=8)
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=pixels, chunk_rows=4)
    assert [s["id"] for s in r.skipped] == ["a/005b.png", "b/007b.png"] and r.cache.n("train") == 20
    for name in ("a/005b.png", "b/007b.png"):
        (src / name).unlink()
    clean = run_extraction(src, CFG, cache_dir=tmp_path / "clean", engine_factory=pixels)
    assert r.cache.load("train")[0].tobytes() == clean.cache.load("train")[0].tobytes()
    assert list(r.cache.ids("train")) == list(clean.cache.ids("train"))
    report = verify_cache(r.path)
    assert report.ok and report.regions == 5
    assert len(stored_objects(r.cache)) == 3


WORKER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from bottleneck.config import ExtractConfig
    from bottleneck.inference.runner import run_extraction

    class Slow:
        name = "fake"; input_size = 8; feature_shape = (3,); threads = 1; verification = None; columns = ()
        calls = 0
        def __call__(self, b):
            Slow.calls += 1
            if Slow.calls == 4:  # rows 6-7: the second shard (rows 4-7) is half written, and held in memory
                open(sys.argv[3], "w").close()
                time.sleep(600)  # the test kills us here
            return b.reshape(len(b), -1, 3).mean(axis=1).astype(np.float32)

    cfg = ExtractConfig(backbone="efficientnet_lite0", weights="none", batch_size=2, shard_rows=4)
    run_extraction(sys.argv[1], cfg, cache_dir=sys.argv[2], engine_factory=lambda c: Slow(), chunk_rows=2)
    """
)


def test_sigkill_mid_shard_then_rerun_gives_the_same_cache(tmp_path):
    src = make_image_folder(tmp_path / "d", {"a": 9, "b": 8})
    cfg = CFG.replace(batch_size=2, shard_rows=4)
    full = run_extraction(
        src, cfg, cache_dir=tmp_path / "full", engine_factory=lambda c: MeanColor(), chunk_rows=2
    )
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cache_dir = tmp_path / "c"
    marker = tmp_path / "mid-shard"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(src), str(cache_dir), str(marker)], stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # polling the worker's own signal: it is blocked mid-shard once the marker exists
    assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timed out"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (folder,) = [p for p in cache_dir.iterdir() if (p / "meta.json").is_file()]
    assert verify_cache(folder).ok
    r = run_extraction(src, cfg, cache_dir=cache_dir, engine_factory=lambda c: MeanColor(), chunk_rows=2)
    assert not r.hit and r.resumed_from == 4  # the first shard was whole; the half-written second is redone
    assert r.resumed_from + r.computed == 17
    assert r.cache.load("train")[0].tobytes() == full.cache.load("train")[0].tobytes()
    assert verify_cache(r.path).ok


def test_shard_rows_is_honoured_when_smaller_than_a_default_chunk(tmp_path):
    # Default chunks hold up to 64 batches (2 048 rows of 3 floats here); a shard holds whole chunks, so chunks
    # shrink to fit the shard rather than the shard growing to a chunk.
    src = make_image_folder(tmp_path / "d", {"a": 100, "b": 100})
    cfg = CFG.replace(batch_size=32, shard_rows=64)
    r = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor())
    info = r.cache.meta["splits"]["train"]
    assert (info["shard_rows"], info["chunk_rows"]) == (64, 64)
    assert len(stored_objects(r.cache)) == 4  # ceil(200 / 64)
    assert verify_cache(r.path).ok
