"""Atomic writes (temp file, fsync, os.replace) and content hashing: the one copy every writer uses."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def temp_path(path: Path, suffix: str = "") -> Path:
    """A hidden sibling of ``path`` unique to this process (``cache gc`` collects old ones: ``.*.tmp``).

    ``suffix`` is appended for writers that insist on an extension (Keras saves only to ``*.keras``).
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def fsync_path(path) -> None:
    """fsync a file (or, on POSIX, a folder: what makes a new name in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomic(tmp: Path, path: Path) -> None:
    """fsync ``tmp`` and move it over ``path``: a crash leaves the old file or the new one, never half of one."""
    fsync_path(tmp)
    os.replace(tmp, path)


def write_bytes_atomic(path, data: bytes) -> Path:
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        replace_atomic(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def json_default(o):
    """JSON for what NumPy and pathlib hand us: scalars and arrays as numbers and lists, the rest as str."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json_atomic(path, obj, *, indent: int | None = 1) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=json_default))


def read_json(path, error: type[Exception], missing: str, redo: str):
    """The JSON value in ``path``: ``error(missing)`` when there is no such file, and one line naming the file
    and ``redo`` (what to do about it) when it does not parse."""
    path = Path(path)
    if not path.is_file():
        raise error(missing)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{path} is corrupt ({exc}); {redo}") from None


def file_hash(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of every file under a directory (relative names included)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


# -- seals and read-back checks (sealed records of heads, run folders and exports) --------------------------------
def seal_of(body: dict) -> str:
    """blake2b-128 of everything in ``body`` but its ``seal`` (canonical JSON): what makes an edit to a record
    seen. The one seal of every record bottleneck writes: cache metadata, heads, runs, exports, ownership."""
    rest = {k: v for k, v in body.items() if k != "seal"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def json_plain(obj):
    """``obj`` as JSON reads it back (tuples as lists, NumPy values as numbers, keys as strings): the form a
    record is sealed in, so that the seal computed before writing still matches the record once it is read."""
    return json.loads(json.dumps(obj, default=json_default))


def file_problem(path, want, record: str) -> str | None:
    """Why ``path`` (a file, or a folder: see ``file_hash``) is not the one whose ``file_hash`` the file ``record``
    holds as ``want`` ("is missing ...", "cannot be read ...", "was changed or damaged ..."), or None when it is."""
    path = Path(path)
    if not path.exists():
        return f"is missing ({record} lists it)"
    try:
        got = file_hash(path)
    except OSError as exc:
        return f"cannot be read ({type(exc).__name__}: {exc})"
    return (
        None if got == want else f"was changed or damaged (its sha256 differs from the one {record} records)"
    )
