"""`bottleneck --version` and `bottleneck doctor`: the installed version, the report's keys, types and values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import bottleneck
from bottleneck import _tf
from bottleneck.cli import app
from bottleneck.inference.quantize import cpu_flags, int8_weights

TOP_KEYS = {
    "bottleneck",
    "python",
    "stack",
    "engines",
    "cpu",
    "extras",
    "browser",
    "pandas",
    "clashes",
    "cache",
    "problems",
}


def test_version_is_the_installed_distributions(tmp_path):
    # A real process from outside the checkout: the version pip installed, which is bottleneck.__version__.
    out = subprocess.run(
        [sys.executable, "-m", "bottleneck", "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    installed = metadata.version("bottleneck-features")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"bottleneck-features {installed}\n" and out.stderr == ""
    assert installed == bottleneck.__version__


def _doctor_json(*args):
    res = CliRunner().invoke(app, ["doctor", "--json", *args])
    report = json.loads(res.output)
    assert res.exit_code == (1 if report["problems"] else 0), res.output
    return report


def test_doctor_json_keys_types_and_values(tmp_path):
    report = _doctor_json("--cache-dir", str(tmp_path))
    assert set(report) == TOP_KEYS
    assert report["bottleneck"] == {
        "distribution": "bottleneck-features",
        "version": metadata.version("bottleneck-features"),
        "import_path": str(Path(bottleneck.__file__).parent),
        "imported_version": bottleneck.__version__,
    }
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert report["stack"]["numpy"] == np.__version__
    assert report["stack"]["tensorflow"] == metadata.version("tensorflow")
    assert all(v is None or isinstance(v, str) for v in report["stack"].values())

    engines = report["engines"]
    assert set(engines) == {"tensorflow", "onnx", "int8", "gpu"}
    import onnxruntime as ort

    assert engines["onnx"]["usable"] is True and engines["onnx"]["reason"] is None
    assert engines["onnx"]["providers"] == ort.get_available_providers()
    assert engines["tensorflow"]["usable"] is True and isinstance(engines["tensorflow"]["gpus"], list)
    assert engines["int8"] == {"usable": True, "reason": None, "weights": int8_weights()}
    assert engines["gpu"]["usable"] == bool(engines["onnx"]["gpu_providers"] or engines["tensorflow"]["gpus"])

    cpu, flags = report["cpu"], cpu_flags()
    assert cpu["cores"] == _tf.cpu_count()
    if flags is not None:
        assert cpu["avx512"] == ("avx512f" in flags) and cpu["avx2"] == ("avx2" in flags)
        assert cpu["vnni"] == bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)

    assert report["extras"]["dask"]["installed"] is True  # a dev dependency
    assert report["extras"]["dask"]["versions"] == {
        "dask": metadata.version("dask"),
        "distributed": metadata.version("distributed"),
    }
    lite = report["extras"]["lite"]
    assert lite["install"] == (None if lite["installed"] else "pip install 'bottleneck-features[lite]'")

    which = [
        shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    ]
    assert report["browser"] == next((p for p in which if p), None)
    assert (
        report["pandas"]["version"] == metadata.version("pandas") and report["pandas"]["accelerator"] is False
    )
    assert report["clashes"] == []

    cache = report["cache"]
    assert cache["path"] == str(tmp_path.resolve()) and cache["exists"] is True and cache["remote"] is False
    assert 0 < cache["free_bytes"] <= cache["total_bytes"] == shutil.disk_usage(tmp_path).total
    assert all(isinstance(p, str) for p in report["problems"])


def test_doctor_cache_folder_not_made_yet_and_remote(tmp_path):
    missing = _doctor_json("--cache-dir", str(tmp_path / "a" / "b"))["cache"]
    assert missing["exists"] is False and missing["total_bytes"] == shutil.disk_usage(tmp_path).total
    assert not (tmp_path / "a").exists()  # doctor looks, never creates
    remote = _doctor_json("--cache-dir", "s3://bucket/caches")["cache"]
    assert remote == {
        "path": "s3://bucket/caches",
        "remote": True,
        "exists": None,
        "free_bytes": None,
        "total_bytes": None,
    }


def test_doctor_human_form(tmp_path):
    res = CliRunner().invoke(app, ["doctor", "--cache-dir", str(tmp_path)])
    lines = res.output.splitlines()
    version = metadata.version("bottleneck-features")
    assert (
        lines[0] == f"bottleneck-features {version} (import bottleneck: {Path(bottleneck.__file__).parent})"
    )
    labels = [line.split()[0] for line in lines[1:13]]
    assert labels == [
        "python",
        "stack",
        "tensorflow",
        "onnx",
        "int8",
        "gpu",
        "cpu",
        "extras",
        "browser",
        "pandas",
        "clashes",
        "cache",
    ]
    by_label = {line.split()[0]: line for line in lines[1:13]}
    assert f"numpy {np.__version__}" in by_label["stack"]
    assert by_label["int8"].startswith(f"int8        usable, {int8_weights()} weights")
    assert by_label["clashes"] == "clashes     none"
    assert (
        by_label["cache"].startswith(f"cache       {tmp_path.resolve()} (")
        and " GB free of " in by_label["cache"]
    )
    assert "without a Bottleneck accelerator" in by_label["pandas"]
    if res.exit_code == 0:
        assert lines[13:] == ["no problems found"]
    else:  # e.g. a nearly full disk on a CI machine: each problem on its own line
        assert lines[13].endswith("problem(s):") and all(line.startswith("  - ") for line in lines[14:])


def test_doctor_help_has_an_example():
    res = CliRunner().invoke(app, ["doctor", "--help"], env={**os.environ, "COLUMNS": "200"})
    assert res.exit_code == 0 and "bottleneck doctor --json --cache-dir /data/cache" in res.output
