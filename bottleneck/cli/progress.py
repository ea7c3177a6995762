"""Progress for a person: the library's ``progress(stage, done, total)`` callback drawn on stderr.

On a terminal, a rich progress bar per stage (rate and time left). Elsewhere (CI logs, ``nohup``, notebooks,
pipes), carriage-return redraws would pile up into one enormous line, so it prints a plain line every few
seconds per stage and one when the stage ends.
"""

from __future__ import annotations

import sys
import time

PLAIN_INTERVAL_S = 5.0


class ProgressBar:
    """A progress callback. ``enabled``: None or True draws (a bar on a terminal, lines elsewhere); False is silent.
    ``unit`` names what is counted in rates ("img/s"); None: each stage's own name ("12.3 s/epoch")."""

    def __init__(
        self,
        unit: str | None = "img",
        enabled: bool | None = None,
        *,
        stream=None,
        interval: float = PLAIN_INTERVAL_S,
        clock=time.perf_counter,
    ):
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled is not False
        self.live = self.enabled and _isatty(self.stream)
        self.interval = interval
        self.clock = clock  # seconds; a test passes its own to control when lines are due
        self._rich = None  # rich.progress.Progress, started on the first update
        self._tasks: dict[str, int] = {}
        self._plain: dict[str, list[float]] = {}  # label -> [start time, done at start, last printed]
        self._finished: set[str] = set()

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled or (label in self._finished and done >= total):
            return  # a repeated final update must not report the stage twice
        self._finished.discard(label)
        if self.live:
            self._draw(label, done, total)
        else:
            self._line(label, done, total)
        if done >= total:
            self._finished.add(label)

    def _draw(self, label: str, done: int, total: int) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._rich = Progress(
                TextColumn("{task.description:>6}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(self.unit),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._rich.start()
        if label not in self._tasks:
            # The task starts at `done`, so resumed work is not counted as done in no time.
            self._tasks[label] = self._rich.add_task(label, total=total, completed=done)
        self._rich.update(self._tasks[label], completed=done, total=total)

    def _line(self, label: str, done: int, total: int) -> None:
        now = self.clock()
        state = self._plain.get(label)
        if state is None:
            state = self._plain[label] = [now, float(done), now]
        finished = done >= total
        # A stage shorter than the interval prints nothing: short runs stay as quiet as on a terminal.
        printed_before = state[2] > state[0]
        if now - state[2] < self.interval and not (finished and printed_before):
            return
        state[2] = now
        elapsed = now - state[0]
        rate = (done - state[1]) / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * done / total if total else 100.0
        text = f"{label} {done}/{total} ({pct:.0f}%)"
        if rate > 0:
            text += " " + rate_text(rate, self.unit or label).strip()
            text += f" in {elapsed:.1f} s" if finished else f", about {(total - done) / rate:.0f} s left"
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on an error: a live bar must not be left drawing over the error line


def progress_bar(unit: str | None = "img", quiet: bool = False) -> ProgressBar:
    """The CLI's bar for a command (silent with ``--quiet``), used as ``with progress_bar("it", quiet) as bar:``."""
    return ProgressBar(unit=unit, enabled=False if quiet else None)


def rate_text(per_second: float, unit: str) -> str:
    """ "7.5 img/s", or for slow steps (epochs) "12.3 s/epoch": a rate below one per second would print as 0.0."""
    if per_second >= 1:
        return f"{per_second:7.1f} {unit}/s"
    return f"{1 / per_second:7.1f} s/{unit}"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _RateColumn(unit: str | None):
    """A rich column showing the task's speed in ``unit``/s (rich's own speed column assumes bytes)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            what = unit or task.description
            return Text(rate_text(speed, what) if speed else f"{'?':>7} {what}/s")

    return RateColumn()
