"""User-facing error types: each message names the bad value, what is allowed, and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# The name pip knows this project by: "bottleneck" on PyPI is the numerical Bottleneck. Messages that tell the
# user what to install name it through ``install_hint``.
DISTRIBUTION = "bottleneck-features"


def install_hint(extra: str) -> str:
    """The pip command that installs one of our extras: ``pip install 'bottleneck-features[dask]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


class BottleneckError(ValueError):
    """Bad user input or an unusable cache. The CLI prints the message as one line and exits non-zero."""


class SourceError(BottleneckError):
    """The image source is missing, empty or malformed."""


class BadImageError(SourceError):
    """One or more images cannot be decoded (with ``on_bad_image="fail"``)."""

    def __init__(self, message: str, paths: Iterable[str] = ()):
        super().__init__(message)
        self.paths = list(paths)


class BackboneError(BottleneckError):
    """Unknown backbone, layer or weights that do not fit."""


class CacheError(BottleneckError):
    """A cache that is missing, incomplete, locked or does not match."""


class CacheDamaged(CacheError):
    """Bytes of a cache that do not match what was written: ``split`` and rows [``start``, ``stop``) when known."""

    def __init__(
        self, message: str, split: str | None = None, start: int | None = None, stop: int | None = None
    ):
        super().__init__(message)
        self.split, self.start, self.stop = split, start, stop


class ExtractionInterrupted(KeyboardInterrupt):
    """Ctrl-C during extraction, after the last complete chunk was committed; the message says how to resume."""


class HeadError(BottleneckError):
    """A head cannot be fitted or applied to the given features."""


class TuneError(BottleneckError):
    """A run cannot be rebuilt as one model, or fine-tuned (missing source, changed files, a bad setting)."""


class ExportError(BottleneckError):
    """A model cannot be exported or read back in the asked format."""


class InspectError(BottleneckError):
    """A cache cannot be inspected, or its page made (a moved or changed source, a bad setting)."""


def first_line(exc: BaseException, *, with_type: bool = False, limit: int = 300) -> str:
    """The first line of an exception's message, to embed in a one-line error: at most ``limit`` characters,
    without a final period; its type's name when it has no message, or before it with ``with_type``."""
    lines = str(exc).strip().splitlines()
    text = lines[0][:limit].rstrip(".") if lines else ""
    name = type(exc).__name__
    if not text:
        return name
    return f"{name}: {text}" if with_type else text


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' Did you mean a, b?' for the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean {', '.join(close)}?" if close else ""


def one_of(name: str, value: object, choices: Iterable[str]) -> BottleneckError:
    """The standard error for a parameter outside a fixed set of names (``name`` as Python spells it)."""
    choices = list(choices)
    return BottleneckError(
        f"unknown {name}={value!r}; choose one of: {', '.join(choices)}.{suggest(str(value), choices)}"
    )
