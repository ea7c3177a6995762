"""Parquet sources: a ``.parquet`` file, a folder of ``{split}-*.parquet`` files, or the Hugging Face hub layout
(``data/train-00000-of-00002.parquet``). Images are rows: the encoded bytes of one column (binary, or a
``{bytes, path}`` struct as Hugging Face ``Image`` features store them), labels another column, class names the
``ClassLabel`` of the file's Hugging Face metadata when it has one (else the sorted distinct labels).

Files are read a row group at a time and only the columns needed, never a whole file. Ids are ``file:row``
(the file relative to the source). The content hash is that of the image bytes, as for image files; the
source's hash index keeps the hashes of each file's rows under its stamp (size, mtime, ctime, inode), so an
unchanged file is not read again to confirm a cache hit (only its footer and label column are).

pyarrow is an optional extra (``bottleneck-features[parquet]``), imported when a Parquet source is opened.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from bottleneck.data.decode import ImageDecodeError, decode_image, decode_resized, draft_size, inspect_image
from bottleneck.data.hash_index import HashIndex, stamp
from bottleneck.data.manifest import HASH, SPLIT_ALIASES, SPLIT_ORDER, STR, Item, Manifest, content_hash
from bottleneck.errors import SourceError, install_hint

KIND = "parquet"
_SPLIT_NAME = re.compile(r"^(train|validation|valid|val|test)(?:[-_.].*)?$", re.IGNORECASE)
_KEEP_GROUPS = 4  # row groups of image bytes held while reading in order (decoding threads share them)
_NO_BYTES = b""  # what a row without image bytes (a null, or a path-only struct) hashes and reads as


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(f"Parquet sources need pyarrow; {install_hint('parquet')}") from None
    return pa, pc, pq


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a folder source: ``path/*.parquet``, else ``path/data/*.parquet`` (the Hugging Face
    hub layout); [] when it has none (another kind of folder)."""
    for folder in (path, path / "data"):
        found = sorted(p for p in folder.glob("*.parquet") if p.is_file()) if folder.is_dir() else []
        if found:
            return found
    return []


def _splits(files: list[Path]) -> list[str]:
    """The split of each file from its name (``train-00000-of-00002.parquet``); all train when none is named for
    a split (one file, or a folder of part files)."""
    found = [_SPLIT_NAME.match(f.name.removesuffix(".parquet")) for f in files]
    if not any(found):
        return ["train"] * len(files)
    unnamed = [f for f, m in zip(files, found, strict=True) if not m]
    if unnamed:
        raise SourceError(
            f"{unnamed[0]} is not named for a split while other files are; name the Parquet files of a folder "
            "train-*.parquet, validation-*.parquet (or val-) and test-*.parquet."
        )
    return [SPLIT_ALIASES[m.group(1).lower()] for m in found]


def _image_column(file: Path, schema, wanted: str | None) -> str:
    """The column of encoded images: ``wanted``, else the one binary or ``{bytes, ...}`` struct column (a Hugging
    Face ``Image`` feature first)."""
    pa = _pyarrow()[0]

    def holds_bytes(t) -> bool:
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return True
        if pa.types.is_struct(t):
            i = t.get_field_index("bytes")
            return i >= 0 and holds_bytes(t.field(i).type)
        return False

    names = schema.names
    if wanted is not None:
        if wanted not in names:
            raise SourceError(
                f"{file} has no column {wanted!r} (it has {', '.join(names)}); pass one of them as --image-column."
            )
        if not holds_bytes(schema.field(wanted).type):
            raise SourceError(
                f"{file}: column {wanted!r} is {schema.field(wanted).type}, not encoded images (binary or a "
                "{bytes, path} struct); pass the image column as --image-column."
            )
        return wanted
    found = [n for n in names if holds_bytes(schema.field(n).type)]
    hf = [n for n in found if _hf_features(schema).get(n, {}).get("_type") == "Image"]
    if len(hf) == 1 or len(found) == 1:
        return (hf or found)[0]
    if not found:
        raise SourceError(
            f"{file} has no image column (binary or a {{bytes, path}} struct) among {', '.join(names)}; "
            "store encoded image bytes, or name the column with --image-column."
        )
    raise SourceError(
        f"{file} has several image columns ({', '.join(found)}); choose one with --image-column."
    )


