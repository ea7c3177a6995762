"""Sources and caches on object storage (``s3://``, ``gs://``, ... through fsspec), used through local staging.

A source URL is mirrored into a local folder: the objects are listed and only those whose size or ETag changed
since the last mirror are downloaded. An unchanged object keeps its local file (and its time and inode), so the
hash index needs no read and a second run downloads nothing.

A ``cache_dir`` URL has a local staging folder too. Extraction runs there as on a local disk (resume, locks and
the engines folder work unchanged). A finished cache folder is published object by object, ``meta.json`` last, so
a reader never sees a complete cache with data missing. A complete cache already in the bucket is fetched (the
same way, ``meta.json`` last) instead of computed. Object stores have no file locks: a lease object with an expiry
(``.<folder>.lease`` beside the folder, renewed while held) keeps a second run of the same key waiting. Its
check is a write then a read-back, so two runs starting within the same instant can both proceed; each then
computes the same features into its own staging folder and publishes whole objects, meta.json last, so the bucket
holds one of the two complete results, never a mixture that looks complete with rows missing.

Credentials and endpoints come from the storage library's usual settings (for S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` for other S3 servers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

from bottleneck._io import temp_path, write_json_atomic
from bottleneck.errors import BottleneckError, first_line, install_hint

STAGING_ENV = "BOTTLENECK_STAGING"  # where URLs are staged; default ~/.cache/bottleneck/staging
MIRROR_STATE = ".mirror.json"  # in a mirrored folder: relative path -> [size, etag] of each object
LEASE_TTL_S = 600.0  # a lease not renewed for this long is free (its holder died)
LEASE_POLL_S = 2.0
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}


class StorageError(BottleneckError):
    """A URL that cannot be read or written: no client library, no credentials, no bucket, no permission."""


def is_url(location) -> bool:
    """Whether ``location`` is a remote URL (``file://`` counts as a local path)."""
    m = _URL.match(str(location)) if isinstance(location, str) else None
    return bool(m) and m.group(1) != "file"


def local_path(location) -> Path:
    """A local path from a path or a ``file://`` URL."""
    text = str(location)
    return Path(text[len("file://") :]) if text.startswith("file://") else Path(text)


def staging_for(url: str) -> Path:
    """The local folder where ``url`` is staged: one per URL, under BOTTLENECK_STAGING."""
    root = os.environ.get(STAGING_ENV) or Path.home() / ".cache" / "bottleneck" / "staging"
    url = url.rstrip("/")
    scheme = _URL.match(url).group(1)
    return Path(root).expanduser() / f"{scheme}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def filesystem(url: str):
    """(fsspec filesystem, path inside it) of ``url``; StorageError when no installed library handles it."""
    scheme = _URL.match(url).group(1)
    try:
        import fsspec

        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        extra = _EXTRAS.get(scheme)
        hint = install_hint(extra) if extra == "s3" else f"install the fsspec package for {scheme}://"
        raise StorageError(f"{scheme}:// URLs need a client library ({first_line(exc)}); {hint}.") from None
    except ValueError as exc:
        raise StorageError(
            f"cannot open {url}: {first_line(exc)}; pass an s3://, gs://, ... or local path."
        ) from None


@contextlib.contextmanager
def storage_errors(url: str, doing: str):
    """The storage library's errors as one line naming the URL, the problem and the fix."""
    try:
        yield
    except BottleneckError:
        raise
    except Exception as exc:
        raise _storage_error(exc, url, doing) from None


def _storage_error(exc: Exception, url: str, doing: str) -> StorageError:
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        why = (
            "no credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_ENDPOINT_URL "
            "for a server other than AWS"
        )
    elif isinstance(exc, FileNotFoundError) or "NoSuchBucket" in str(exc):
        why = "it does not exist (check the bucket and prefix, and that these credentials can see them)"
    elif isinstance(exc, PermissionError) or "AccessDenied" in str(exc) or "Forbidden" in str(exc):
        why = "access denied; use credentials that may do this, or another location"
    elif name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError") or isinstance(
        exc, ConnectionError | TimeoutError
    ):
        why = f"the storage server cannot be reached ({first_line(exc)}); check AWS_ENDPOINT_URL and the network"
    else:
        why = f"{name}: {first_line(exc)}"
    return StorageError(f"cannot {doing} {url}: {why}.")


