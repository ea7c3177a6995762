"""The CLI's progress display: a rich bar on a terminal, a few plain lines in logs (CI, nohup, notebooks)."""

import io

from bottleneck.cli.common import cli_spelling
from bottleneck.cli.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    now = [100.0]
    bar = ProgressBar(stream=out, interval=5.0, clock=lambda: now[0])
    bar("train", 0, 1000)
    for done in range(10, 500, 10):
        now[0] += 0.01
        bar("train", done, 1000)  # within the interval: no line, and never a \r redraw
    now[0] = 106.0  # past the interval
    bar("train", 500, 1000)
    now[0] = 107.0
    bar("train", 1000, 1000)
    bar("train", 1000, 1000)  # a repeated final update adds nothing
    bar("test", 5, 5)  # a stage shorter than the interval prints nothing
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 2, lines
    assert lines[0] == "train 500/1000 (50%) 83.3 img/s, about 6 s left"  # 500 images in 6 s
    assert lines[1] == "train 1000/1000 (100%) 142.9 img/s in 7.0 s"


def test_rich_bar_on_a_terminal_and_silence_when_disabled():
    term = Terminal()
    bar = ProgressBar(stream=term)
    for done in range(0, 51, 5):
        bar("train", done, 50)
    bar.close()
    text = term.getvalue()
    assert "train" in text and "50/50" in text
    quiet = io.StringIO()
    off = ProgressBar(stream=quiet, enabled=False)
    off("train", 50, 50)
    assert quiet.getvalue() == ""


def test_cli_spelling_of_library_messages():
    options = {"image_size", "on_bad_image", "layer", "top"}
    assert cli_spelling("pass image_size=224 or more", options) == "pass --image-size 224 or more"
    assert cli_spelling("or pass on_bad_image='skip' to", options) == "or pass --on-bad-image skip to"
    assert cli_spelling("layer='a,,b' has", options) == "--layer a,,b has"
    # Names that are no CLI option, and code like include_top=False, stay as they are.
    assert cli_spelling("include_top=False and k=3", options) == "include_top=False and k=3"


def test_slow_steps_are_seconds_per_step_in_their_own_unit():
    out = io.StringIO()
    now = [0.0]
    bar = ProgressBar(unit=None, stream=out, interval=5.0, clock=lambda: now[0])
    bar("epoch", 0, 4)
    now[0] = 25.0
    bar("epoch", 2, 4)  # 12.5 s per epoch: "0.1 it/s" said nothing
    now[0] = 50.0
    bar("epoch", 4, 4)
    lines = out.getvalue().splitlines()
    assert lines == [
        "epoch 2/4 (50%) 12.5 s/epoch, about 25 s left",
        "epoch 4/4 (100%) 12.5 s/epoch in 50.0 s",
    ]