def _hf_features(schema) -> dict:
    """The Hugging Face features of a schema's metadata ({} without them)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        info = json.loads(raw) if raw else {}
        features = info.get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return features if isinstance(features, dict) else {}


def _label_column(file: Path, schema, wanted: str | None, image: str) -> str:
    names = schema.names
    if wanted is None:
        if "label" in names and "label" != image:
            return "label"
        features = _hf_features(schema)
        class_labels = [n for n in names if (features.get(n) or {}).get("_type") == "ClassLabel"]
        if len(class_labels) == 1:  # Hugging Face datasets name it "labels", "fine_label", ...
            return class_labels[0]
        raise SourceError(
            f"{file} has no 'label' column (it has {', '.join(names)}); name the label column with --label-column."
        )
    if wanted not in names:
        raise SourceError(
            f"{file} has no column {wanted!r} (it has {', '.join(names)}); pass one of them as --label-column."
        )
    return wanted


def _class_label(schema, column: str) -> list[str] | None:
    feature = _hf_features(schema).get(column, {})
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and feature.get("names"):
        return [str(n) for n in feature["names"]]
    return None


class _Layout:
    """What every file of the source shares: image and label columns, class names from the metadata, the schema."""

    def __init__(self, files: list[Path], image_column: str | None, label_column: str | None):
        pq = _pyarrow()[2]
        self.files = files
        schemas = []
        for f in files:
            try:
                schemas.append(pq.read_schema(f))
            except (OSError, ValueError) as exc:
                raise SourceError(f"{f} is not a readable Parquet file ({exc}); write it again.") from None
        first = schemas[0].remove_metadata()
        for f, s in zip(files[1:], schemas[1:], strict=True):
            if not s.remove_metadata().equals(first):
                raise SourceError(
                    f"{f} and {files[0]} have different columns or types (mixed schemas); pass files of one "
                    "dataset, written with one schema."
                )
        self.image = _image_column(files[0], schemas[0], image_column)
        self.label = _label_column(files[0], schemas[0], label_column, self.image)
        self.class_names = _class_label(schemas[0], self.label)


def image_bytes(table_column) -> list:
    """The image column of a row group (a ChunkedArray of binary or {bytes, ...} structs) as one binary array
    per chunk."""
    pa, pc, _ = _pyarrow()
    out = []
    for chunk in table_column.chunks:
        if pa.types.is_struct(chunk.type):
            chunk = pc.struct_field(chunk, "bytes")
        out.append(chunk)
    return out


def _hash_chunk(chunk) -> list[str]:
    """Content hashes of the rows of one binary array, sliced from its buffers (no copy per row)."""
    _, offsets, data = chunk.buffers()
    width = np.int64 if chunk.type.id == _pyarrow()[0].large_binary().id else np.int32
    ends = np.frombuffer(offsets, dtype=width)[chunk.offset : chunk.offset + len(chunk) + 1]
    view = memoryview(data) if data is not None else memoryview(b"")
    valid = chunk.is_valid().to_numpy(zero_copy_only=False)
    return [
        content_hash(view[a:b] if ok else _NO_BYTES)
        for a, b, ok in zip(ends[:-1].tolist(), ends[1:].tolist(), valid.tolist(), strict=True)
    ]


def _file_hashes(file: Path, layout: _Layout, progress, done: list, total: int) -> list[str]:
    """Content hashes of every image of ``file``, read a row group at a time (image column only)."""
    pq = _pyarrow()[2]
    hashes: list[str] = []
    with pq.ParquetFile(file) as pf:
        for g in range(pf.num_row_groups):
            for chunk in image_bytes(pf.read_row_group(g, columns=[layout.image]).column(0)):
                hashes.extend(_hash_chunk(chunk))
            done[0] = min(total, done[0] + pf.metadata.row_group(g).num_rows)
            if progress:
                progress("hash", done[0], total)
    return hashes


def _labels(file: Path, layout: _Layout):
    pq = _pyarrow()[2]
    values = pq.read_table(file, columns=[layout.label]).column(0)
    if values.null_count:
        raise SourceError(
            f"{file}: {values.null_count} rows have no {layout.label!r} value; label every image, or leave "
            "the unlabelled rows out of the file."
        )
    return values.to_numpy()


def _encode_labels(where: str, layout: _Layout, raw: list[np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    """(class names, per file the labels as indices into them)."""
    if layout.class_names is not None:
        k = len(layout.class_names)
        out = []
        for y in raw:
            if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() >= k)):
                bad = (
                    y[(y < 0) | (y >= k)][:3].tolist()
                    if np.issubdtype(y.dtype, np.integer)
                    else y[:3].tolist()
                )
                raise SourceError(
                    f"{where}: {layout.label!r} holds {bad}, not indices 0..{k - 1} of its ClassLabel names; "
                    "leave out rows without a label (-1), or pass another --label-column."
                )
            out.append(y.astype(np.int32))
        return layout.class_names, out
    joined = np.concatenate(raw) if raw else np.array([])
    try:
        names, codes = np.unique(joined, return_inverse=True)
    except TypeError:
        raise SourceError(
            f"{where}: {layout.label!r} mixes value types; store one type of label (class names or indices)."
        ) from None
    bounds = np.cumsum([0, *map(len, raw)])
    codes = codes.reshape(-1).astype(np.int32)
    return [str(n) for n in names.tolist()], [
        codes[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def _known_hashes(file: Path, n: int, index: HashIndex | None):
    """(keys, stamps, hashes or None) of ``file``'s rows in the hash index: hashes when every row is known."""
    keys = [f"{file}:{r}" for r in range(n)]
    stamps = np.tile(np.asarray(stamp(os.stat(file)), np.uint64), (n, 1))
    if index is None:
        return keys, stamps, None
    found = index.match(keys, stamps).hashes
    return keys, stamps, None if any(h is None for h in found) else found


