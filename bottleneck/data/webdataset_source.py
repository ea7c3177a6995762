"""WebDataset sources: .tar shards (img2dataset's layout) streamed member by member, with a member index per shard.

A source is a folder of ``.tar`` shards, one shard, or a brace pattern (``train-{000000..000099}.tar``). A sample
is the members sharing a key (the member name up to the first dot of its base name): an image (``.jpg``,
``.jpeg``, ``.png``, ``.webp``) and a label from ``.cls``, else a ``.json`` field (``label_key``, default
``label``), else ``.txt`` (img2dataset's caption: never taken when another ``label_key`` is named). The split
comes from the shard name (``train``/``val``/``validation``/``test`` prefix, else train) or ``split``. Ids are
``<shard name without .tar>/<key>``; the manifest's ``path`` is the shard and its ``row`` the offset of the
image member's header, so one image reads back without scanning. What a scan found is kept per shard beside
the hash index (never beside the shards) while the shard's size and times are unchanged: a hit reads no image.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bottleneck._io import write_bytes_atomic
from bottleneck.data.decode import decode_image, decode_resized, draft_size, inspect_image
from bottleneck.data.hash_index import RACY_NS, HashIndex, stamp
from bottleneck.data.manifest import SPLIT_ALIASES, SPLIT_ORDER, Item, Manifest, build_manifest, content_hash
from bottleneck.errors import SourceError

KIND = "webdataset"
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
LABEL_SUFFIXES = ("cls", "json", "txt")
DEFAULT_LABEL_KEY = "label"
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_SPLIT_PREFIX = re.compile(r"^(train|valid|validation|val|test)(?![a-z])", re.IGNORECASE)
_THREADS = 4  # shards scanned at once: reads and hashing release the GIL, tar parsing does not
_FORMAT = 1  # of the member index files


def is_pattern(text: str) -> bool:
    """Whether ``text`` names shards by a brace pattern such as ``train-{000000..000099}.tar``."""
    return bool(_BRACE.search(Path(text).name)) and text.lower().endswith(".tar")


def holds_shards(path: Path) -> bool:
    """Whether ``path`` is one .tar shard, or a folder holding .tar shards and no subfolder (a class folder)."""
    if path.is_file():
        return path.suffix.lower() == ".tar"
    return any(p.suffix.lower() == ".tar" for p in path.glob("*.tar")) and not any(
        p.is_dir() and not p.name.startswith(".") for p in path.iterdir()
    )


def shard_paths(spec) -> list[Path]:
    """The shards of a folder, a .tar file or a brace pattern, in name order; SourceError when one is missing."""
    text = str(spec)
    if is_pattern(text):
        m = _BRACE.search(Path(text).name)
        lo, hi, width = int(m.group(1)), int(m.group(2)), len(m.group(1))
        if hi < lo:
            raise SourceError(f"brace pattern {text} counts down ({m.group(0)}); write {{low..high}}.")
        folder, name = Path(text).parent, Path(text).name
        paths = [
            folder / (name[: m.start()] + str(i).zfill(width) + name[m.end() :]) for i in range(lo, hi + 1)
        ]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise SourceError(
                f"{len(missing)} shard(s) of {text} do not exist ({', '.join(missing[:5])}); fix the pattern's "
                "range or pass the shards' folder."
            )
        return paths
    path = Path(text)
    paths = [path] if path.is_file() else sorted(p for p in path.glob("*.tar") if p.is_file())
    if not paths:
        raise SourceError(f"{path} holds no .tar shards; pass a folder of .tar shards or a brace pattern.")
    return paths


def shard_split(shard: Path, split: str | None) -> str:
    """The split of a shard: ``split`` when given, else its name's prefix (train, val, validation, test), else
    train."""
    if split is not None:
        named = SPLIT_ALIASES.get(str(split).lower())
        if named is None:
            raise SourceError(f"split {split!r} is not allowed; use train, val (or validation) or test.")
        return named
    m = _SPLIT_PREFIX.match(shard.name)
    return SPLIT_ALIASES[m.group(1).lower()] if m else "train"


@dataclass
class ShardScan:
    """What one shard holds, one entry per sample in member order."""

    keys: list  # sample keys
    offsets: list  # byte offset of each image member's header in the shard
    hashes: list  # content hash of each image's bytes
    labels: list  # each sample's label as text


class _Budget:
    """Bytes of images kept in memory for the decoding pass right after the scan (shared by scanning threads)."""

    def __init__(self, size: int):
        self.left, self.kept, self._lock = int(size), {}, threading.Lock()

    def keep(self, ident: str, data: bytes) -> None:
        with self._lock:
            if 0 < len(data) <= self.left:
                self.left -= len(data)
                self.kept[ident] = data


def _split_name(name: str) -> tuple[str, str] | None:
    """(key, lower-case suffix) of a member name, or None for a name with no key or no suffix."""
    folder, _, base = name.rpartition("/")
    dot = base.find(".")
    if dot <= 0:
        return None
    return (f"{folder}/{base[:dot]}" if folder else base[:dot]), base[dot + 1 :].lower()


def _label_of(shard: Path, key: str, ext: str, data: bytes, label_key: str) -> str | None:
    """The label text a .cls, .txt or .json member gives (None: a .json without ``label_key``)."""
    try:
        text = data.decode("utf-8").strip()
        value = json.loads(text).get(label_key) if ext == "json" else text
    except (UnicodeDecodeError, ValueError, AttributeError):
        raise SourceError(
            f"{shard.name}: sample {key!r} has an unreadable .{ext} label (not UTF-8 text or JSON object); fix "
            "or remove that member."
        ) from None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise SourceError(
            f"{shard.name}: sample {key!r} has label {value!r} in its .{ext}; labels are class indices or names."
        )
    return str(value).strip()


_BLOCK = 512  # tar's block: headers are one block, data is padded to whole blocks
_ZERO = bytes(_BLOCK)
_FILE_TYPES = (b"0", b"\0", b"7")  # regular file types; the others (folders, links) have no image


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256, for sizes past 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax(data: bytes) -> dict[bytes, bytes]:
    """The records of a pax extended header: ``b"<len> <key>=<value>\\n"`` each."""
    out, pos = {}, 0
    while pos < len(data) and data[pos : pos + 1].isdigit():
        length = int(data[pos : data.index(b" ", pos)])
        key, _, value = data[data.index(b" ", pos) + 1 : pos + length - 1].partition(b"=")
        out[key], pos = value, pos + length
    return out


def next_member(fh) -> tuple[int, str, int, bool] | None:
    """(offset of its first header, name, size, is a regular file) of the next tar member, ``fh`` left at its data;
    None at the end. A small ustar / GNU / pax header reader: ``tarfile``'s per-member objects cost more than
    hashing a small image. tarfile.ReadError for a truncated or damaged archive."""
    start, name, size = fh.tell(), None, None
    while True:
        head = fh.read(_BLOCK)
        if not head or head == _ZERO:
            return None
        if len(head) < _BLOCK:
            raise tarfile.ReadError("unexpected end of data")
        if sum(head[:148]) + 256 + sum(head[156:]) != _octal(head[148:156]):
            raise tarfile.ReadError("bad header checksum")
        kind, length = head[156:157], _octal(head[124:136])
        if kind in (b"L", b"x", b"g"):  # a GNU long name, a pax header: they describe the next member
            data = fh.read(length)
            fh.seek(-length % _BLOCK, 1)
            if len(data) < length:
                raise tarfile.ReadError("unexpected end of data")
            if kind == b"L":
                name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif kind == b"x":
                pax = _pax(data)
                name = pax[b"path"].decode("utf-8", "replace") if b"path" in pax else name
                size = int(pax[b"size"]) if b"size" in pax else size
            else:
                start = fh.tell()
            continue
        if name is None:
            name = head[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            prefix = head[345:500].split(b"\0", 1)[0] if head[257:263] == b"ustar\x00" else b""
            name = f"{prefix.decode('utf-8', 'replace')}/{name}" if prefix else name
        return start, name, length if size is None else size, kind in _FILE_TYPES


def _read_data(fh, size: int) -> bytes:
    data = fh.read(size)
    if len(data) < size:
        raise tarfile.ReadError("unexpected end of data")
    fh.seek(-size % _BLOCK, 1)
    return data


def scan_shard(shard: Path, label_key: str, budget: _Budget | None = None) -> ShardScan:
    """Stream one shard once: hash each sample's image, read its label; bytes kept in ``budget`` when it allows."""
    images: dict[str, tuple[int, str]] = {}
    labels: dict[str, dict[str, str | None]] = {}
    order: dict[str, None] = {}
    last, wanted = "(none)", IMAGE_SUFFIXES + LABEL_SUFFIXES
    try:
        with open(shard, "rb", buffering=1 << 20) as fh:
            while (member := next_member(fh)) is not None:
                offset, name, size, regular = member
                named = _split_name(name) if regular else None
                if named is None or named[1] not in wanted:
                    fh.seek(size + (-size % _BLOCK), 1)
                    continue
                key, ext = named
                last = key
                order.setdefault(key)
                data = _read_data(fh, size)
                if ext in IMAGE_SUFFIXES:
                    if key not in images:
                        images[key] = (offset, content_hash(data))
                        if budget is not None:
                            budget.keep(f"{shard.stem}/{key}", data)
                else:
                    labels.setdefault(key, {})[ext] = _label_of(shard, key, ext, data, label_key)
    except (tarfile.TarError, ValueError, KeyError) as exc:
        raise SourceError(
            f"{shard}: truncated or damaged tar at sample {last!r} ({exc}); re-write or re-download the shard."
        ) from None
    except OSError as exc:
        raise SourceError(f"cannot read shard {shard} ({exc.strerror or exc}); check the file.") from None
    return _samples(shard, list(order), images, labels, label_key)


