"""Shared CLI plumbing: user errors become one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import json
import sys
import time

import typer

from bottleneck.errors import BottleneckError

EXIT_USER_ERROR = 2


def user_errors(fn):
    """Turn BottleneckError (and Ctrl-C) into one clear line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BottleneckError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt as exc:
            typer.echo(f"interrupted: {exc}" if str(exc) else "interrupted.", err=True)
            raise typer.Exit(130) from None

    return wrapper


def print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


class ProgressBar:
    """A one-line progress bar on stderr with rate and ETA, fed by the library's progress callback."""

    def __init__(self, unit: str = "img", enabled: bool | None = None):
        self.unit = unit
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._label = None  # label of the bar being drawn
        self._finished = None  # label of the last bar that reached its total
        self._start = 0.0
        self._start_done = 0
        self._last_draw = 0.0

    def __call__(self, label: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if label == self._finished and done >= total:
            return  # a repeated final update must not draw a second, finished bar
        if label != self._label:
            self._finish()
            # Rate counts from the first update, so resumed work is not counted as done in no time.
            self._label, self._start, self._start_done = label, now, done
        if not self.enabled:
            if done >= total:
                self._finished, self._label = label, None
            return
        if done < total and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        elapsed = now - self._start
        rate = (done - self._start_done) / elapsed if elapsed > 0.5 else 0.0
        rate_s = f"{rate:7.1f} {self.unit}/s" if rate > 0 else f"{'?':>7} {self.unit}/s"
        eta_s = f"{(total - done) / rate:5.0f}s" if rate > 0 else "    ?"
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{label:>6} [{bar}] {done}/{total} {rate_s} ETA {eta_s}")
        sys.stderr.flush()
        if done >= total:
            self._finish()
            self._finished = label

    def _finish(self):
        if self.enabled and self._label is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self._label = None

    def close(self):
        self._finish()
