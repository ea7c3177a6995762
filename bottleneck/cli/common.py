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
        except KeyboardInterrupt:
            typer.echo("interrupted.", err=True)
            raise typer.Exit(130) from None

    return wrapper


def print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


class ProgressBar:
    """A one-line progress bar on stderr with rate and ETA, fed by the library's progress callback."""

    def __init__(self, unit: str = "img", enabled: bool | None = None):
        self.unit = unit
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._start = None
        self._label = None
        self._last_draw = 0.0

    def __call__(self, label: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if label != self._label:
            if self._label is not None:
                self._finish()
            self._label, self._start = label, now
        if not self.enabled:
            return
        if done < total and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        elapsed = max(now - self._start, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        eta_s = f"{eta:5.0f}s" if eta != float("inf") else "    ?"
        sys.stderr.write(f"\r{label:>6} [{bar}] {done}/{total} {rate:6.1f} {self.unit}/s ETA {eta_s}")
        sys.stderr.flush()
        if done >= total:
            self._finish()

    def _finish(self):
        if self.enabled and self._label is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self._label = None

    def close(self):
        self._finish()