def _samples(shard: Path, keys: list, images: dict, labels: dict, label_key: str) -> ShardScan:
    out = ShardScan([], [], [], [])
    for key in keys:
        if key not in images:
            raise SourceError(
                f"{shard.name}: sample {key!r} has no image ({', '.join('.' + s for s in IMAGE_SUFFIXES)}); add "
                "one or remove its other members."
            )
        found = labels.get(key, {})
        # A named JSON field is required; otherwise .txt (img2dataset's caption) is the last resort.
        order = ("cls", "json") if label_key != DEFAULT_LABEL_KEY else LABEL_SUFFIXES
        label = next((found[e] for e in order if found.get(e) is not None), None)
        if label is None:
            raise SourceError(
                f"{shard.name}: sample {key!r} has no label (.cls, .txt or a {label_key!r} field in .json); add "
                "one, or name the JSON field with --label-key."
            )
        out.keys.append(key)
        out.offsets.append(images[key][0])
        out.hashes.append(images[key][1])
        out.labels.append(label)
    if not out.keys:
        raise SourceError(
            f"{shard} holds no samples (key.jpg + key.cls ...); remove it or pass the right shards."
        )
    return out


class ShardIndex:
    """Member indexes of one source's shards, in a folder beside its hash index (None: not kept)."""

    def __init__(self, folder: Path | None, label_key: str, rehash: bool = False):
        self.folder, self.label_key, self.rehash = folder, label_key, rehash

    def _file(self, shard: Path) -> Path:
        digest = hashlib.blake2b(str(shard.resolve()).encode(), digest_size=8).hexdigest()
        return self.folder / f"{shard.name}-{digest}.npz"

    def load(self, shard: Path, st) -> ShardScan | None:
        """The scan of ``shard`` kept earlier when its stamp is unchanged (and was not racy), else None."""
        if self.folder is None or self.rehash:
            return None
        try:
            with np.load(self._file(shard), allow_pickle=False) as z:
                fresh = st.st_mtime_ns < int(z["written"]) - RACY_NS
                if int(z["format"]) != _FORMAT or str(z["label_key"]) != self.label_key or not fresh:
                    return None
                if z["stamp"].tolist() != list(stamp(st)):
                    return None
                keys, hashes, labels = (
                    [t.decode() for t in z[k].tolist()] for k in ("keys", "hashes", "labels")
                )
                return ShardScan(keys, z["offsets"].tolist(), hashes, labels)
        except (OSError, ValueError, KeyError):  # none yet, or damaged: only a slower run
            return None

    def save(self, shard: Path, st, scan: ShardScan) -> None:
        if self.folder is None:
            return
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.int64(_FORMAT),
            written=np.int64(time.time_ns()),
            label_key=np.str_(self.label_key),
            stamp=np.array(stamp(st), np.uint64),
            keys=np.array([k.encode() for k in scan.keys], dtype="S"),
            offsets=np.array(scan.offsets, np.int64),
            hashes=np.array([h.encode() for h in scan.hashes], dtype="S"),
            labels=np.array([t.encode() for t in scan.labels], dtype="S"),
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self._file(shard), buf.getvalue())


