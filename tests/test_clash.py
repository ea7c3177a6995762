"""The numerical Bottleneck beside us (real .dist-info folders on the path), and pandas' view of our package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from bottleneck.cache import write_arrays
from bottleneck.clash import PANDAS_WARNING, find_clashes
from bottleneck.cli import app


def fake_distribution(site, name: str, version: str, ours: bool = False):
    """A real ``.dist-info`` folder as pip writes one (metadata only: no package files), in ``site``."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    summary = "Transfer learning on images" if ours else "Fast NumPy array functions written in C"
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n"
    )
    if ours:  # this project as installed before its rename: its console script says so
        (info / "entry_points.txt").write_text("[console_scripts]\nbottleneck = bottleneck.cli:main\n")
    return info


def run(args, tmp_path, pythonpath=None):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    # From a folder outside the checkout, as a user runs it.
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path, env=env)


def test_every_command_names_the_numerical_bottleneck_in_one_line(tmp_path):
    site = tmp_path / "site"
    fake_distribution(site, "Bottleneck", "1.6.1")
    out = run(["-m", "bottleneck", "cache", "ls", "--cache-dir", str(tmp_path / "c")], tmp_path, site)
    assert out.returncode == 0 and out.stdout == f"no caches in {tmp_path / 'c'}\n"
    assert out.stderr == (
        f"warning: the numerical Bottleneck 1.6.1 (pandas' and xarray's accelerator, in {site}) is installed in "
        "this environment and imports as `bottleneck` too, so one package's files replace the other's; install "
        "bottleneck-features in a virtual environment of its own: python -m venv ~/.venvs/bottleneck && "
        "~/.venvs/bottleneck/bin/pip install bottleneck-features\n"
    )
    # Without it: nothing on stderr.
    clean = run(["-m", "bottleneck", "cache", "ls", "--cache-dir", str(tmp_path / "c")], tmp_path)
    assert clean.returncode == 0 and clean.stderr == ""


def test_import_bottleneck_does_not_check_or_print(tmp_path):
    site = tmp_path / "site"
    fake_distribution(site, "Bottleneck", "1.6.1")
    out = run(
        ["-c", "import bottleneck, sys; print(sorted(m for m in sys.modules if m.startswith('bottleneck')))"],
        tmp_path,
        site,
    )
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.strip() == "['bottleneck', 'bottleneck._lazy']"  # no clash module, no check


def test_doctor_reports_the_clash_and_exits_1(tmp_path, monkeypatch):
    site = tmp_path / "site"
    fake_distribution(site, "bottleneck", "1.5.0")  # any spelling pip may write
    monkeypatch.syspath_prepend(str(site))
    [clash] = find_clashes()
    assert (clash.kind, clash.name, clash.version, clash.location) == (
        "numerical",
        "bottleneck",
        "1.5.0",
        str(site),
    )

    res = CliRunner().invoke(app, ["doctor", "--json", "--cache-dir", str(tmp_path)])
    report = json.loads(res.output)  # doctor says it in its report, not as an extra stderr line
    assert res.exit_code == 1
    assert report["clashes"] == [
        {
            "kind": "numerical",
            "name": "bottleneck",
            "version": "1.5.0",
            "location": str(site),
            "message": clash.message,
        }
    ]
    assert report["problems"][0] == clash.message

    res = CliRunner().invoke(app, ["doctor", "--cache-dir", str(tmp_path)])
    lines = res.output.splitlines()
    assert res.exit_code == 1 and "clashes     bottleneck 1.5.0" in lines
    assert (
        lines[lines.index(next(x for x in lines if x.endswith("problem(s):"))) + 1] == f"  - {clash.message}"
    )


def test_this_project_under_its_old_name_is_told_apart(tmp_path, monkeypatch):
    site = tmp_path / "site"
    fake_distribution(site, "bottleneck", "0.1.0", ours=True)
    monkeypatch.syspath_prepend(str(site))
    [clash] = find_clashes()
    assert clash.kind == "old-name" and clash.version == "0.1.0"
    assert "pip uninstall bottleneck`, then reinstall bottleneck-features" in clash.message
    # Not the numerical library: commands stay quiet about it; doctor lists it.
    res = CliRunner().invoke(app, ["cache", "ls", "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0 and res.output == f"no caches in {tmp_path / 'c'}\n"


def test_pandas_in_our_processes_is_quiet_and_unaccelerated(tmp_path):
    # The trap is real here: pandas imports our package as its accelerator and warns in a plain process.
    plain = run(["-c", "import pandas.core.nanops as n; print(n._BOTTLENECK_INSTALLED)"], tmp_path)
    assert plain.stdout == "False\n"
    assert "Pandas requires version" in plain.stderr and "of 'bottleneck'" in plain.stderr

    # A CLI command that imports pandas (through scikit-learn) prints no such warning, and pandas still does not
    # take us for its accelerator.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 8)).astype(np.float32), np.arange(60) % 3
    write_arrays(
        tmp_path / "c", {"train": (X[:45], y[:45]), "test": (X[45:], y[45:])}, class_names=list("abc")
    )
    code = (
        "import json, sys\n"
        "from bottleneck.cli import main\n"
        "sys.argv = ['bottleneck', 'fit-head', 'c', '--head', 'logreg', '--runs-dir', 'runs']\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    imported = 'pandas' in sys.modules\n"
        "    import pandas.core.nanops as n\n"
        "    print(json.dumps({'pandas_imported_by_command': imported,\n"
        "                      'accelerated': n._BOTTLENECK_INSTALLED, 'bn': n.bn}))\n"
    )
    out = run(["-c", code], tmp_path)
    state = json.loads(out.stdout.splitlines()[-1])
    assert out.returncode == 0, out.stderr
    assert state == {"pandas_imported_by_command": True, "accelerated": False, "bn": None}
    [line] = out.stderr.splitlines()  # the command's own summary, and no warning
    assert line.startswith("logreg fitted in ") and "Warning" not in out.stderr
    assert (tmp_path / "runs" / "c-logreg").is_dir()


def test_the_pandas_filter_matches_pandas_own_text():
    # The text from pandas/compat/_optional.py, with the versions pandas and we have.
    import re

    assert re.match(
        PANDAS_WARNING,
        "Pandas requires version '1.5.0' or newer of 'bottleneck' (version '0.1.0' currently installed).",
    )
    assert not re.match(
        PANDAS_WARNING, "Pandas requires version '2.8.4' or newer of 'numexpr' (version '2.7.0' ...)"
    )
