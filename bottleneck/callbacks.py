"""The callback types through which the library reports progress; it never prints (the CLI draws them)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]  # (stage or split name, done, total)
Notify = Callable[[str], None]  # one-line status messages