def mirror(url: str, local: Path, *, last: tuple[str, ...] = (), progress=None) -> Path:
    """Make ``local`` a copy of the objects under ``url`` (a prefix, or one object); download only objects that
    are new or whose size or ETag changed, remove local files whose object is gone, and give each file its
    object's modification time. ``last``: names downloaded after everything else (a cache's meta.json).
    Returns the local path of ``url`` (``local`` for a prefix, ``local/<name>`` for one object)."""
    fs, root = filesystem(url)
    with storage_errors(url, "read"):
        fs.invalidate_cache()  # listings are cached per filesystem object; this one must see the bucket as it is now
        if fs.isfile(root):
            listing = {root.rsplit("/", 1)[-1]: fs.info(root)}
            target = local / root.rsplit("/", 1)[-1]
        else:
            found = fs.find(root, detail=True)
            if not found and not fs.exists(root):
                raise FileNotFoundError(url)
            # Keys ending in "/" are folder markers (made by consoles and some tools): nothing to copy.
            listing = {
                name[len(root.rstrip("/")) + 1 :]: info
                for name, info in found.items()
                if not name.endswith("/") and info.get("type") != "directory"
            }
            target = local
        local.mkdir(parents=True, exist_ok=True)
        state_file = local / MIRROR_STATE
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = {}
        for rel in listing:  # every key checked before anything is written
            confined(local, rel, url)
        if not isinstance(state, dict):
            state = {}
        order = sorted(listing, key=lambda rel: (rel.rsplit("/", 1)[-1] in last, rel))
        todo = [rel for rel in order if _stamp(listing[rel]) != state.get(rel) or not (local / rel).is_file()]
        for i, rel in enumerate(todo):
            dest = local / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(dest)  # hidden, and collected by `cache gc` if a download dies
            fs.get_file(f"{root.rstrip('/')}/{rel}" if target == local else root, str(tmp))
            os.replace(tmp, dest)
            stamp = _mtime(listing[rel])
            if stamp is not None:
                os.utime(dest, (stamp, stamp))
            state[rel] = _stamp(listing[rel])
            if progress:
                progress("download", i + 1, len(todo))
        for rel in [r for r in state if r not in listing]:
            del state[rel]
            try:  # the state file is local and could be edited: only files inside the copy are removed
                gone = confined(local, rel, url)
            except StorageError:
                continue
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                gone.unlink()
        write_json_atomic(state_file, state)
    return target


def confined(local: Path, rel: str, url: str) -> Path:
    """``local / rel`` for an object key ``rel`` relative to a mirrored prefix; StorageError (naming the key) when
    the key would land outside ``local``: absolute (a leading "/", as "prefix//abs" gives), with "." or ".."
    segments, empty segments, backslashes or NUL. Object stores accept any key; a local folder must not."""
    parts = rel.split("/")
    bad = (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\0" in rel
        or any(p in ("", ".", "..") for p in parts)
        or Path(rel).is_absolute()
    )
    dest = local / rel
    if not bad:
        try:
            dest.resolve().relative_to(local.resolve())
        except ValueError:
            bad = True
    if bad:
        raise StorageError(
            f"refusing object key {rel!r} under {url}: it would be written outside the local copy "
            f"({local}); rename or delete that object (keys must be relative, without '..', '.' or '//')."
        )
    return dest


def _stamp(info: dict) -> list:
    return [
        int(info.get("size") or 0),
        str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or ""),
    ]


