"""Extraction on a Dask cluster: the same bits as one process, a killed worker changes nothing, failures are one
line, an interrupted run resumes from the ranges its tasks recorded."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import numpy as np
import pytest
from conftest import CFG, PixelEngine, make_image_folder, truncated_png
from typer.testing import CliRunner

from bottleneck.cache import read_meta
from bottleneck.config import ExtractConfig
from bottleneck.errors import BadImageError, BottleneckError
from bottleneck.inference import distributed
from bottleneck.inference.runner import run_extraction

pytest.importorskip("distributed")


class SlowPixels(PixelEngine):
    """Pixels as features, a little slow per batch, so a worker can be killed while tasks run."""

    delay = 0.05

    def __call__(self, batch):
        time.sleep(self.delay)
        return super().__call__(batch)


class SlowerPixels(SlowPixels):
    delay = 0.2


def slow_pixels(config):
    return SlowPixels()


def slower_pixels(config):
    return SlowerPixels()


@pytest.fixture(scope="module")
def cluster():
    """A real two-process cluster reached by its scheduler address, as `--cluster tcp://...` reaches one."""
    import cloudpickle
    from distributed import Client, LocalCluster

    # Workers import this module's engines by value: the tests folder is not on their path.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(sys.modules["conftest"])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        with Client(lc, set_as_default=False) as client:
            yield lc.scheduler_address, client


def load(result):
    return {s: result.cache.load(s) for s in result.cache.splits}


def assert_same(a, b):
    for split, (x, y) in a.items():
        np.testing.assert_array_equal(b[split][0], x)
        np.testing.assert_array_equal(b[split][1], y)
        assert b[split][0].tobytes() == x.tobytes()


def test_real_backbone_same_bits_as_one_process(tmp_path, cluster):
    # MobileNetV2 (random weights) through the verified ONNX model: the workers load the model the client
    # converted, group batches as one process does, and write their ranges into the one zarr store.
    address, _ = cluster
    src = make_image_folder(tmp_path / "d", {"a": 30, "b": 27}, size=(20, 16), splits=["train", "test"])
    cfg = ExtractConfig(backbone="mobilenet_v2", weights="none", image_size=32, batch_size=8, engine="onnx")
    one = run_extraction(src, cfg, cache_dir=tmp_path / "c", chunk_rows=16)
    many = run_extraction(src, cfg, cache_dir=tmp_path / "c", chunk_rows=16, cluster=address, force=True)
    assert many.computed == one.computed == 114 and many.cache.complete
    assert many.path == one.path  # the same key: the cluster is a run setting
    assert_same(load(one), load(many))
    records = sorted((many.path / "commits" / "train").glob("*.json"))
    assert len(records) == 4  # 57 train rows in ranges of 16
    assert many.cache.meta["progress"] == {"train": 57, "test": 57}
    from bottleneck.cache.manage import verify_cache

    report = verify_cache(many.path)  # the ranges' checksums, recorded from the workers' records
    assert report.regions == 8 and not report.bad


def test_killed_worker_changes_nothing(tmp_path, cluster):
    address, client = cluster
    src = make_image_folder(tmp_path / "d", {"a": 40, "b": 40}, size=(12, 12))
    ref = run_extraction(src, CFG, cache_dir=tmp_path / "ref", engine_factory=slow_pixels)
    result, errors = {}, []

    def run():
        try:
            result["r"] = run_extraction(
                src,
                CFG,
                cache_dir=tmp_path / "c",
                engine_factory=slower_pixels,
                chunk_rows=4,
                cluster=address,
            )
        except Exception as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "c").glob("*/commits/train/*.json")):
        time.sleep(0.05)
    pids = client.run(os.getpid)
    assert thread.is_alive()  # mid-run
    os.kill(next(iter(pids.values())), signal.SIGKILL)  # its task goes to another worker
    thread.join(300)
    assert set(client.run(os.getpid).values()) != set(pids.values())  # the killed one was replaced
    assert not errors, errors
    r = result["r"]
    assert r.cache.complete and r.computed == 80
    assert_same(load(ref), load(r))


def _wait_until_idle(client, timeout: float = 60) -> None:
    """Poll the workers themselves until none is executing a task: the client that submitted them has gone, so the
    scheduler has forgotten them, but a task that was running still finishes (and may land its range)."""

    def executing(dask_worker):
        return dask_worker.state.executing_count

    deadline = time.monotonic() + timeout
    while any(client.run(executing).values()) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_late_bad_image_on_a_worker_is_named_and_its_run_reused(tmp_path, cluster):
    address, client = cluster
    src = make_image_folder(tmp_path / "d", {"a": 20, "b": 20}, size=(12, 12))
    ref = run_extraction(src, CFG, cache_dir=tmp_path / "ref", engine_factory=slow_pixels)
    saved = (src / "b" / "019.png").read_bytes()
    (src / "b" / "019.png").write_bytes(
        truncated_png(3)
    )  # its header passes; decoding fails, in the last range
    with pytest.raises(
        BadImageError, match=r"unreadable image b/019.png \(truncated PNG\) found by a worker"
    ):
        run_extraction(
            src, CFG, cache_dir=tmp_path / "c", engine_factory=slow_pixels, chunk_rows=4, cluster=address
        )
    # A task already running when the client stopped may still land its range: wait until the workers are idle,
    # so the records counted are all there will be.
    _wait_until_idle(client)
    recorded = len(list((tmp_path / "c").glob("*/commits/train/*.json")))
    assert 1 <= recorded <= 9
    # The ranges the client saw land are in the interrupted cache's checksums: another key's run reuses them.
    (interrupted,) = (tmp_path / "c").glob("efficientnet_lite0-*")
    in_meta = len(read_meta(interrupted)["checksums"]["train"])
    (src / "b" / "019.png").write_bytes(saved)  # fixed: another key, whose run reuses the recorded rows
    r = run_extraction(
        src, CFG, cache_dir=tmp_path / "c", engine_factory=slow_pixels, chunk_rows=4, cluster=address
    )
    assert 1 <= in_meta <= recorded and r.reused >= 4 * in_meta and r.reused + r.computed == 40
    assert_same(load(ref), load(r))


class FailsWhileFlagged(SlowPixels):
    """Fails on the worker on the batch holding image b/019 while a flag file exists: an interruption."""

    def __init__(self, flag, color):
        self.flag, self.color = flag, np.array(color, dtype=np.uint8)

    def __call__(self, batch):
        if self.flag.exists() and (batch[:, 0, 0] == self.color).all(axis=1).any():
            raise RuntimeError("node lost its disk")
        return super().__call__(batch)


def test_interrupted_cluster_run_resumes_from_recorded_ranges(tmp_path, cluster):
    from conftest import image_color

    address, client = cluster
    src = make_image_folder(tmp_path / "d", {"a": 20, "b": 20}, size=(12, 12))
    ref = run_extraction(src, CFG, cache_dir=tmp_path / "ref", engine_factory=slow_pixels)
    flag = tmp_path / "flag"
    flag.write_text("on")
    color = image_color("train", 1, 19)

    def factory(config):
        return FailsWhileFlagged(flag, color)

    with pytest.raises(
        distributed.ClusterError, match=r"a worker failed on train rows 36-40: node lost its disk"
    ):
        run_extraction(
            src, CFG, cache_dir=tmp_path / "c", engine_factory=factory, chunk_rows=4, cluster=address
        )
    # A task already running when the client stopped may still land its range: wait until the workers are idle,
    # so the records counted are all there will be.
    _wait_until_idle(client)
    recorded = len(list((tmp_path / "c").glob("*/commits/train/*.json")))
    assert 0 <= recorded <= 9
    flag.unlink()
    r = run_extraction(
        src, CFG, cache_dir=tmp_path / "c", engine_factory=factory, chunk_rows=4, cluster=address
    )
    assert r.resumed_from == 4 * recorded and r.computed == 40 - 4 * recorded and r.reused == 0
    assert_same(load(ref), load(r))


def test_a_worker_that_cannot_build_the_engine_fails_once(tmp_path, cluster):
    address, _ = cluster
    attempts = tmp_path / "attempts"

    def broken(config):
        from distributed import get_worker

        try:
            get_worker()
        except ValueError:
            return PixelEngine()  # the client builds it fine
        with open(attempts, "a") as fh:
            fh.write("x")
        raise ImportError("No module named 'fancy_backbone'")

    src = make_image_folder(tmp_path / "d", {"a": 12, "b": 12}, size=(12, 12))
    with pytest.raises(
        distributed.ClusterError, match=r"a worker failed on train rows \d+-\d+: No module named"
    ):
        run_extraction(
            src, CFG, cache_dir=tmp_path / "c", engine_factory=broken, chunk_rows=4, cluster=address
        )
    assert 1 <= len(attempts.read_text()) <= 2  # once per worker at most, not once per task or retry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line_after_a_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 2)
    src = make_image_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(12, 12))
    t = time.perf_counter()
    with pytest.raises(
        distributed.ClusterError, match=r"cannot reach the Dask scheduler at tcp://127.0.0.1:\d+ within 2 s"
    ):
        run_extraction(
            src,
            CFG,
            cache_dir=tmp_path / "c",
            engine_factory=slow_pixels,
            cluster=f"tcp://127.0.0.1:{free_port()}",
        )
    # The connection is tried before the backbone is built: the timeout, plus hashing six images.
    assert time.perf_counter() - t < 2 + 3


def test_bad_cluster_settings_are_one_line_errors(tmp_path, monkeypatch):
    from bottleneck.cli import app

    src = make_image_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(12, 12))
    with pytest.raises(BottleneckError, match="format='npy' cannot take writes from several processes"):
        run_extraction(src, CFG.replace(format="npy"), cache_dir=tmp_path / "c", cluster="local:2")
    with pytest.raises(BottleneckError, match="is not a cluster; pass local:N"):
        run_extraction(src, CFG, cache_dir=tmp_path / "c", engine_factory=slow_pixels, cluster="my-laptop")
    res = CliRunner().invoke(app, ["extract", str(src), "--format", "h5", "--cluster", "local:2"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "--format 'h5' cannot take writes from several processes" not in res.output
    assert res.output.strip() == (
        "error: --cluster writes one shared zarr store; --format h5 cannot take writes from several processes. "
        "Pass --format zarr (the default) or leave --cluster out."
    )
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a)
    )
    with pytest.raises(BottleneckError, match=r"pip install 'bottleneck-features\[dask\]'"):
        run_extraction(src, CFG, cache_dir=tmp_path / "c", cluster="local:2")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").glob("*/meta.json"))
