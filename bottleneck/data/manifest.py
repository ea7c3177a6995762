"""The manifest: every image of a source in one deterministic order, with split, label, id and content hash.

Held as columns (NumPy arrays), not one Python object per image: a million-row manifest is tens of megabytes, and
the fingerprint, the val split and the pilot sample work on the columns. ``Item`` is one row, made on demand.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bottleneck.errors import SourceError

SPLIT_ORDER = ("train", "val", "test")
# Folder / key spellings users write for the validation split; everything is stored as "val".
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
STR = np.dtypes.StringDType()  # variable-width strings; ids up to 15 bytes are stored inline (16 bytes a row)
HASH = np.dtype("S32")  # the hex content hash as ASCII bytes: 32 bytes a row, not a Python str of 81
_BLOCK = 65536  # rows turned into Python objects at a time (iteration, fingerprint)


@dataclass(frozen=True)
class Item:
    index: int  # position in the manifest (0..N-1), the global order
    split: str  # "train" | "val" | "test"
    id: str  # relative posix path from the source root (files) or "<split>/<row>" (arrays)
    label: int  # index into Manifest.class_names
    hash: str  # blake2b(digest_size=16) hex of the file bytes / the array row bytes
    path: str | None = None  # absolute file path (file sources)
    row: int | None = None  # row in the source array of that split (array sources)


def content_hash(data) -> str:
    """The content identity of one image: blake2b-128 of its bytes (a file's bytes or an array row's bytes)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class Items(Sequence):
    """Some rows of a manifest as a sequence of ``Item``, made when read (a slice is another view)."""

    __slots__ = ("_m", "_rows")

    def __init__(self, manifest: Manifest, rows: np.ndarray):
        self._m, self._rows = manifest, rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return Items(self._m, self._rows[k])
        return self._m.item(int(self._rows[k]))

    def __iter__(self):
        for start in range(0, len(self._rows), _BLOCK):
            yield from self._m._items(self._rows[start : start + _BLOCK])

    def __repr__(self) -> str:
        return f"Items({len(self)} of {len(self._m)})"


