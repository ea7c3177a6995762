"""The fuzz sweep of every command (scripts/cli_sweep.py): odd values of every option and path argument end in
success or one clear line, never a traceback, a hang, a silent no-op or a user's file lost."""

from __future__ import annotations

import pytest
from cli_sweep import BAD, BASE, cases, commands, sweep, tally

# Commands whose accepted cases run a network (extraction, fine-tuning, conversion): the slow part of the sweep.
HEAVY = {"extract", "classify", "fine-tune", "export", "advise", "datasets export fashion-mnist"}


def _check(results):
    bad = [f"{c.outcome} {c.command} {c.option} {c.value!r}: {c.detail}" for c in results if c.outcome in BAD]
    assert bad == []
    failed = [f"{c.command}: {c.detail}" for c in results if c.option == BASE and c.outcome != "ok"]
    assert failed == []  # each command's working line works, so its cases test the values, not a broken line
    counts = tally(results)
    assert counts["ok"] > 0 and counts["refused"] > 0


def test_the_sweep_covers_every_command_and_option(tmp_path):
    from cli_sweep import Workspace

    names = {name for name, _ in commands()}
    assert {"extract", "fit-head", "inspect", "cache gc", "datasets export fashion-mnist"} <= names
    ws = Workspace(tmp_path)
    ws.paths = {k: tmp_path / k for k in ("file", "folder", "fifo", "missing")}
    listed = {(case.command, case.option) for _, _, case in cases(ws)}
    for name, cmd in commands():
        for param in cmd.params:
            if param.param_type_name == "option" and param.is_flag:
                continue
            option = param.opts[0] if param.param_type_name == "option" else param.name
            assert (name, option) in listed, (name, option)


def test_light_commands(tmp_path):
    light = {name for name, _ in commands()} - HEAVY
    _check(sweep(tmp_path, only=light, bound=60))


@pytest.mark.slow
def test_heavy_commands(tmp_path):
    _check(sweep(tmp_path, only=HEAVY, bound=120))
