"""The one pass that reads every image file (in bounded blocks, never blocking on a special file): content hash,
bytes kept for decoding, header checks; reading one regular file; decoding one image file."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bottleneck.data.decode import (
    ImageDecodeError,
    decode_image,
    inspect_image,
    pixel_limit,
    pixel_limit_problem,
)
from bottleneck.data.hash_index import HashIndex, stamp
from bottleneck.data.manifest import content_hash
from bottleneck.errors import BadImageError

_HASH_THREADS = 8  # file reads are I/O; more threads than cores hides latency on network / cold disks
_HASH_BLOCK = 256  # files per hashing task
_READ_BLOCK = 1 << 20  # files are hashed a block at a time: memory stays bounded whatever their size
_UNREADABLE = "unreadable:"  # hashed with the reason into the content hash of a file that cannot be read


class FileReads:
    """The one pass that reads every image file: it hashes the bytes and keeps up to ``keep_bytes`` of them in
    memory, so that a decoding pass right after (an extraction that missed the cache) reads nothing again.

    ``take(path)`` hands kept bytes over once (and frees them); None when they were not kept.
    ``problems(paths)`` checks the headers of kept files, without decoding (a cache hit never pays for it), and
    uses what the hash index remembers of the headers of files it did not read.
    """

    def __init__(self, max_pixels: int | None = None, keep_bytes: int = 0, index: HashIndex | None = None):
        self.max_pixels = max_pixels
        self.index = index  # known hashes of unchanged files: those are not read at all
        self._budget = int(keep_bytes)
        self._kept: dict[str, bytes] = {}
        self._lock = threading.Lock()
        # Header checks, aligned with the paths of the last hash_all: [checked, width, height] and the problem.
        self._paths: list[str] = []
        self._heads = np.zeros((0, 3), np.int64)
        self._problems: list[str] = []
        self._pos: dict[str, int] | None = None

    def _reserve(self, size: int) -> bool:
        """Whether ``size`` bytes of a file fit what is left of the budget for kept bytes (then taken from it)."""
        with self._lock:
            if 0 < size <= self._budget:
                self._budget -= size
                return True
        return False

    def _one(self, i: int, path: str) -> str:
        """The content hash of one file, read in bounded blocks; its bytes kept when the budget allows, else its
        header checked on the first block. A file that cannot be read (no permission, a broken or looping
        symbolic link, a FIFO, a device) gets a hash of its reason and is recorded as unreadable, never opened
        in a way that could block."""
        try:
            fd, st = _open_regular(path)
        except OSError as exc:
            return self._unreadable(i, _os_reason(exc))
        except ImageDecodeError as exc:
            return self._unreadable(i, exc.reason)
        with os.fdopen(fd, "rb", buffering=0) as fh:
            keep = self._reserve(st.st_size)
            h = hashlib.blake2b(digest_size=16)
            parts, first = [], b""
            try:
                while block := fh.read(_READ_BLOCK):
                    h.update(block)
                    if keep:
                        parts.append(block)
                    elif not first:
                        first = block
            except OSError as exc:
                return self._unreadable(i, _os_reason(exc))
        if keep:
            data = b"".join(parts)
            with self._lock:
                self._kept[path] = data
                self._budget += st.st_size - len(data)  # a file that shrank while read gives the rest back
        elif first:
            self._check_head(i, first, complete=len(first) < _READ_BLOCK)
        else:
            self._heads[i], self._problems[i] = (1, 0, 0), "empty file"
        return h.hexdigest()

    def _check_head(self, i: int, prefix: bytes, complete: bool) -> None:
        """Header check of a file whose bytes are not kept, on the first block read: what its header shows is
        known before any decode (a large file that is no image is never read whole again)."""
        try:
            self._heads[i] = (1, *inspect_image(prefix, 0))
            self._problems[i] = ""
        except ImageDecodeError as exc:
            if complete or not exc.reason.startswith("truncated"):  # a cut-off prefix proves nothing
                self._heads[i], self._problems[i] = (1, 0, 0), exc.reason

    def _unreadable(self, i: int, reason: str) -> str:
        self._heads[i], self._problems[i] = (1, 0, 0), reason
        return content_hash(f"{_UNREADABLE}{reason}".encode())

    def hash_all(self, paths: list[str], progress=None) -> list[str]:
        """Content hashes of ``paths`` in order, read in a thread pool (file reads and hashlib release the GIL)."""
        out: list[str | None] = [None] * len(paths)
        todo = range(len(paths))
        self._paths, self._pos = paths, None
        self._heads, self._problems = np.zeros((len(paths), 3), np.int64), [""] * len(paths)
        if self.index is not None:
            # Stamps taken before any read (a change after it shows next time), matched all at once.
            stamps = np.array([_stamp_of(p) for p in paths], dtype=np.uint64).reshape(-1, 4)
            out, self._heads, self._problems = self.index.match(paths, stamps)
            todo = [i for i, h in enumerate(out) if h is None]
        # The rest read in blocks per task: one future per file cost more than a small file's read.
        blocks = [todo[i : i + _HASH_BLOCK] for i in range(0, len(todo), _HASH_BLOCK)]
        done = len(paths) - len(todo)
        with ThreadPoolExecutor(max_workers=_HASH_THREADS, thread_name_prefix="hash") as pool:
            for block, hashes in zip(
                blocks, pool.map(lambda b: [self._one(i, paths[i]) for i in b], blocks), strict=True
            ):
                for i, h in zip(block, hashes, strict=True):
                    out[i] = h
                done += len(block)
                if progress:
                    progress("hash", done, len(paths))
        if progress and not blocks:
            progress("hash", len(paths), len(paths))
        if self.index is not None:
            self.index.remember(paths, stamps, out, bool(todo), self._heads, self._problems)
        return out

    def take(self, path: str) -> bytes | None:
        return self._kept.pop(path, None)

    def peek(self, path: str) -> bytes | None:
        return self._kept.get(path)

    def problems(self, paths) -> dict[str, str]:
        """path -> reason for the files whose header already shows them unreadable (decode_image's reason:
        empty, not an image, corrupt header, over the pixel limit): checked on the kept bytes, or remembered by
        the hash index from an earlier run. Other files (beyond the byte budget, never checked) are checked when
        decoded. What is learnt goes into the hash index."""
        if self._pos is None:
            self._pos = {p: i for i, p in enumerate(self._paths)}
        limit = pixel_limit(self.max_pixels)
        out, learnt = {}, False
        for path in paths:
            i = self._pos.get(path)
            data = self._kept.get(path)
            if i is None or (data is None and not self._heads[i, 0]):
                continue  # not checkable without reading it again: the decoding pass will tell
            if data is not None and not self._heads[i, 0]:
                try:  # the structure only; the pixel limit is applied below, so a remembered check serves any limit
                    self._heads[i] = (1, *inspect_image(data, 0))
                    self._problems[i] = ""
                except ImageDecodeError as exc:
                    self._heads[i], self._problems[i] = (1, 0, 0), exc.reason
                learnt = True
            reason = self._problems[i] or pixel_limit_problem(
                int(self._heads[i, 1]), int(self._heads[i, 2]), limit
            )
            if reason:
                out[path] = reason
        if learnt and self.index is not None:
            self.index.learn_headers(self._heads, self._problems)
        return out

    def retain(self, paths: set[str]) -> None:
        """Keep bytes only of ``paths`` (the files a pilot sample kept)."""
        for p in [p for p in self._kept if p not in paths]:
            del self._kept[p]

    def release(self) -> None:
        """Drop the kept bytes (a cache hit, or the end of the run)."""
        self._kept.clear()
        self._budget = 0


def _open_regular(path) -> tuple[int, os.stat_result]:
    """(fd, stat) of ``path`` opened for reading without ever blocking (a FIFO named like an image would wait for a
    writer); OSError as os.open raises it, ImageDecodeError for a file that is not a regular one."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ImageDecodeError(f"not a regular file ({_file_kind(st.st_mode)})")
    return fd, st