class Manifest:
    """Columns of equal length, in manifest order: ``split`` (uint8 index into SPLIT_ORDER), ``label`` (int32
    index into ``class_names``), ``id`` (strings), ``hash`` (hex ASCII), ``path`` (file sources, else None) and
    ``row`` (array sources: the row in the source array, else None). Treat as immutable."""

    __slots__ = ("split", "label", "id", "hash", "path", "row", "class_names", "source", "kind")

    def __init__(self, split, label, id, hash, class_names, source: str, kind: str, *, path=None, row=None):
        self.split = np.asarray(split, dtype=np.uint8)
        self.label = np.asarray(label, dtype=np.int32)
        self.id = np.asarray(id, dtype=STR)
        self.hash = np.asarray(hash, dtype=HASH)
        self.path = None if path is None else np.asarray(path, dtype=STR)
        self.row = None if row is None else np.asarray(row, dtype=np.int64)
        self.class_names = tuple(class_names)
        self.source, self.kind = source, kind
        n = len(self.split)
        if any(c is not None and len(c) != n for c in (self.label, self.id, self.hash, self.path, self.row)):
            raise ValueError("manifest columns differ in length")

    # -- rows as Items -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.split)

    @property
    def items(self) -> Items:
        return Items(self, np.arange(len(self)))

    def items_of(self, split: str) -> Items:
        return Items(self, self.rows_of(split))

    def rows_of(self, split: str) -> np.ndarray:
        """The positions of ``split``'s items, in order (index the columns with them)."""
        return np.flatnonzero(self.split == SPLIT_ORDER.index(split))

    def items_at(self, rows) -> Items:
        return Items(self, np.asarray(rows, dtype=np.int64))

    def item(self, i: int) -> Item:
        return next(self._items(np.array([i])))

    def _items(self, rows: np.ndarray):
        cols = [self.split[rows], self.id[rows], self.label[rows], self.hash[rows]]
        paths = self.path[rows].tolist() if self.path is not None else [None] * len(rows)
        found = self.row[rows].tolist() if self.row is not None else [None] * len(rows)
        for i, s, ident, lab, h, p, r in zip(
            rows.tolist(), *(c.tolist() for c in cols), paths, found, strict=True
        ):
            yield Item(i, SPLIT_ORDER[s], ident, lab, h.decode(), p, None if r is None or r < 0 else r)

    # -- what decides the cache ----------------------------------------------------------------------------------
    def splits(self) -> list[str]:
        """The splits that have items, in SPLIT_ORDER."""
        present = set(np.unique(self.split).tolist())
        return [s for i, s in enumerate(SPLIT_ORDER) if i in present]

    def fingerprint(self) -> str:
        """sha256 hex over class names and each item's (split, id, label, hash): what decides the cache rows.

        The source path is left out on purpose, so moving or copying a dataset keeps its caches valid.
        """
        # Byte for byte what json.dumps([split, id, label, hash]) writes per item (keys stay valid across
        # versions), with json's own C string encoder, a block of rows per update.
        enc = json.encoder.encode_basestring_ascii
        names = [enc(s) for s in SPLIT_ORDER]
        h = hashlib.sha256()
        h.update(json.dumps(list(self.class_names)).encode())
        for a in range(0, len(self), _BLOCK):
            b = a + _BLOCK
            parts = zip(
                self.split[a:b].tolist(),
                self.id[a:b].tolist(),
                self.label[a:b].tolist(),
                self.hash[a:b].tolist(),
                strict=True,
            )
            h.update(
                "".join(f'[{names[s]}, {enc(i)}, {lab}, "{x.decode()}"]' for s, i, lab, x in parts).encode()
            )
        return h.hexdigest()

    def __eq__(self, other) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        same = (self.class_names, self.source, self.kind) == (other.class_names, other.source, other.kind)
        return same and all(_same(getattr(self, c), getattr(other, c)) for c in _COLUMNS)

    __hash__ = None

    def __repr__(self) -> str:
        return f"Manifest({len(self)} items, {len(self.class_names)} classes, {self.kind} {self.source})"

    # -- subsets -------------------------------------------------------------------------------------------------
    def take(self, rows, **changed) -> Manifest:
        """The rows at ``rows`` (in that order) as a manifest; ``changed`` replaces whole columns after taking."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = {c: None if getattr(self, c) is None else getattr(self, c)[rows] for c in _COLUMNS}
        cols.update(changed)
        return Manifest(
            cols.pop("split"), cols.pop("label"), cols.pop("id"), cols.pop("hash"),
            self.class_names, self.source, self.kind, **cols,
        )  # fmt: skip

    def without(self, indices: Iterable[int]) -> Manifest:
        """The manifest minus the items at ``indices`` (e.g. unreadable images), re-indexed 0..M-1 in order."""
        keep = np.ones(len(self), dtype=bool)
        drop = np.fromiter((int(i) for i in indices), dtype=np.int64)
        keep[drop] = False
        return self.take(np.flatnonzero(keep))

    # -- files -----------------------------------------------------------------------------------------------------
    def to_bytes(self, skipped: list | None = None) -> bytes:
        """The manifest as one .npz (no pickles): columns as arrays, strings as one NUL-joined UTF-8 blob each (a
        path never holds NUL), and a JSON header (class names, source, kind, ``skipped``)."""
        head = {"class_names": list(self.class_names), "source": self.source, "kind": self.kind}
        arrays = {
            "header": _utf8(json.dumps({**head, "skipped": skipped or []})),
            "split": self.split,
            "label": self.label,
            "hash": self.hash,
            "id": _utf8("\0".join(self.id.tolist())),
        }
        if self.path is not None:
            arrays["path"] = _utf8("\0".join(self.path.tolist()))
        if self.row is not None:
            arrays["row"] = self.row
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[Manifest, list]:
        """(manifest, skipped) from ``to_bytes``."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            head = json.loads(z["header"].tobytes().decode())
            n = len(z["split"])

            def strings(name):
                return np.array(z[name].tobytes().decode().split("\0"), dtype=STR) if n else np.array([], STR)

            m = cls(
                z["split"], z["label"], strings("id"), z["hash"], head["class_names"], head["source"],
                head["kind"], path=strings("path") if "path" in z else None, row=z["row"] if "row" in z else None,
            )  # fmt: skip
        return m, head.get("skipped", [])

    @classmethod
    def from_json(cls, d: dict) -> Manifest:
        """A manifest as caches before the columnar format stored it (manifest.json: one dict per item)."""
        items = d.get("items", [])
        rows = [x.get("row") for x in items]
        paths = [x.get("path") for x in items]
        return cls(
            [SPLIT_ORDER.index(x["split"]) for x in items],
            [int(x["label"]) for x in items],
            [x["id"] for x in items],
            [x["hash"] for x in items],
            d.get("class_names", []),
            d.get("source", ""),
            d.get("kind", ""),
            path=paths if items and all(p is not None for p in paths) else None,
            row=[-1 if r is None else int(r) for r in rows] if any(r is not None for r in rows) else None,
        )


_COLUMNS = ("split", "label", "id", "hash", "path", "row")


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and bool(np.all(a == b))


