"""Every option of every command is derived from one declaration (``bottleneck.settings``): none is written by hand,
none is declared twice, every default is allowed by its own constraint, and the reference lists them all."""

from __future__ import annotations

import inspect
import math

import pytest
import typer.main
from typer.testing import CliRunner

from bottleneck import job_settings as jobs
from bottleneck.cli import app
from bottleneck.cli.reference import commands, render
from bottleneck.config import SETTINGS as EXTRACT
from bottleneck.constraints import invalid_values, make_constraint
from bottleneck.data.datasets import export_fashion_mnist
from bottleneck.export.job import export_run
from bottleneck.inference.recompute import verify_cache
from bottleneck.inference.runner import extract
from bottleneck.inspection.job import inspect_cache
from bottleneck.inspection.options import INSPECT
from bottleneck.job_settings import ADVISE, PREDICT
from bottleneck.runs.advise import advise
from bottleneck.runs.comparison import compare
from bottleneck.runs.fit import fit_head
from bottleneck.runs.imagenet_top_k import classify
from bottleneck.runs.predict import predict_images
from bottleneck.tuning.fine_tuning import fine_tune
from bottleneck.tuning.recipe import SETTINGS as RECIPE


def _click(path):
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _all_settings():
    for path, _, callback in commands(app):
        for s in callback.settings:
            yield path, s


def test_every_option_is_derived_from_a_declaration():
    hand_written = []
    for path, _, callback in commands(app):
        declared = {s.name: s for s in callback.settings}
        for p in inspect.signature(callback).parameters.values():
            setting = getattr(p.default, "setting", None)
            if setting is None or declared.get(p.name) is not setting:
                hand_written.append(f"{' '.join(path)} {p.name}")
        params = {p.name for p in _click(path).params if p.name != "help"}
        assert params == set(declared), path
    root = inspect.signature(app.registered_callback.callback).parameters
    hand_written += [
        f"(root) {n}" for n, p in root.items() if n != "ctx" and not hasattr(p.default, "setting")
    ]
    assert hand_written == []


def test_no_setting_is_declared_twice():
    """Two declarations saying the same (name, help) are one setting written twice; a command that means a shared
    setting in its own words derives it (``Setting.but``), which keeps one root."""
    seen = {}
    for path, s in _all_settings():
        key = (s.name, s.help)
        root = seen.setdefault(key, s.root)
        assert root is s.root, f"{' '.join(path)}: {s.name} declared again, not derived from the first"


def test_every_default_is_allowed_by_its_constraint():
    for path, s in _all_settings():
        if s.checked and s.default is not ... and s.default is not None:
            assert make_constraint(s.constraint).is_satisfied_by(s.default), (path, s.name)


def test_every_extraction_and_fine_tuning_setting_is_an_option_of_its_command():
    extract = next(cb for path, _, cb in commands(app) if path == ("extract",))
    assert set(EXTRACT.names()) <= set(extract.settings.names())
    fine_tune = next(cb for path, _, cb in commands(app) if path == ("fine-tune",))
    assert {s.name for s in RECIPE if s.cli} <= set(fine_tune.settings.names())


def test_the_reference_lists_every_option_of_every_command():
    text = render(app)
    for path, _, _ in commands(app):
        section = text.split(f"## `bottleneck {' '.join(path)}`", 1)[1].split("\n## ", 1)[0]
        for p in _click(path).params:
            if p.name == "help":
                continue
            shown = p.name.upper() if p.param_type_name == "argument" else f"`{p.opts[0]}"
            assert shown in section, (path, p.name)
    assert "| `--fast-decode` | `False` | True or False | cache key, per-row key |" in text


def _typed_invalid(s):
    """The first value the setting's constraint refuses that its option's type can carry on the command line."""
    typ = s.cli_type()
    for v in invalid_values(s.constraint):
        if isinstance(v, bool) or v is None:
            continue
        if typ is int and isinstance(v, int):
            return str(v)
        if typ is float and isinstance(v, int | float) and math.isfinite(v):
            return str(v)
        if typ is str and isinstance(v, str) and v.strip():
            return v
    return None


def _refusals():
    for path, _, callback in commands(app):
        args = [f"nowhere-{s.name}" for s in callback.settings if s.argument]
        for s in callback.settings:
            if s.argument or not s.checked or s.cli_type() is bool:
                continue
            value = _typed_invalid(s)
            if value is not None:
                yield pytest.param([*path, *args, s.spellings()[0], value], id=f"{' '.join(path)} {s.name}")


@pytest.mark.parametrize("argv", list(_refusals()))
def test_every_declared_constraint_refuses_on_the_command_line_before_work(tmp_path, monkeypatch, argv):
    """Generated from the declarations: each option's refused value is one line naming the option, exit 2, before
    anything is read or written."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, argv)
    option = argv[-2]
    assert res.exit_code == 2, res.output
    [line] = res.output.strip().splitlines()
    assert line.startswith("error: ") and option in line, line
    assert list(tmp_path.iterdir()) == []


def test_declared_defaults_are_the_library_functions_defaults():
    """A job function's keyword defaults are still written in its signature: they must say what its declarations
    say (the command line's --baseline and --out of compare differ on purpose: the CLI saves and compares with
    the pixel row by default; --heads and --seeds are text there)."""
    on_purpose = {("compare", n) for n in ("heads", "seeds", "out", "baseline")}
    pairs = [
        (inspect_cache, INSPECT),
        (advise, ADVISE),
        (predict_images, PREDICT),
        (classify, jobs.CLASSIFY),
        (fit_head, jobs.FIT),
        (compare, jobs.COMPARE),
        (export_run, jobs.EXPORT),
        (export_fashion_mnist, jobs.FASHION_MNIST),
        (extract, jobs.EXTRACT_RUN),
        (fine_tune, jobs.FINE_TUNE_RUN),
        (verify_cache, jobs.CACHE_VERIFY),
    ]
    differ = []
    for fn, table in pairs:
        signature = inspect.signature(fn).parameters
        for s in table:
            p = signature.get(s.name)
            if p is None or p.default is inspect.Parameter.empty or (fn.__name__, s.name) in on_purpose:
                continue
            if str(p.default) != str(s.default):
                differ.append(f"{fn.__name__}({s.name}={p.default!r}) but declared {s.default!r}")
    assert differ == []
