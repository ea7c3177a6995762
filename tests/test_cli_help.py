"""Every command's --help renders cleanly at 80 columns: prose is reflowed by the terminal, never broken mid-sentence
by a line break written in the source; examples keep their lines."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from bottleneck.cli import app
from bottleneck.cli.common import reflow


def _commands():
    root = typer.main.get_command(app)
    todo = [((), root)]
    while todo:
        path, cmd = todo.pop()
        yield path, cmd
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            todo.append(((*path, name), sub))


def _prose(text: str):
    for para in re.split(r"\n[ \t]*\n", text or ""):
        if not any(line.startswith((" ", "\t")) for line in para.split("\n")):
            yield para


def test_reflow_joins_prose_and_keeps_examples():
    text = "One sentence\nwrapped in the source.\n\nExamples:\n\n  bottleneck a\n  bottleneck b\n"
    assert (
        reflow(text) == "One sentence wrapped in the source.\n\nExamples:\n\n  bottleneck a\n  bottleneck b"
    )


def test_no_help_text_breaks_a_sentence():
    broken = []
    for path, cmd in _commands():
        texts = [cmd.help] + [getattr(p, "help", None) for p in cmd.params]
        for text in filter(None, texts):
            broken += [f"{' '.join(path) or 'bottleneck'}: {p[:60]!r}" for p in _prose(text) if "\n" in p]
    assert broken == []


@pytest.mark.parametrize("command", [[], ["fine-tune"], ["export"], ["advise"], ["cache", "verify"]])
def test_help_renders_at_80_columns(command):
    res = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    if not command:
        # The command list: "the top blocks trained on" and "the cache's images." used to sit on two lines.
        text = " ".join(line.strip("│ ") for line in lines)
        assert re.search(r"the top blocks trained on\s+the cache's images", text)
        start = next(i for i, line in enumerate(lines) if line.lstrip("│ ").startswith("fine-tune"))
        assert len(lines[start].rstrip("│ ").rstrip()) > 60  # filled, not cut after "trained on"