def _utf8(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def build_manifest(
    class_names, source: str, kind: str, *, split, label, id, hash, path=None, row=None
) -> Manifest:
    """Columns in any order -> the manifest, sorted into its order: split (SPLIT_ORDER), then label (= class name
    order for folders and CSVs), then the row for arrays or the relative path for files (then the id, which
    separates equal rows of two source splits). Sorting by label keeps a class's images together in every
    store chunk. ``split`` may hold names or SPLIT_ORDER indices."""
    split = np.asarray(split)
    if split.dtype.kind in "UTO":
        split = np.array([SPLIT_ORDER.index(s) for s in split.tolist()], dtype=np.uint8)
    m = Manifest(split, label, id, hash, class_names, source, kind, path=path, row=row)
    rows = m.row if m.row is not None else np.full(len(m), -1, dtype=np.int64)
    keys = (m.split, m.label, rows, m.id)
    if _ordered(keys):  # listings usually come in this order already: a cache hit skips the sort and the copy
        return m
    return m.take(np.lexsort(keys[::-1]))


def _ordered(keys) -> bool:
    """Whether rows are already sorted by ``keys`` (most significant first), in one vectorized pass."""
    if len(keys[0]) < 2:
        return True
    later, tied = np.zeros(len(keys[0]) - 1, dtype=bool), np.ones(len(keys[0]) - 1, dtype=bool)
    for k in keys:
        a, b = k[:-1], k[1:]
        later |= tied & (b > a)
        tied &= b == a
    return bool(np.all(later | tied))


def _ranked(manifest: Manifest, rows: np.ndarray, seed: int) -> np.ndarray:
    """``rows`` in a seeded order decided per item (a hash of its id): the choice does not depend on the other
    images, so adding images to a dataset moves few old ones between splits or samples."""
    keys = [content_hash(f"{seed}\0{i}".encode()) for i in manifest.id[rows].tolist()]
    return rows[np.argsort(np.array(keys), kind="stable")]


def _by_class(manifest: Manifest, split: str) -> list[np.ndarray]:
    """The rows of ``split``, grouped by label (ascending), each group in manifest order."""
    rows = np.flatnonzero(manifest.split == SPLIT_ORDER.index(split))
    labels = manifest.label[rows]
    return [rows[labels == c] for c in np.unique(labels)]


def split_val(manifest: Manifest, fraction: float, seed: int = 0) -> Manifest:
    """Move a stratified ``fraction`` of each class's train items to a new "val" split.

    Each class gives round(fraction * n) items, at least 1 when it has 2 or more and never all of them. Which
    items go is decided per item by a seeded hash of its id, not by a shuffle of the whole list: the choice
    does not depend on the other images, so adding images to a dataset moves few old ones between splits
    (and keeps most cached rows reusable).
    """
    if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise SourceError(
            f"val_fraction {fraction!r} is not allowed; pass a number between 0 and 1, e.g. 0.1."
        )
    if "val" in manifest.splits():
        raise SourceError(
            f"{manifest.source} already has a val split; leave out val_fraction= to use it, "
            "or remove the val split from the source to make one from train."
        )
    if "train" not in manifest.splits():
        raise SourceError(
            f"{manifest.source} has no train split to take val_fraction={fraction} from; "
            "add a train split or drop val_fraction."
        )
    split = manifest.split.copy()
    for members in _by_class(manifest, "train"):
        n = len(members)
        k = min(max(round(fraction * n), 1 if n >= 2 else 0), n - 1)
        split[_ranked(manifest, members, seed)[:k]] = SPLIT_ORDER.index("val")
    return _resorted(manifest, split=split)


def _resorted(manifest: Manifest, rows=None, **changed) -> Manifest:
    """The rows (default all) with some columns replaced, sorted back into manifest order."""
    m = (
        manifest
        if rows is None and not changed
        else manifest.take(np.arange(len(manifest)) if rows is None else rows, **changed)
    )
    return build_manifest(
        m.class_names,
        m.source,
        m.kind,
        split=m.split,
        label=m.label,
        id=m.id,
        hash=m.hash,
        path=m.path,
        row=m.row,
    )


def pilot(manifest: Manifest, per_class: int, seed: int = 0, holdout: float = 0.2) -> Manifest:
    """A stratified pilot sample: at most ``per_class`` train (and val) items of each class; test kept whole.

    Without a test split, a ``holdout`` fraction of each class's train items (at least one) becomes the test
    split first, so the pilot is always scored on images it never saw. Items are picked by a seeded hash of
    their ids, so the same source and seed give the same sample (and the same cache key).
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise SourceError(
            f"per_class={per_class!r} is not allowed; pass a positive number of images, e.g. 100."
        )
    splits = manifest.splits()
    test = SPLIT_ORDER.index("test")
    new_split = manifest.split.copy()
    keep = [np.flatnonzero(manifest.split == test)]
    for split in ("train", "val"):
        for members in _by_class(manifest, split):
            ranked = _ranked(manifest, members, seed)
            if split == "train" and "test" not in splits:
                k = min(max(round(holdout * len(ranked)), 1), len(ranked) - 1) if len(ranked) > 1 else 0
                held = ranked[len(ranked) - k :]
                new_split[held] = test
                keep.append(held)
                ranked = ranked[: len(ranked) - k]
            keep.append(ranked[:per_class])
    rows = np.sort(np.concatenate(keep))
    return _resorted(manifest, rows, split=new_split[rows])