def index_folder(hash_index: HashIndex | None) -> Path | None:
    """Where a source's member indexes live: beside its hash index file (in the cache folder's index)."""
    if hash_index is None or hash_index.path is None:
        return None
    return hash_index.path.with_name(hash_index.path.stem + ".shards")


def class_names_of(labels: list[str]) -> list[str]:
    """Sorted distinct labels: numerically when every label is an integer, else as text."""
    distinct = set(labels)
    if all(re.fullmatch(r"-?\d+", t) for t in distinct):
        return [str(v) for v in sorted({int(t) for t in distinct})]
    return sorted(distinct)


def webdataset_manifest(spec, shards: list[Path], scans: list[ShardScan], split: str | None) -> Manifest:
    """The manifest of scanned shards: id ``<shard>/<key>``, path the shard, row the image member's offset."""
    numeric = all(re.fullmatch(r"-?\d+", t) for s in scans for t in s.labels)
    norm = (lambda t: str(int(t))) if numeric else (lambda t: t)
    names = class_names_of([norm(t) for s in scans for t in s.labels])
    code = {c: i for i, c in enumerate(names)}
    cols: dict[str, list] = {"split": [], "label": [], "id": [], "hash": [], "path": [], "row": []}
    for shard, scan in zip(shards, scans, strict=True):
        n = len(scan.keys)
        cols["split"].append(np.full(n, SPLIT_ORDER.index(shard_split(shard, split)), np.uint8))
        cols["label"].append(np.array([code[norm(t)] for t in scan.labels], np.int32))
        cols["id"].extend(f"{shard.stem}/{k}" for k in scan.keys)
        cols["hash"].extend(scan.hashes)
        cols["path"].extend([str(shard)] * n)
        cols["row"].append(np.array(scan.offsets, np.int64))
    joined = {k: np.concatenate(v) if k in ("split", "label", "row") else v for k, v in cols.items()}
    return build_manifest(names, str(spec), KIND, **joined)