def read_regular_file(path) -> bytes:
    """The bytes of a regular file (ImageDecodeError for a FIFO, device, socket or folder; OSError as open and
    read raise it): how image files are read after hashing (decoding, predicting)."""
    fd, _ = _open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _stamp_of(path: str) -> tuple[int, int, int, int]:
    try:
        return stamp(os.stat(path))
    except OSError:  # a broken or looping link: never matches, so it is read (and reported) every run
        return (0, 0, 0, 0)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "unreadable file: broken symbolic link or removed"
    if exc.errno == errno.ELOOP:
        return "unreadable file: symbolic link loop"
    return f"unreadable file: {exc.strerror or exc}"


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "a special file"


def load_image(path, draft: int | None = None) -> np.ndarray:
    """Decode one image file to RGB uint8 (H, W, 3), as sources do (``draft``: see decode_image); raises
    BadImageError naming file and reason."""
    p = Path(path)
    try:
        data = read_regular_file(p)
    except ImageDecodeError as exc:  # a FIFO, device or socket: never read (it could block forever)
        raise BadImageError(f"cannot read image {p}: {exc.reason}; pass an image file.", [str(p)]) from None
    except FileNotFoundError:
        raise BadImageError(f"image {p} does not exist; check the path.", [str(p)]) from None
    except IsADirectoryError:
        raise BadImageError(f"{p} is a folder, not an image file; pass one image file.", [str(p)]) from None
    except OSError as exc:
        raise BadImageError(f"cannot read image {p}: {exc.strerror or exc}.", [str(p)]) from None
    try:
        return decode_image(data, draft=draft)
    except ImageDecodeError as exc:
        raise BadImageError(
            f"cannot decode image {p} ({exc.reason}); pass a JPEG, PNG, BMP, GIF, WebP or TIFF file.",
            [str(p)],
        ) from None
