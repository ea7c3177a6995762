"""bottleneck._io: every file that must never be seen half-written goes through the one atomic writer."""

import json
from pathlib import Path

import pytest
from conftest import MeanColor, make_image_folder

from bottleneck import _io, _ownership
from bottleneck.config import ExtractConfig
from bottleneck.inference.runner import run_extraction
from bottleneck.runs import compare, fit_head


def _cache(tmp_path):
    src = make_image_folder(tmp_path / "data", {"a": 4, "b": 4}, splits=["train", "val", "test"])
    cfg = ExtractConfig(weights="none", batch_size=4)
    return run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor()).cache


def test_every_file_written_is_atomic_or_inside_an_atomic_folder(tmp_path, monkeypatch):
    """Every file of a cache, a run folder, a comparison and an export is either replaced into place whole
    (``replace_atomic``) or built inside a folder renamed into place whole (``atomic_dir``): none is ever seen
    half-written by a reader."""
    from bottleneck.export import export_run

    replaced, folders = [], []
    real_replace, real_dir = _io.replace_atomic, _ownership.atomic_dir

    def record_replace(tmp, path):
        replaced.append(Path(path))
        real_replace(tmp, path)

    def record_dir(path, kind, **kw):
        folders.append(Path(path))
        return real_dir(path, kind, **kw)

    import importlib

    # The helpers as every writer sees them: in _io and _ownership (functions importing them when called) and
    # where a module imported them by name.
    for module in (
        "bottleneck._io",
        "bottleneck._ownership",
        "bottleneck.runs.folders",
        "bottleneck.runs.comparison",
        "bottleneck.export.formats",
    ):
        mod = importlib.import_module(module)
        if hasattr(mod, "atomic_dir"):
            monkeypatch.setattr(mod, "atomic_dir", record_dir)
        if hasattr(mod, "replace_atomic"):
            monkeypatch.setattr(mod, "replace_atomic", record_replace)
    src = make_image_folder(tmp_path / "data", {"a": 4, "b": 4}, splits=["train", "val", "test"])
    cache = run_extraction(
        src, backbone="pixels", image_size=16, cache_dir=tmp_path / "c"
    ).cache  # real, exportable
    run = fit_head(cache, "logreg", out=tmp_path / "run")
    compare([cache], heads=["logreg"], out=tmp_path / "cmp")
    for fmt, name in (("onnx", "m.onnx"), ("savedmodel", "m_saved")):
        export_run(run, tmp_path / "exports" / name, format=fmt)

    def whole(f: Path) -> bool:
        return f in replaced or any(folder in f.parents for folder in folders)

    outputs = [tmp_path / "run", tmp_path / "cmp", tmp_path / "exports", cache.path]
    files = [f for root in outputs for f in root.rglob("*") if f.is_file() and f.name != "zarr.json"]
    # zarr's own files and the chunk data are committed by the cache's protocol (checksums, meta.json last).
    files = [f for f in files if "features.zarr" not in f.parts]
    assert files and [f for f in files if not whole(f)] == []
    assert {"meta.json", "manifest.npz", "verified.json"} <= {f.name for f in replaced}


def test_an_out_folder_that_is_not_ours_is_never_replaced(tmp_path):
    from typer.testing import CliRunner

    from bottleneck.cli import app

    cache = _cache(tmp_path)
    precious = tmp_path / "Desktop"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not lose")
    res = CliRunner().invoke(app, ["fit-head", str(cache.path), "--head", "logreg", "--out", str(precious)])
    (line,) = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and line == (
        f"error: refusing to replace {precious}: it has no record of files bottleneck wrote "
        "(.bottleneck-owned.json). Pass another --out FOLDER, or --force to move it aside "
        "(to Desktop.replaced-<time>) and write a new one."
    )
    assert (precious / "thesis.txt").read_text() == "do not lose" and len(list(precious.iterdir())) == 1
    run = fit_head(cache, "logreg", out=tmp_path / "run")
    again = fit_head(cache, "logreg", out=run.path, seed=1)  # a run folder of ours: replaced whole
    assert again.path == run.path and (run.path / "metrics.json").is_file()


def test_a_crash_mid_write_leaves_the_old_run_folder_whole(tmp_path, monkeypatch):
    import bottleneck.runs.folders

    cache = _cache(tmp_path)
    run = fit_head(cache, "logreg", out=tmp_path / "run")
    before = {f.name: f.read_bytes() for f in (tmp_path / "run").rglob("*") if f.is_file()}

    def disk_gone(*a, **kw):
        raise OSError("disk gone")

    monkeypatch.setattr(bottleneck.runs.folders, "plot_confusion", disk_gone)  # where the run writer finds it
    with pytest.raises(OSError, match="disk gone"):
        fit_head(cache, "logreg", out=run.path, params={"Cs": [1.0]})
    after = {f.name: f.read_bytes() for f in (tmp_path / "run").rglob("*") if f.is_file()}
    assert after == before  # the old folder, whole
    with pytest.raises(OSError, match="disk gone"):
        fit_head(cache, "logreg", out=tmp_path / "new")
    assert not (tmp_path / "new").exists()  # none, never half of one
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "tmp" in p.name]


KILLED_WRITER = """
import os, sys, time
import bottleneck.runs.folders
from bottleneck.runs import fit_head

def block(*a, **kw):  # mid-write: the head and metrics are written, the plots are not
    open(sys.argv[3], "w").close()
    time.sleep(600)

bottleneck.runs.folders.plot_confusion = block
fit_head(sys.argv[1], "logreg", out=sys.argv[2])
"""


def test_a_writer_killed_mid_way_leaves_no_half_folder(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    cache = _cache(tmp_path)
    marker, out = tmp_path / "mid-write", tmp_path / "runs" / "r"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(cache.path), str(out), str(marker)])
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert marker.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # only the hidden folder being built is left
    (left,) = [p.name for p in (tmp_path / "runs").iterdir()]
    assert left.startswith(".r.") and ".tmp" in left
    # The next writer of that folder collects it (its building mark says whose it is; its process is gone).
    fit_head(cache, "logreg", out=out)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["r"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "meta.json"
    _io.write_json_atomic(target, {"v": 1})

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(_io.os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        _io.write_json_atomic(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]