def read_member(shard: str, offset: int) -> bytes:
    """The bytes of the member whose header starts at ``offset`` of ``shard``: its header and data read, no scan."""
    with open(shard, "rb") as fh:
        fh.seek(offset)
        member = next_member(fh)
        if member is None or not member[3]:
            raise tarfile.ReadError(f"no file member at offset {offset}")
        return _read_data(fh, member[2])


class WebDatasetSource:
    """Reads the images of WebDataset shards by their member offsets, content hash checked (Source's contract)."""

    def __init__(self, manifest: Manifest, max_pixels: int | None = None, kept: dict | None = None):
        self.manifest, self.max_pixels = manifest, max_pixels
        self._kept = kept if kept is not None else {}

    def _bytes(self, item: Item) -> bytes:
        data = self._kept.pop(item.id, None)  # the very bytes that were hashed
        if data is not None:
            return data
        try:
            data = read_member(item.path, item.row)
        except FileNotFoundError:
            raise SourceError(
                f"shard {item.path} was removed after the source was opened; run again."
            ) from None
        except (OSError, ValueError, tarfile.TarError) as exc:
            raise SourceError(
                f"cannot read {item.id} from shard {item.path} ({exc}); check the shard."
            ) from None
        if content_hash(data) != item.hash:
            raise SourceError(
                f"shard {item.path} changed after the source was opened ({item.id}'s content hash differs); run again."
            )
        return data

    def read(self, item: Item, draft: int | None = None) -> np.ndarray:
        return decode_image(self._bytes(item), self.max_pixels, draft)

    def load(self, item: Item, size: int, resize: str = "squash", fast: bool = False) -> np.ndarray:
        return decode_resized(self._bytes(item), size, resize, self.max_pixels, draft_size(size, fast))

    def header_problems(self, items=None) -> list:
        return []

    def min_side(self, item: Item) -> int | None:
        data = self._kept.get(item.id)
        return min(inspect_image(self._bytes(item) if data is None else data, self.max_pixels))

    def close(self) -> None:
        self._kept.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_webdataset(
    spec,
    *,
    split: str | None = None,
    label_key: str | None = None,
    progress=None,
    max_image_pixels: int | None = None,
    keep_bytes: int = 0,
    hash_index: HashIndex | None = None,
) -> WebDatasetSource:
    """Scan the shards of ``spec`` (those unchanged since a run that kept their member index are not read) and
    open them as a source; ``keep_bytes`` of image bytes are kept for the decoding pass right after."""
    shards = shard_paths(spec)
    for shard in shards:
        shard_split(shard, split)  # a bad --split fails before any read
    index = ShardIndex(
        index_folder(hash_index), label_key or DEFAULT_LABEL_KEY, getattr(hash_index, "rehash", False)
    )
    budget = _Budget(keep_bytes)
    done, lock = [0], threading.Lock()

    def one(shard: Path) -> ShardScan:
        st = shard.stat()
        scan = index.load(shard, st)
        if scan is None:
            scan = scan_shard(shard, index.label_key, budget)
            index.save(shard, st, scan)
        with lock:
            done[0] += 1
            if progress:
                progress("hash", done[0], len(shards))
        return scan

    with ThreadPoolExecutor(max_workers=min(_THREADS, len(shards)), thread_name_prefix="shard") as pool:
        scans = list(pool.map(one, shards))
    return WebDatasetSource(webdataset_manifest(spec, shards, scans, split), max_image_pixels, budget.kept)
