"""One writer per cache key: an exclusive file lock beside the cache folder."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

from bottleneck.callbacks import Notify


@contextmanager
def cache_lock(path: Path, notify: Notify | None):
    """An exclusive lock per cache key: a second run of the same key waits instead of writing beside the first.

    The lock file sits beside the cache folder (not inside) so removing the folder never removes a held lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if notify:
                notify(f"another process is extracting {path.name}; waiting for it to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_locked(path: Path) -> bool:
    """Whether an extraction (in any process) holds the lock of the cache folder ``path`` right now."""
    try:
        fh = open(path.parent / f".{path.name}.lock")
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
