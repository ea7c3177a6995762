"""bottleneck._io: every file that must never be seen half-written goes through the one atomic writer."""

import json

import pytest
from conftest import MeanColor, make_image_folder

from bottleneck import _io
from bottleneck.config import ExtractConfig
from bottleneck.inference.runner import run_extraction
from bottleneck.runs import compare, fit_head


def test_writers_share_the_atomic_helper(tmp_path, monkeypatch):
    written = []
    real = _io.replace_atomic

    def record(tmp, path):
        written.append(path.name)
        real(tmp, path)

    monkeypatch.setattr(_io, "replace_atomic", record)
    src = make_image_folder(tmp_path / "data", {"a": 4, "b": 4}, splits=["train", "val", "test"])
    cfg = ExtractConfig(weights="none", batch_size=4)
    cache = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor()).cache
    fit_head(cache, "logreg", out=tmp_path / "run")
    compare([cache], heads=["logreg"], out=tmp_path / "cmp")
    assert {"meta.json", "manifest.npz", "metrics.json", "head.json", "comparison.json"} <= set(written)


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
