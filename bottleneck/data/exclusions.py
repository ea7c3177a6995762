"""Exclusion lists (``extract --exclude FILE``): a CSV with an ``id`` column, such as ``inspect``'s leaks.csv,
near_duplicates.csv or label_errors.csv; the rows with those ids are left out of the manifest before extraction."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bottleneck.callbacks import Notify
from bottleneck.data.manifest import Manifest
from bottleneck.errors import SourceError

ID_COLUMN = "id"
_NAMED = 5  # unknown ids named in the notice


def read_exclusions(path) -> list[str]:
    """The distinct ids of the ``id`` column of the CSV ``path``, sorted. One-line SourceError for a file that
    cannot be read or has no ``id`` column."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block the open, a folder says nothing useful
        raise SourceError(
            f"exclude={str(path)!r} is not a regular file; pass a CSV file with an {ID_COLUMN!r} column."
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            if ID_COLUMN not in columns:
                shown = ", ".join(repr(c) for c in columns[:8]) or "none"
                raise SourceError(
                    f"exclude={str(path)!r} has no {ID_COLUMN!r} column (its columns: {shown}); pass a CSV whose "
                    f"header has an {ID_COLUMN!r} column, such as `bottleneck inspect`'s leaks.csv or "
                    "label_errors.csv."
                )
            ids = {row[ID_COLUMN] for row in reader if row.get(ID_COLUMN)}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise SourceError(
            f"exclude={str(path)!r} cannot be read as a CSV ({why}); pass a CSV file with an {ID_COLUMN!r} column."
        ) from None
    return sorted(ids)


def exclusions_digest(ids: Iterable[str]) -> str:
    """The sha256 of a list of excluded ids (sorted, distinct): what the cache key records of the list."""
    blob = "\n".join(sorted(set(map(str, ids)))).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def exclude_ids(manifest: Manifest, ids: Iterable[str], notify: Notify | None = None) -> Manifest:
    """``manifest`` without the items whose id is in ``ids``; ids the source does not have are counted and
    named through ``notify`` (they exclude nothing)."""
    wanted = set(map(str, ids))
    present = manifest.id.tolist()
    drop = np.flatnonzero(np.fromiter((i in wanted for i in present), dtype=bool, count=len(present)))
    unknown = sorted(wanted - set(present))
    if unknown and notify:
        named = ", ".join(unknown[:_NAMED]) + (", ..." if len(unknown) > _NAMED else "")
        notify(
            f"--exclude: {len(unknown)} of {len(wanted)} ids are not in the source (nothing left out for them): {named}"
        )
    if notify and len(drop):
        notify(f"--exclude: left out {len(drop)} image(s) of the source.")
    return manifest.without(drop) if len(drop) else manifest
