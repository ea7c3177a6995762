"""Opening a source: detect its layout, build the manifest, and read items back as RGB uint8 arrays."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bottleneck.data import array_sources as arrays
from bottleneck.data import files
from bottleneck.data import parquet_source as parquet
from bottleneck.data import webdataset_source as wds
from bottleneck.data.decode import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    array_to_rgb,
    decode_image,
    decode_resized,
    draft_size,
    inspect_image,
    resize_image,
)
from bottleneck.data.exclusions import exclude_ids
from bottleneck.data.manifest import (
    HASH,
    SPLIT_ORDER,
    STR,
    Item,
    Manifest,
    build_manifest,
    content_hash,
    split_val,
)
from bottleneck.data.manifest import pilot as pilot_sample
from bottleneck.data.reads import FileReads, read_regular_file
from bottleneck.errors import SourceError

_HASH_BLOCK = 4096  # array rows hashed per read: one h5 / memmap read per block, not per row
SUPPORTED = (
    "a folder of class folders (optionally inside train/val/test folders), a .h5 file, a .npz file, "
    "a folder of .npy pairs, a folder of IDX files, a .csv of path,label[,split], .parquet file(s), or WebDataset "
    ".tar shards (a folder, a .tar or a brace pattern such as train-{000000..000009}.tar)"
)


class Source:
    """An opened source: ``manifest`` plus ``read(item)`` -> RGB uint8 (H, W, 3). Thread-safe; a context manager."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    def read(self, item: Item, draft: int | None = None) -> np.ndarray:
        """The image as RGB uint8 (H, W, 3); ``draft``: decode JPEGs at a reduced scale (see decode_image)."""
        raise NotImplementedError

    def load(self, item: Item, size: int, resize: str = "squash", fast: bool = False) -> np.ndarray:
        """The image as the backbone gets it: decoded (fast: at a reduced JPEG scale) and resized to ``size``."""
        return resize_image(self.read(item, draft_size(size, fast)), size, resize)

    def header_problems(self, items=None) -> list[tuple[Item, str]]:
        """(item, reason) of the images whose header already shows them unreadable, found without decoding
        (file sources check headers while hashing); the full check is ``find_bad_images``."""
        return []

    def min_side(self, item: Item) -> int | None:
        """The shorter side of an image in pixels, from its header where it has one; None when unreadable."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileSource(Source):
    """Image files on disk, decoded by content on each read; ``max_pixels`` is the decompression-bomb limit.

    ``reads`` is the pass that hashed the files: its header problems and sizes, and the bytes it kept, which
    ``read`` uses instead of reading the file again.
    """

    def __init__(self, manifest: Manifest, max_pixels: int | None = None, reads: FileReads | None = None):
        super().__init__(manifest)
        self.max_pixels = max_pixels
        self.reads = reads or FileReads(max_pixels)

    def read(self, item: Item, draft: int | None = None) -> np.ndarray:
        return decode_image(self._bytes(item), self.max_pixels, draft)

    def load(self, item: Item, size: int, resize: str = "squash", fast: bool = False) -> np.ndarray:
        return decode_resized(self._bytes(item), size, resize, self.max_pixels, draft_size(size, fast))

    def _bytes(self, item: Item) -> bytes:
        # Kept bytes are the very bytes that were hashed, so they need no second check against item.hash.
        data = self.reads.take(item.path)
        return self._read_checked(item) if data is None else data

    def _read_checked(self, item: Item) -> bytes:
        try:
            data = read_regular_file(item.path)
        except FileNotFoundError:
            raise SourceError(
                f"{item.path} was removed after the source was opened; run again to rebuild the manifest."
            ) from None
        except OSError as exc:
            raise ImageDecodeError(f"unreadable file: {exc.strerror or exc}") from None
        # Features are filed under this hash, so an image edited mid-run must not be stored under its old identity.
        if content_hash(data) != item.hash:
            raise SourceError(
                f"{item.path} changed after the source was opened (its content hash differs); run again."
            )
        return data

    def header_problems(self, items=None) -> list[tuple[Item, str]]:
        items = self.manifest.items if items is None else items
        problems = self.reads.problems(it.path for it in items)
        return [(it, problems[it.path]) for it in items if it.path in problems]

    def min_side(self, item: Item) -> int | None:
        data = self.reads.peek(item.path)
        try:
            if data is None:
                data = self._read_checked(item)
            return min(inspect_image(data, self.max_pixels))
        except ImageDecodeError:
            return None

    def close(self) -> None:
        self.reads.release()


class ArraySource(Source):
    """Images held in arrays; ``item.id`` is "<split>/<row>" of the array it came from (also after a val split)."""

    def __init__(self, manifest: Manifest, images: dict, handle=None):
        super().__init__(manifest)
        self._images = images
        self._handle = handle
        self._lock = threading.Lock()  # h5py datasets are not safe to read from several threads at once

    def read(self, item: Item, draft: int | None = None) -> np.ndarray:
        origin = item.id.split("/", 1)[0]
        x = self._images[origin]
        if self._handle is not None:
            with self._lock:
                row = x[item.row]
        else:
            row = x[item.row]
        return array_to_rgb(row)

    def min_side(self, item: Item) -> int:
        return min(self._images[item.id.split("/", 1)[0]].shape[1:3])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _array_manifest(data: arrays.ArraySet, source: str, kind: str, progress=None) -> Manifest:
    total = sum(len(y) for y in data.labels.values())
    cols: dict[str, list] = {"split": [], "label": [], "id": [], "hash": [], "row": []}
    done = 0
    for split, x in data.images.items():
        n = len(data.labels[split])
        hashes = np.empty(n, dtype=HASH)
        for start in range(0, n, _HASH_BLOCK):
            block = _rows_bytes(x, start, min(n, start + _HASH_BLOCK))
            size = len(block) // max(1, min(n, start + _HASH_BLOCK) - start)
            hashes[start : start + _HASH_BLOCK] = [
                content_hash(block[i : i + size]) for i in range(0, len(block), size)
            ]
            done = min(total, done + _HASH_BLOCK)
            if progress:
                progress("hash", done, total)
        rows = np.arange(n, dtype=np.int64)
        cols["split"].append(np.full(n, SPLIT_ORDER.index(split), dtype=np.uint8))
        cols["label"].append(np.asarray(data.labels[split], dtype=np.int32))
        cols["id"].append(np.strings.add(f"{split}/", rows.astype(STR)))
        cols["hash"].append(hashes)
        cols["row"].append(rows)
    joined = {k: np.concatenate(v) if v else np.array([]) for k, v in cols.items()}
    return build_manifest(data.class_names, source, kind, **joined)


def _rows_bytes(x, start: int, stop: int) -> memoryview:
    """The bytes of rows start..stop of an image array, C order (what ``content_hash`` of each row hashes).

    A memory-mapped .npy is read with plain file reads, not through the map: hashing a million rows through it
    would leave every page of the file resident in this process (counted in its memory) until it exits."""
    filename = getattr(x, "filename", None)
    if isinstance(x, np.memmap) and filename and x.flags.c_contiguous:
        row = x.itemsize * int(np.prod(x.shape[1:], dtype=np.int64))
        with open(filename, "rb") as fh:
            fh.seek(x.offset + start * row)
            data = fh.read((stop - start) * row)
        if len(data) == (stop - start) * row:
            return memoryview(data)
    return memoryview(np.ascontiguousarray(x[start:stop])).cast("B")


_FILE_SUFFIXES = (".h5", ".hdf5", ".hdf", ".npz", ".csv", ".npy")


def _detect(path: Path) -> str:
    if wds.is_pattern(str(path)) or (path.exists() and wds.holds_shards(path)):
        return wds.KIND
    if not path.exists():
        raise SourceError(f"source {path} does not exist; pass {SUPPORTED}.")
    if path.is_dir() and path.suffix.lower() in _FILE_SUFFIXES and not any(path.glob("*.npy")):
        raise SourceError(
            f"{path} is a folder, not a {path.suffix.lower()[1:]} file; pass the file itself, or {SUPPORTED}."
        )
    if path.is_file():
        suffix = path.suffix.lower()
        kind = {".h5": "h5", ".hdf5": "h5", ".hdf": "h5", ".npz": "npz", ".csv": "csv"}.get(suffix)
        kind = parquet.KIND if suffix == ".parquet" else kind
        if kind:
            return kind
        if suffix == ".npy":
            raise SourceError(
                f"{path} is one .npy file; pass the folder holding the image and label .npy files."
            )
        if suffix in IMAGE_EXTENSIONS:
            raise SourceError(f"{path} is a single image; a source is {SUPPORTED}.")
        if arrays._IDX_NAME.match(path.name):
            raise SourceError(
                f"{path} is one IDX file; pass the folder holding the IDX image and label files."
            )
        raise SourceError(
            f"cannot tell what {path} is from its extension {suffix or '(none)'}; pass {SUPPORTED}."
        )
    if not path.is_dir():  # a FIFO, a socket, a device: reading one could block forever
        raise SourceError(f"source {path} is a special file, not a folder or a data file; pass {SUPPORTED}.")
    try:
        os.listdir(path)
    except OSError as exc:
        raise SourceError(
            f"source {path} cannot be read ({exc.strerror or exc}); pass {SUPPORTED}."
        ) from None
    if arrays.idx_files(path):
        return "idx"
    if parquet.parquet_files(path):
        return "parquet"
    if any(path.glob("*.npy")):
        if arrays.find_pairs([p.stem for p in path.glob("*.npy")]) or not files._visible_dirs(path):
            return "npy"
    return "folders"


def open_source(
    path,
    *,
    h5_keys=None,
    val_fraction: float | None = None,
    seed: int = 0,
    progress=None,
    max_image_pixels: int | None = None,
    pilot: dict | None = None,
    keep_bytes: int = 0,
    hash_index=None,
    split: str | None = None,
    label_key: str | None = None,
    exclude=None,
    notify=None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> Source:
    """Open an image source and build its manifest (every file is read once to hash it).

    ``h5_keys`` names the image/label arrays of a .h5, .npz or .npy folder (see ``bottleneck.data.array_sources``).
    ``val_fraction`` carves a stratified, seeded val split out of train when the source has none.
    ``progress(stage, done, total)`` is called while hashing. ``max_image_pixels`` is the decompression-bomb
    limit of image files (None: PIL's default, ~89 Mpx; 0: none). ``pilot`` ({"per_class", "seed", "holdout"})
    keeps a stratified sample (``manifest.pilot``), before any val split is carved from its train part.
    ``keep_bytes``: file sources keep up to this many bytes of the files read while hashing, so a pass that
    decodes them right after reads each file once; ``close`` (or a cache hit's ``release``) frees them.
    ``hash_index`` (a ``data.hash_index.HashIndex``): file sources take the hashes of unchanged files from it
    instead of reading them, and record the others; the caller saves it. ``split`` and ``label_key`` apply to
    WebDataset shards (``bottleneck.data.webdataset_source``), which keep a member index beside ``hash_index``.
    ``exclude`` (ids): those items are left out first (``data.exclusions``), ids the source lacks named through
    ``notify``.
    instead of reading them, and record the others; the caller saves it (Parquet sources: per file and row).
    ``image_column`` / ``label_column`` name the columns of a Parquet source (default: found by type / "label").
    """
    path = Path(path).expanduser().resolve()
    kind = _detect(path)
    _check_kind_options(path, kind, h5_keys=h5_keys, split=split, label_key=label_key, image_column=image_column,
                        label_column=label_column)  # fmt: skip
    if kind == parquet.KIND:
        columns = {"image_column": image_column, "label_column": label_column}
        manifest = parquet.open_manifest(path, progress=progress, index=hash_index, **columns)
        src = parquet.ParquetSource(manifest, image_column, max_image_pixels)
    elif kind in ("folders", "csv"):
        reads = FileReads(max_image_pixels, keep_bytes, hash_index)
        build = files.folder_manifest if kind == "folders" else files.csv_manifest
        src: Source = FileSource(build(path, progress, reads), max_image_pixels, reads)
    elif kind == wds.KIND:
        src = wds.open_webdataset(
            path, split=split, label_key=label_key, progress=progress, max_image_pixels=max_image_pixels,
            keep_bytes=keep_bytes, hash_index=hash_index,
        )  # fmt: skip
    else:
        loader = {"h5": arrays.load_h5, "npz": arrays.load_npz, "npy": arrays.load_npy_dir}.get(kind)
        data = arrays.load_idx_dir(path) if kind == "idx" else loader(path, h5_keys)
        try:
            manifest = _array_manifest(data, str(path), kind, progress)
        except BaseException:
            if data.handle is not None:
                data.handle.close()
            raise
        src = ArraySource(manifest, data.images, data.handle)
    return _narrowed(
        src, kind, exclude=exclude, notify=notify, pilot=pilot, val_fraction=val_fraction, seed=seed
    )


def _check_kind_options(
    path: Path, kind: str, *, h5_keys, split, label_key, image_column, label_column
) -> None:
    """SourceError for an option of one kind of source given with another kind (it would be ignored)."""
    if (split is not None or label_key is not None) and kind != wds.KIND:
        raise SourceError(
            f"split and label_key apply to WebDataset shards, not to {kind} source {path}; leave them out."
        )
    if h5_keys is not None and kind not in ("h5", "npz", "npy"):
        raise SourceError(
            f"h5_keys applies to .h5, .npz and .npy sources, not to {kind} source {path}; leave out h5_keys=."
        )
    if (image_column is not None or label_column is not None) and kind != parquet.KIND:
        raise SourceError(
            f"image_column and label_column apply to Parquet sources, not to {kind} source {path}; leave them out."
        )


def _narrowed(src: Source, kind: str, *, exclude, notify, pilot, val_fraction, seed) -> Source:
    """``src`` with excluded ids left out, then the pilot sample, then the val split carved out of train."""
    if exclude is not None:
        src.manifest = exclude_ids(src.manifest, exclude, notify)
    if pilot is not None:
        try:
            src.manifest = pilot_sample(src.manifest, **pilot)
        except BaseException:
            src.close()
            raise
        if isinstance(src, FileSource):
            src.reads.retain(set(src.manifest.path.tolist()))
    if val_fraction is not None:
        try:
            src.manifest = split_val(src.manifest, val_fraction, seed)
        except BaseException:
            src.close()
            raise
    if kind == parquet.KIND and (pilot is not None or val_fraction is not None):
        src.manifest = parquet.in_file_order(src.manifest)
    return src


# The saved source options (a cache's ``source_options``) that reading items back needs; the others (val split,
# pilot, exclusions) only chose the items.
READER_OPTIONS = ("h5_keys", "image_column", "max_image_pixels")


def reader_options(source_options: dict | None) -> dict:
    """The options of ``open_reader`` among a cache's saved ``source_options``."""
    return {k: v for k, v in (source_options or {}).items() if k in READER_OPTIONS}


def open_reader(
    manifest: Manifest, *, h5_keys=None, max_image_pixels: int | None = None, image_column=None, **_
) -> Source:
    """A source that reads the items of ``manifest`` (made by ``open_source`` elsewhere, e.g. on a cluster's
    client) without listing or hashing anything: file items are read by path and checked against their hash,
    array items by row. The other ``open_source`` options (val split, pilot) only chose the items."""
    if manifest.kind in ("folders", "csv"):
        return FileSource(manifest, max_image_pixels)
    if manifest.kind == wds.KIND:  # items carry their shard and member offset
        return wds.WebDatasetSource(manifest, max_image_pixels)
    if manifest.kind == parquet.KIND:
        return parquet.ParquetSource(manifest, image_column, max_image_pixels)
    path = Path(manifest.source)
    if manifest.kind == "idx":
        data = arrays.load_idx_dir(path)
    else:
        loader = {"h5": arrays.load_h5, "npz": arrays.load_npz, "npy": arrays.load_npy_dir}[manifest.kind]
        data = loader(path, h5_keys)
    return ArraySource(manifest, data.images, data.handle)


def find_bad_images(source: Source, items=None, workers: int = 2, progress=None) -> list[tuple[Item, str]]:
    """Fully decode ``items`` (default: all) in ``workers`` threads; (item, reason) per unreadable one, in order.

    A bad image never stops the others; errors that are not about one image (a file changed mid-run) still raise.
    """
    items = list(source.manifest.items if items is None else items)

    def check(item):
        try:
            source.read(item)
        except ImageDecodeError as exc:
            return exc.reason
        return None

    bad = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="check") as pool:
        for i, (item, reason) in enumerate(zip(items, pool.map(check, items), strict=True)):
            if reason is not None:
                bad.append((item, reason))
            if progress and ((i + 1) % 64 == 0 or i + 1 == len(items)):
                progress("check", i + 1, len(items))
    return bad
