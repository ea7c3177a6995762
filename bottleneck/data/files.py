"""File sources: class folders (optionally under split folders) and CSV lists of path,label[,split]."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from bottleneck.data.decode import IMAGE_EXTENSIONS
from bottleneck.data.manifest import SPLIT_ALIASES, SPLIT_ORDER, Manifest, build_manifest
from bottleneck.data.reads import FileReads
from bottleneck.errors import SourceError

# Folders that are never classes: archive-tool debris (hidden names, starting with ".", are skipped as well).
_JUNK_DIRS = {"__MACOSX"}
_SHOWN = 5  # how many offending names an error message lists


_SUFFIXES = tuple(IMAGE_EXTENSIONS)


def _is_image(name: str) -> bool:
    return name.lower().endswith(_SUFFIXES)  # runs per file of a listing: no splitext


def _visible_dirs(path: Path) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted(
            (e for e in it if e.is_dir() and not e.name.startswith(".") and e.name not in _JUNK_DIRS),
            key=lambda e: e.name,
        )


def _stray_images(path: Path) -> list[str]:
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_file() and not e.name.startswith(".") and _is_image(e.name))


def _images_under(folder: Path, root: Path) -> list[tuple[str, str]]:
    """(relative posix id, absolute path) of every visible image file under ``folder``, subfolders included."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _JUNK_DIRS)
        # One relative path per folder, not per file: a folder of 200 000 images spent seconds in relpath.
        rel = Path(os.path.relpath(dirpath, root)).as_posix()
        # Sorted, so a flat class folder lists in manifest order and building the manifest needs no sort.
        for name in sorted(filenames):
            if not name.startswith(".") and _is_image(name):
                out.append((f"{rel}/{name}", f"{dirpath}{os.sep}{name}"))
    return out


def _check_names(root: Path, ids: list[str]) -> None:
    """Image ids (relative paths, class names included) must be valid UTF-8: they are stored as text in every
    cache format, and Python keeps undecodable bytes of a file name as surrogates that no format can store."""
    bad = []
    for rid in ids:
        if not rid.isascii():
            try:
                rid.encode("utf-8")
            except UnicodeEncodeError:
                bad.append(repr(os.fsencode(rid))[2:-1])
    if bad:
        raise SourceError(
            f"{root} holds {len(bad)} file or folder name(s) that are not valid UTF-8 ({_listing(bad)}); rename "
            "them (e.g. `convmv -f latin1 -t utf-8 -r --notest FOLDER`)."
        )


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def folder_manifest(root: Path, progress=None, reads: FileReads | None = None) -> Manifest:
    """``root/<class>/<image>`` or ``root/{train,val|validation,test}/<class>/<image>``; files are read by
    ``reads`` (default: a plain FileReads)."""
    top = _visible_dirs(root)
    split_dirs = [e for e in top if e.name.lower() in SPLIT_ALIASES]
    if split_dirs:
        others = [e.name for e in top if e.name.lower() not in SPLIT_ALIASES]
        if others:
            raise SourceError(
                f"{root} mixes split folders ({', '.join(e.name for e in split_dirs)}) with other folders "
                f"({_listing(others)}); put every class folder inside train/, val/ or test/."
            )
        seen: dict[str, str] = {}
        for e in split_dirs:
            split = SPLIT_ALIASES[e.name.lower()]
            if split in seen:
                raise SourceError(
                    f"{root} has both {seen[split]}/ and {e.name}/ as the {split} split; merge them into one folder."
                )
            seen[split] = e.name
        layout = [(SPLIT_ALIASES[e.name.lower()], Path(e.path)) for e in split_dirs]
    else:
        layout = [("train", root)]

    found = []  # (split, class name, id, path)
    for split, base in layout:
        classes = _visible_dirs(base)
        stray = _stray_images(base)
        if stray:
            raise SourceError(
                f"{base} holds images outside class folders ({_listing(stray)}); "
                f"move each image into {base}/<class name>/, or remove them."
            )
        if not classes:
            if base == root:
                raise SourceError(
                    f"{root} has no class folders; expected {root}/<class>/<image> "
                    f"or {root}/train/<class>/<image> (or pass a .h5, .npz, .npy folder, IDX folder or .csv)."
                )
            continue  # an empty split folder is simply an absent split
        for c in classes:
            images = _images_under(Path(c.path), root)
            if not images:
                raise SourceError(
                    f"class folder {c.path} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                    "add images or remove the folder."
                )
            found.extend((split, c.name, rel, full) for rel, full in images)
    if not found:
        raise SourceError(f"{root} has split folders but no class folders with images inside them.")
    _check_names(root, [f[2] for f in found])
    class_names = sorted({f[1] for f in found})
    label = {c: i for i, c in enumerate(class_names)}
    hashes = (reads or FileReads()).hash_all([f[3] for f in found], progress)
    return _file_manifest(found, label, hashes, class_names, str(root), "folders")