def open_manifest(
    path: Path, *, image_column=None, label_column=None, progress=None, index: HashIndex | None = None
) -> Manifest:
    """The manifest of a Parquet source (a file or a folder): split, file, then row order; ``index`` gives the
    hashes of unchanged files and learns the others (the caller saves it)."""
    pq = _pyarrow()[2]
    single = path.is_file()
    files = [path] if single else parquet_files(path)
    root = path.parent if single else path
    splits = _splits(files)
    order = sorted(range(len(files)), key=lambda i: (SPLIT_ORDER.index(splits[i]), i))
    files, splits = [files[i] for i in order], [splits[i] for i in order]
    layout = _Layout(files, image_column, label_column)
    counts = []
    for f in files:
        with pq.ParquetFile(f) as pf:
            counts.append(pf.metadata.num_rows)
    total, done = sum(counts), [0]
    if total == 0:
        raise SourceError(f"{path} holds no rows; pass Parquet files with images.")
    names, labels = _encode_labels(str(path), layout, [_labels(f, layout) for f in files])
    run: list = [[], [], [], False]  # keys, stamps, hashes, read any
    hashes = []
    for f, n in zip(files, counts, strict=True):
        keys, stamps, known = _known_hashes(f, n, index)
        if known is None:
            known, run[3] = _file_hashes(f, layout, progress, done, total), True
        else:
            done[0] += n
        hashes.append(known)
        for column, values in zip(run, (keys, stamps, known), strict=False):
            column.append(values)
    if index is not None:
        index.remember(_joined(run[0]), np.concatenate(run[1]), _joined(run[2]), run[3])
    ids = [
        np.strings.add(f"{f.relative_to(root).as_posix()}:", np.arange(n).astype(STR))
        for f, n in zip(files, counts, strict=True)
    ]
    return Manifest(
        np.repeat([SPLIT_ORDER.index(s) for s in splits], counts).astype(np.uint8),
        np.concatenate(labels),
        np.concatenate(ids),
        np.array(_joined(hashes), dtype=HASH),
        names,
        str(path),
        KIND,
        path=np.repeat([str(f) for f in files], counts).astype(STR),
        row=np.concatenate([np.arange(n, dtype=np.int64) for n in counts]),
    )


