"""Thumbnails of a cache's images for its page, decoded from the recorded source as extraction decodes them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bottleneck.data.decode import ImageDecodeError
from bottleneck.data.manifest import Manifest
from bottleneck.data.source import open_reader, reader_options
from bottleneck.errors import InspectError, SourceError

SIDE = 96  # longest side of a thumbnail in pixels; smaller images are kept at their size (the page scales up)
LISTED = 3  # missing or changed files named in an error


def write_thumbnails(
    manifest, rows, folder, *, source=None, source_options=None, workers: int = 2, progress=None
) -> dict[int, str]:
    """Write a thumbnail of each manifest row in ``rows`` into ``folder``; {manifest row: file name}.

    Images are read from the manifest's source (or from ``source``, where the same images are now: a moved
    folder, CSV or array file), checked against their content hash and decoded by ``bottleneck.data`` exactly
    as for extraction, then shrunk to at most ``SIDE`` pixels. Files are named by content hash (a duplicate
    is written once): PNG for images up to 64 x 64, JPEG otherwise. Nothing is written near the source.
    InspectError, before anything is decoded, when images are missing or changed.
    """

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = np.unique(np.asarray(rows, np.int64))
    if not len(rows):
        return {}
    manifest = rebased(manifest, source)
    options = reader_options(source_options)
    items = list(manifest.items_at(rows))
    problem = _problem(manifest, items, source)
    if problem:
        raise InspectError(problem)
    # One writer per content hash: two threads writing the same thumbnail (exact duplicates) would race on its
    # temporary file, and the loser's rename would find it gone.
    by_hash: dict = {}
    for item in items:
        by_hash.setdefault(item.hash or ("row", item.index), []).append(item)
    names: dict[int, str] = {}
    reader = open_reader(manifest, **options)
    done = 0

    def one(group):
        return group, _write(reader, group[0], folder)

    try:
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="thumbs") as pool:
            for group, name in pool.map(one, by_hash.values()):
                for item in group:
                    names[item.index] = name
                done += len(group)
                if progress and (done % 256 < len(group) or done == len(items)):
                    progress("thumbnails", done, len(items))
    finally:
        reader.close()
    return names


def read_checked(reader, item, purpose: str, changed: str, draft: int | None = None):
    """The image of ``item`` as extraction decoded it, or one InspectError: undecodable (``purpose``: "for its
    thumbnail") or changed since extraction (``changed``: what a changed file would spoil)."""

    try:
        return reader.read(
            item, draft
        )  # file sources check the content hash: a changed file is a SourceError
    except ImageDecodeError as exc:
        raise InspectError(f"cannot decode {item.path or item.id} {purpose} ({exc.reason}).") from None
    except SourceError:
        raise InspectError(
            f"{item.path} changed since extraction (its content hash differs): {changed}. Restore it, or extract "
            "again."
        ) from None


def _write(reader, item, folder: Path) -> str:
    from PIL import Image

    pixels = read_checked(
        reader, item, "for its thumbnail", "its thumbnail would not show what the cache holds"
    )
    im = Image.fromarray(pixels)
    small = im.width * im.height <= 64 * 64
    name = f"{item.hash}.{'png' if small else 'jpg'}"
    path = folder / name
    if max(im.size) > SIDE:
        im.thumbnail((SIDE, SIDE), Image.LANCZOS)
    tmp = folder / f".{name}.tmp"
    if small:
        im.save(tmp, "PNG")
    else:
        im.save(tmp, "JPEG", quality=85)
    tmp.replace(path)
    return name


def rebased(manifest, source):
    """The manifest with its files (or array file) where ``source`` says the same images are now."""
    if source is None:
        return manifest

    source = Path(source).expanduser().resolve()
    paths = None
    if manifest.kind in ("folders", "csv"):
        root = source.parent if source.is_file() else source
        paths = [str(root / i) for i in manifest.id.tolist()]
    return Manifest(
        manifest.split, manifest.label, manifest.id, manifest.hash, manifest.class_names, str(source),
        manifest.kind, path=paths if paths is not None else manifest.path, row=manifest.row,
    )  # fmt: skip


def missing_files(items, manifest, source) -> str | None:
    """What is missing of the files of ``items`` (a sentence ending in how to point at them), or None."""
    missing = [it.path for it in items if not Path(it.path).is_file()]
    if not missing:
        return None
    what = f"the source {manifest.source} moved" if source is None else f"they are not all under {source}"
    return (
        f"{len(missing)} of {len(items)} source images of this cache are missing ({_first(missing)}): {what}; "
        "pass source=PATH where its images are now."
    )


def missing_array_source(manifest) -> str | None:
    """Why the (rebased) array file of an array source cannot be read here, or None."""
    if not Path(manifest.source).exists():
        return f"the source {manifest.source} of this cache does not exist here; pass source=PATH where it is now."
    return None


def source_problem(manifest, rows, source=None) -> str | None:
    """Why the images of manifest ``rows`` cannot be read from the manifest's source (or from ``source``, where
    they are now), or None when they can."""
    manifest = rebased(manifest, source)
    return _problem(manifest, list(manifest.items_at(rows)), source)


def _problem(manifest, items, source) -> str | None:
    """``source_problem`` of a manifest already rebased, for its ``items``."""
    if manifest.kind in ("folders", "csv", "webdataset"):  # webdataset: item paths are its shards
        return missing_files(items, manifest, source)
    return missing_array_source(manifest)


def _first(paths) -> str:
    return ", ".join(str(p) for p in paths[:LISTED]) + (" ..." if len(paths) > LISTED else "")


def row_thumbnails(rows, needs, folder, *, source=None, source_options=None, progress=None) -> dict[int, str]:
    """Thumbnails of the global rows ``needs`` of a cache's ``rows`` (``inspection.rows.Rows``) in ``folder``;
    {global row: file name}. Empty when the cache records no source images (``write_arrays``)."""
    if rows.manifest is None or not len(needs):
        return {}
    needs = np.unique(np.asarray(needs, np.int64))
    by_manifest = write_thumbnails(
        rows.manifest,
        rows.manifest_rows[needs],
        folder,
        source=source,
        source_options=source_options,
        progress=progress,
    )
    return {int(r): by_manifest[int(m)] for r, m in zip(needs, rows.manifest_rows[needs], strict=True)}