_PATH_COLS = ("path", "file", "filename", "file_name", "image", "image_path", "filepath")
_LABEL_COLS = ("label", "class", "class_name", "target", "category")
_SPLIT_COLS = ("split", "subset", "set")


def _csv_columns(first_row: list[str], folder: Path) -> tuple[dict | None, bool]:
    """Column positions from a header row, or positional ones when the first row is data."""
    # A header's first cell is neither an existing file nor an image name; a data row with a mistyped path still
    # ends in an image extension and is reported as a missing file instead.
    first = first_row[0].strip()
    if _is_image(first) or (folder / first).is_file():
        return {"path": 0, "label": 1, "split": 2 if len(first_row) > 2 else None}, False
    cells = [c.strip().lower() for c in first_row]
    cols = {}
    for key, names in (("path", _PATH_COLS), ("label", _LABEL_COLS), ("split", _SPLIT_COLS)):
        cols[key] = next((i for i, c in enumerate(cells) if c in names), None)
    if cols["path"] is None or cols["label"] is None:
        raise SourceError(
            f"CSV header {first_row} needs a path column ({'|'.join(_PATH_COLS)}) and a label column "
            f"({'|'.join(_LABEL_COLS)}); rename the header or drop it to use path,label[,split] order."
        )
    return cols, True


def csv_manifest(csv_path: Path, progress=None, reads: FileReads | None = None) -> Manifest:
    """A CSV of ``path,label[,split]``: paths relative to the CSV's folder, labels as class names,
    split train|val|validation|test (default train); a header row is detected and may name the columns."""
    folder = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = [(n, r) for n, r in enumerate(csv.reader(fh), start=1) if r and any(c.strip() for c in r)]
    except UnicodeDecodeError as exc:
        line = csv_path.read_bytes()[: exc.start].count(b"\n") + 1
        raise SourceError(
            f"CSV {csv_path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); save it as "
            f"UTF-8, e.g. `iconv -f latin1 -t utf-8 {csv_path.name} > fixed.csv`."
        ) from None
    if not rows:
        raise SourceError(f"CSV {csv_path} is empty; write one row per image: path,label[,split].")
    cols, has_header = _csv_columns(rows[0][1], folder)
    if has_header:
        rows = rows[1:]
    found, missing, first_line = [], [], {}
    for line, r in rows:

        def cell(key, r=r):
            i = cols[key]
            return r[i].strip() if i is not None and i < len(r) else ""

        rel, label, split_raw = cell("path"), cell("label"), cell("split") or "train"
        if not rel or not label:
            raise SourceError(
                f"{csv_path} line {line}: {r} needs a path and a label; fill both cells or remove the row."
            )
        split = SPLIT_ALIASES.get(split_raw.lower())
        if split is None:
            raise SourceError(
                f"{csv_path} line {line}: split {split_raw!r} is not allowed; use train, val (or validation) or test."
            )
        full = (folder / rel).resolve()
        if not full.is_file():
            missing.append(f"line {line}: {rel}")
            continue
        try:
            rid = full.relative_to(folder.resolve()).as_posix()
        except ValueError:  # outside the CSV's folder: the absolute path is the only stable name
            rid = full.as_posix()
        if rid in first_line:
            raise SourceError(
                f"{csv_path}: {rel} is listed twice (lines {first_line[rid]} and {line}); keep one row per image."
            )
        first_line[rid] = line
        found.append((split, label, rid, str(full)))
    if missing:
        raise SourceError(
            f"{csv_path} lists {len(missing)} file(s) that do not exist ({_listing(missing)}); "
            f"paths are relative to {folder}. Fix the paths or remove the rows."
        )
    if not found:
        raise SourceError(
            f"CSV {csv_path} has a header but no rows; add one row per image: path,label[,split]."
        )
    class_names = sorted({f[1] for f in found})
    index = {c: i for i, c in enumerate(class_names)}
    hashes = (reads or FileReads()).hash_all([f[3] for f in found], progress)
    return _file_manifest(found, index, hashes, class_names, str(csv_path), "csv")


def _file_manifest(found, label_of: dict, hashes, class_names, source: str, kind: str) -> Manifest:
    """(split, class name, id, path) per file and its hash -> the manifest, built column by column."""
    if len(hashes) != len(found):
        raise ValueError("one hash per file expected")
    code = {s: i for i, s in enumerate(SPLIT_ORDER)}
    split, cls, ids, paths = zip(*found, strict=True)
    return build_manifest(
        class_names,
        source,
        kind,
        split=np.fromiter((code[s] for s in split), np.uint8, len(split)),
        label=np.fromiter((label_of[c] for c in cls), np.int32, len(cls)),
        id=ids,
        hash=hashes,
        path=paths,
    )
