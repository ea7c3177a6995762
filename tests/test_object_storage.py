"""Sources and caches on object storage, against a real S3 API server (moto's, started as a subprocess)."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CFG, PixelEngine, make_image_folder
from PIL import Image
from typer.testing import CliRunner

from bottleneck import storage
from bottleneck.cache import open_cache
from bottleneck.cli import app
from bottleneck.inference.runner import extract, run_extraction
from bottleneck.runs.fit import fit_head

pytest.importorskip("s3fs")
pytest.importorskip("moto")


def pixel_engine(config):
    return PixelEngine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """An S3 filesystem on the server with buckets `data` and `caches` (emptied per test), staging under tmp."""
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "staging"))
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    for bucket in ("data", "caches"):
        if fs.exists(bucket):
            fs.rm(bucket, recursive=True)
        fs.mkdir(bucket)
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()


def upload_folder(fs, local, url):
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{url}/{path.relative_to(local).as_posix()}")


class Downloads:
    def __init__(self):
        self.count = 0

    def __call__(self, stage, done, total):
        if stage == "download":
            self.count += 1


def test_s3_source_into_s3_cache_then_fit_head_then_hits(s3, tmp_path, monkeypatch):
    local = make_image_folder(tmp_path / "d", {"a": 10, "b": 10}, size=(12, 12), splits=["train", "test"])
    upload_folder(s3, local, "data/imgs")
    ref = run_extraction(local, CFG, cache_dir=tmp_path / "ref", engine_factory=pixel_engine)

    seen = Downloads()
    r = run_extraction(
        "s3://data/imgs", CFG, cache_dir="s3://caches/c", engine_factory=pixel_engine, progress=seen
    )
    assert not r.hit and r.computed == 40 and seen.count == 40
    assert r.url == f"s3://caches/c/{r.path.name}" and r.path.name == ref.path.name  # the same key as local
    names = {p.rsplit("/", 1)[-1] for p in s3.find(f"caches/c/{r.path.name}")}
    assert {"meta.json", "manifest.npz"} <= names
    np.testing.assert_array_equal(r.cache.load("train")[0], ref.cache.load("train")[0])

    run = fit_head(r.url, "logreg", out=tmp_path / "run")  # read from the bucket (staged copy)
    assert 0.0 <= run.metrics["test"]["accuracy"] <= 1.0

    seen = Downloads()
    again = run_extraction(
        "s3://data/imgs", CFG, cache_dir="s3://caches/c", engine_factory=pixel_engine, progress=seen
    )
    assert again.hit and seen.count == 0  # listed, nothing downloaded, nothing computed

    # Another machine (empty staging) gets the cache from the bucket instead of computing it.
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "other-machine"))
    elsewhere = run_extraction("s3://data/imgs", CFG, cache_dir="s3://caches/c", engine_factory=pixel_engine)
    assert elsewhere.hit and elsewhere.path.parent != r.path.parent
    np.testing.assert_array_equal(elsewhere.cache.load("test")[0], ref.cache.load("test")[0])

    # One changed object: one download, one row computed, the rest reused from the staged cache.
    Image.new("RGB", (12, 12), (1, 2, 3)).save(tmp_path / "new.png")
    s3.put_file(str(tmp_path / "new.png"), "data/imgs/train/a/000.png")
    seen = Downloads()
    changed = run_extraction(
        "s3://data/imgs", CFG, cache_dir="s3://caches/c", engine_factory=pixel_engine, progress=seen
    )
    assert seen.count == 1 and changed.computed == 1 and changed.reused == 39
    assert changed.url != r.url and s3.exists(f"caches/c/{changed.path.name}/meta.json")


def test_cli_extract_prints_the_url_and_reads_the_cache_back(s3, tmp_path):
    from bottleneck.cli import app

    local = make_image_folder(tmp_path / "d", {"a": 6, "b": 6}, size=(12, 12))
    upload_folder(s3, local, "data/small")
    args = ["extract", "s3://data/small", "--cache-dir", "s3://caches/cli", "--backbone", "pixels", "-q"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    url = res.output.strip().splitlines()[-1]
    assert url.startswith("s3://caches/cli/pixels-")
    res = CliRunner().invoke(app, ["info", url])
    assert res.exit_code == 0 and "12" in res.output, res.output


def test_storage_errors_are_one_line(s3, tmp_path, monkeypatch):
    local = make_image_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(12, 12))
    upload_folder(s3, local, "data/x")
    with pytest.raises(storage.StorageError, match=r"cannot read s3://nobucket/imgs: it does not exist"):
        run_extraction("s3://nobucket/imgs", CFG, cache_dir=tmp_path / "c", engine_factory=pixel_engine)
    with pytest.raises(storage.StorageError, match=r"cannot read s3://data/nothing-here: it does not exist"):
        run_extraction("s3://data/nothing-here", CFG, cache_dir=tmp_path / "c", engine_factory=pixel_engine)

    # A cache location this run may not write: refused before any image is computed (the lease is a write).
    import s3fs

    calls = []

    def counting(config):
        calls.append(1)
        return PixelEngine()

    async def denied(self, path, data, *a, **k):
        raise PermissionError(13, "Access Denied")

    with monkeypatch.context() as m:
        m.setattr(s3fs.S3FileSystem, "_pipe_file", denied)
        s3fs.S3FileSystem.clear_instance_cache()  # sync methods are bound when an instance is made
        with pytest.raises(
            storage.StorageError, match=r"cannot write s3://caches/ro/\.\S+\.lease: access denied"
        ):
            run_extraction("s3://data/x", CFG, cache_dir="s3://caches/ro", engine_factory=counting)
    assert not calls

    import s3fs as _s3fs

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(
        storage.StorageError, match=r"cannot read s3://data/x: no credentials; set AWS_ACCESS_KEY_ID"
    ):
        run_extraction("s3://data/x", CFG, cache_dir=tmp_path / "c", engine_factory=pixel_engine)


def test_a_held_lease_makes_a_second_run_wait(s3, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "LEASE_POLL_S", 0.2)
    local = make_image_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(12, 12))
    upload_folder(s3, local, "data/l")
    probe = run_extraction(local, CFG, cache_dir=tmp_path / "probe", engine_factory=pixel_engine)
    remote = storage.RemoteCaches("s3://caches/l")
    lines, result = [], {}
    with remote.lease(probe.path.name):
        thread = threading.Thread(
            target=lambda: result.update(
                r=run_extraction(
                    "s3://data/l",
                    CFG,
                    cache_dir="s3://caches/l",
                    engine_factory=pixel_engine,
                    notify=lines.append,
                )
            )
        )
        thread.start()
        deadline = time.time() + 60
        while (
            not any("is extracting" in line and "waiting" in line for line in lines)
            and time.time() < deadline
        ):
            time.sleep(0.01)  # polling what the run says: it waits for the lease we hold
        assert "r" not in result and any("is extracting" in line and "waiting" in line for line in lines)
    thread.join(60)
    assert result["r"].cache.complete and result["r"].computed == 6
    assert not s3.exists(f"caches/l/.{probe.path.name}.lease")  # released


@pytest.mark.parametrize("key", ["imgs/a/../../../X.png", "imgs//abs/dir/X.png", "imgs/./b/X.png"])
def test_object_keys_never_escape_the_local_copy(s3, tmp_path, key):
    local = make_image_folder(tmp_path / "d", {"a": 2, "b": 2}, size=(12, 12))
    upload_folder(s3, local, "data/imgs")
    s3.pipe_file(f"data/{key}", (local / "a" / "000.png").read_bytes())
    s3.pipe_file("data/imgs/b/", b"")  # a folder marker, as S3 consoles make: skipped, not an error
    rel = key[len("imgs/") :]
    with pytest.raises(
        storage.StorageError, match=rf"refusing object key '{re.escape(rel)}' under s3://data/imgs"
    ):
        run_extraction("s3://data/imgs", CFG, cache_dir=tmp_path / "c", engine_factory=pixel_engine)
    staging = storage.staging_for("s3://data/imgs")
    assert not (staging.parent.parent / "X.png").exists() and not Path("/abs/dir/X.png").exists()
    assert not list(staging.rglob("*.png"))  # refused before anything was written


def test_a_cache_prefix_with_an_escaping_key_is_refused_by_info(s3, tmp_path, monkeypatch):
    local = make_image_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(12, 12))
    r = run_extraction(local, CFG, cache_dir="s3://caches/c", engine_factory=pixel_engine)
    s3.pipe_file(f"caches/c/{r.path.name}/x/../../../../escaped.json", b"{}")
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "other-machine"))  # nothing staged: info fetches
    res = CliRunner().invoke(app, ["info", f"s3://caches/c/{r.path.name}"])
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: refusing object key 'x/../../../../escaped.json'")
    assert not list(tmp_path.rglob("escaped.json"))
    res = CliRunner().invoke(app, ["info", "s3://caches/c/.."])
    assert res.exit_code == 2 and "refusing object key '..'" in res.stderr


def test_the_mirror_state_cannot_make_it_delete_outside(s3, tmp_path):
    local = make_image_folder(tmp_path / "d", {"a": 2, "b": 2}, size=(12, 12))
    upload_folder(s3, local, "data/imgs")
    target = tmp_path / "mirror"
    storage.mirror("s3://data/imgs", target)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    state = json.loads((target / storage.MIRROR_STATE).read_text())
    state["../victim.txt"] = [7, "etag"]  # as if the state file were edited or came from elsewhere
    (target / storage.MIRROR_STATE).write_text(json.dumps(state))
    storage.mirror("s3://data/imgs", target)
    assert victim.read_text() == "keep me"
    assert "../victim.txt" not in json.loads((target / storage.MIRROR_STATE).read_text())


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), (i * 7 % 256, i * 13 % 256, 60)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["parquet", "webdataset"])
def test_parquet_and_webdataset_sources_from_a_bucket(s3, tmp_path, kind):
    """Row sources (a Parquet file, WebDataset shards) read from s3:// as from a folder: the same cache key and
    rows as the local copy, and a hit the second time without a download."""
    local = tmp_path / kind
    local.mkdir()
    images, labels = [_png(i) for i in range(12)], [i % 2 for i in range(12)]
    if kind == "parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        features = {"image": {"_type": "Image"}, "label": {"names": ["a", "b"], "_type": "ClassLabel"}}
        table = pa.table(
            {"image": [{"bytes": b, "path": None} for b in images], "label": labels},
            schema=pa.schema(
                [
                    ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                    ("label", pa.int64()),
                ],
                metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()},
            ),
        )
        pq.write_table(table, local / "train-00000-of-00001.parquet", row_group_size=5)
    else:
        import tarfile

        with tarfile.open(local / "train-000000.tar", "w") as tar:
            for i, (data, y) in enumerate(zip(images, labels, strict=True)):
                for name, payload in ((f"{i:06d}.png", data), (f"{i:06d}.cls", str(y).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    upload_folder(s3, local, f"data/{kind}")
    ref = run_extraction(local, CFG, cache_dir=tmp_path / "ref", engine_factory=pixel_engine)
    r = run_extraction(f"s3://data/{kind}", CFG, cache_dir=tmp_path / "c", engine_factory=pixel_engine)
    assert not r.hit and r.computed == 12 and r.path.name == ref.path.name
    np.testing.assert_array_equal(r.cache.load("train")[0], ref.cache.load("train")[0])
    np.testing.assert_array_equal(r.cache.labels("train"), ref.cache.labels("train"))
    seen = Downloads()
    again = run_extraction(
        f"s3://data/{kind}", CFG, cache_dir=tmp_path / "c", engine_factory=pixel_engine, progress=seen
    )
    assert again.hit and seen.count == 0


def test_onnx_file_backbone_from_a_bucket_into_a_bucket(s3, tmp_path):
    """An ONNX model file as the backbone over an s3:// source into an s3:// cache: the same key and features as
    the local run, and the cache read back from the bucket."""
    from tests.onnx_models import convnet

    local = make_image_folder(tmp_path / "d", {"a": 4, "b": 4}, size=(12, 12), splits=["train", "test"])
    upload_folder(s3, local, "data/imgs")
    model = convnet(tmp_path / "m.onnx", size=16)
    kw = {"backbone": str(model), "preprocess": "torch", "batch_size": 4}
    ref = extract(local, cache_dir=tmp_path / "ref", **kw)
    r = extract("s3://data/imgs", cache_dir="s3://caches/c", **kw)
    assert r.url.startswith("s3://caches/c/") and r.cache.key == ref.cache.key
    np.testing.assert_array_equal(r.cache.features("test")[:], ref.cache.features("test")[:])
    back = open_cache(r.url)
    np.testing.assert_array_equal(back.features("train")[:], ref.cache.features("train")[:])