def _mtime(info: dict) -> float | None:
    value = info.get("LastModified") or info.get("mtime") or info.get("updated")
    if hasattr(value, "timestamp"):
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def stage(source, cache_dir, progress=None):
    """(local source, RemoteCaches or None, local cache_dir) for ``extract``: a source URL is mirrored (for a CSV,
    its folder, since its image paths are relative to it); a cache_dir URL gets its staging folder."""
    if is_url(source):
        url = str(source).rstrip("/")
        if url.lower().endswith(".csv"):
            folder, name = url.rsplit("/", 1)
            source = mirror(folder, staging_for(folder), progress=progress) / name
        else:
            source = mirror(url, staging_for(url), progress=progress)
    else:
        source = local_path(source)
    if is_url(cache_dir):
        remote = RemoteCaches(str(cache_dir))
        return source, remote, remote.local
    return source, None, local_path(cache_dir)


class RemoteCaches:
    """The caches under a ``cache_dir`` URL and their local staging folder (``local``)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(self.url)
        self.local = staging_for(self.url)

    def url_of(self, name: str) -> str:
        """The URL of cache folder ``name`` in the bucket."""
        confined(self.local, name, self.url)  # one plain folder name: never "..", never a path
        return f"{self.url}/{name}"

    def _remote(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def is_complete(self, name: str) -> bool:
        """Whether the bucket holds the complete cache folder ``name``."""
        with storage_errors(f"{self.url}/{name}", "read"):
            try:
                meta = json.loads(self.fs.cat_file(self._remote(name) + "/meta.json"))
            except FileNotFoundError:
                return False
        return isinstance(meta, dict) and bool(meta.get("complete"))

    def fetch(self, name: str, progress=None) -> bool:
        """Copy the complete cache ``name`` from the bucket into staging; False when the bucket has none."""
        self.url_of(name)
        if not self.is_complete(name):
            return False
        mirror(f"{self.url}/{name}", self.local / name, last=("meta.json",), progress=progress)
        return True

    def publish(self, name: str, progress=None) -> None:
        """Upload the complete local cache folder ``name``: every file, then meta.json."""
        folder = self.local / name
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MIRROR_STATE)
        files.sort(key=lambda p: p == folder / "meta.json")
        with storage_errors(f"{self.url}/{name}", "write"):
            for i, path in enumerate(files):
                self.fs.put_file(str(path), self._remote(name) + "/" + path.relative_to(folder).as_posix())
                if progress:
                    progress("upload", i + 1, len(files))

    @contextlib.contextmanager
    def lease(self, name: str, notify=None, ttl: float = LEASE_TTL_S):
        """Hold the lease of cache folder ``name`` in the bucket while the block runs (see the module doc)."""
        path = self._remote(f".{name}.lease")
        me = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{time.time_ns()}"
        told = False
        with storage_errors(f"{self.url}/.{name}.lease", "write"):
            while True:
                holder = self._holder(path)
                if holder is None or holder.get("expires", 0) < time.time():
                    self._write_lease(path, me, ttl)
                    time.sleep(0.2)  # then read back: a run that wrote at the same moment wins or loses here
                    holder = self._holder(path)
                    if holder and holder.get("owner") == me:
                        break
                if notify and not told:
                    notify(
                        f"another run ({holder.get('owner', '?').rsplit(':', 2)[0]}) is extracting {name}; waiting"
                    )
                    told = True
                time.sleep(LEASE_POLL_S)
        stop = threading.Event()

        def renew():
            while not stop.wait(ttl / 3):
                with contextlib.suppress(Exception):  # a missed renewal only shortens the lease
                    self._write_lease(path, me, ttl)

        thread = threading.Thread(target=renew, name="lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(Exception):
                holder = self._holder(path)
                if holder and holder.get("owner") == me:
                    self.fs.rm_file(path)

    def _holder(self, path: str) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"owner": "?", "expires": 0}  # unreadable: treat as expired

    def _write_lease(self, path: str, me: str, ttl: float) -> None:
        self.fs.pipe_file(path, json.dumps({"owner": me, "expires": time.time() + ttl}).encode())