def _joined(lists: list[list]) -> list:
    return [x for part in lists for x in part]


def in_file_order(manifest: Manifest) -> Manifest:
    """``manifest`` in (split, file, row) order again after a val split or a pilot sample (which order by label):
    reading then goes through each row group once, not once per class."""
    files = np.unique(manifest.path, return_inverse=True)[1].reshape(-1)
    order = np.lexsort((manifest.row, files, manifest.split))
    return manifest if np.array_equal(order, np.arange(len(order))) else manifest.take(order)


class ParquetSource:
    """Reads the items of a Parquet manifest: the row group holding an item is read once (its image column) and
    kept while the next items are read from it; bytes are checked against the item's hash. The ``Source``
    contract (``data.source``): ``manifest``, ``read``, ``load``, ``header_problems``, ``min_side``, ``close``."""

    def __init__(self, manifest: Manifest, image_column: str | None = None, max_pixels: int | None = None):
        self.manifest = manifest
        self.max_pixels = max_pixels
        self._image_column = image_column
        self._lock = threading.Lock()
        self._groups: OrderedDict = OrderedDict()  # (file, row group) -> Future of (first row, binary arrays)
        self._files: dict = {}  # file -> (ParquetFile, row group starts, lock, image column)

    def _file(self, file: str):
        with self._lock:
            got = self._files.get(file)
            if got is None:
                pq = _pyarrow()[2]
                try:
                    pf = pq.ParquetFile(file)
                except FileNotFoundError:
                    raise SourceError(
                        f"{file} was removed after the source was opened; run again to rebuild the manifest."
                    ) from None
                sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
                column = self._image_column or _image_column(Path(file), pf.schema_arrow, None)
                got = self._files[file] = (pf, np.cumsum([0, *sizes]), threading.Lock(), column)
            return got

    def _group(self, file: str, row: int):
        pf, starts, file_lock, column = self._file(file)
        g = int(np.searchsorted(starts, row, side="right")) - 1
        key = (file, g)
        with self._lock:
            slot = self._groups.get(key)
            fresh = slot is None
            if fresh:
                slot = self._groups[key] = Future()
                while len(self._groups) > _KEEP_GROUPS:
                    self._groups.popitem(last=False)
            else:
                self._groups.move_to_end(key)
        if fresh:
            try:
                with file_lock:
                    table = pf.read_row_group(g, columns=[column])
                slot.set_result((int(starts[g]), image_bytes(table.column(0))))
            except BaseException as exc:
                slot.set_exception(exc)
                with self._lock:
                    self._groups.pop(key, None)
        return slot.result()

    def _bytes(self, item: Item) -> bytes:
        first, chunks = self._group(item.path, item.row)
        at = item.row - first
        for chunk in chunks:
            if at < len(chunk):
                data = chunk[at].as_py()
                break
            at -= len(chunk)
        data = _NO_BYTES if data is None else data
        if content_hash(data) != item.hash:
            raise SourceError(
                f"{item.path} changed after the source was opened (row {item.row}'s image differs); run again."
            )
        if not data:
            raise ImageDecodeError("no image bytes in the row")
        return data

    def read(self, item: Item, draft: int | None = None) -> np.ndarray:
        return decode_image(self._bytes(item), self.max_pixels, draft)

    def load(self, item: Item, size: int, resize: str = "squash", fast: bool = False) -> np.ndarray:
        return decode_resized(self._bytes(item), size, resize, self.max_pixels, draft_size(size, fast))

    def header_problems(self, items=None) -> list[tuple[Item, str]]:
        return []

    def min_side(self, item: Item) -> int | None:
        try:
            return min(inspect_image(self._bytes(item), self.max_pixels))
        except ImageDecodeError:
            return None

    def close(self) -> None:
        with self._lock:
            for pf, *_ in self._files.values():
                pf.close()
            self._files.clear()
            self._groups.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
