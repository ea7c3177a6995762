"""Ownership of the folders bottleneck writes: the sealed record of a folder's files, what may be replaced or
collected, moving aside, folders built whole (``atomic_dir``), cache roots."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from bottleneck import __version__
from bottleneck._io import file_hash, fsync_path, seal_of, temp_path, write_json_atomic
from bottleneck.errors import BottleneckError

# Every folder bottleneck writes (run folders, comparisons, pages, inspections, SavedModels, advice) carries this
# sealed record of the files it wrote and their digests. A folder is replaced only when the record is valid and
# accounts for every file in it: a marker file such as metrics.json proves nothing (a user's project folder may
# hold one), and a file added or edited by the user since makes the folder theirs again.
RECORD = ".bottleneck-owned.json"
RECORD_FORMAT = 1
# Written first into a folder being built: a hidden sibling holding it is a killed writer's leftover.
BUILDING = ".bottleneck-building"
ASIDE = ".replaced-"  # `force`: the old folder moves to "<name>.replaced-<time>" beside it, never deleted
_SHOWN = 5  # unknown files named in a refusal
_LEFTOVER_AGE_S = 3600.0


def _files_of(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under ``root`` but the record itself."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if rel not in (RECORD, BUILDING) and full.is_file() and not full.is_symlink():
                out[rel] = file_hash(full)
    return out


def write_record(folder, kind: str, *, record_id: str | None = None) -> dict:
    """Seal the record of ``folder`` as it is now (every file and its digest) and write it in the folder."""
    folder = Path(folder)
    record = {
        "format": RECORD_FORMAT,
        "writer": "bottleneck",
        "version": __version__,
        "kind": kind,
        "id": record_id or uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": _files_of(folder),
    }
    record["seal"] = seal_of(record)
    write_json_atomic(folder / RECORD, record, indent=None)
    return record


def read_record(folder) -> dict | None:
    """The record of ``folder`` when it is present, parses and its seal matches; None otherwise."""
    try:
        record = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("format") != RECORD_FORMAT
        or not isinstance(record.get("files"), dict)
        or record.get("seal") != seal_of(record)
    ):
        return None
    return record


def ownership_problem(folder) -> str | None:
    """Why bottleneck may not replace or delete the folder ``folder`` (a sentence), or None when its sealed record
    accounts for every file in it, unchanged (a subfolder with a valid record of its own counts as ours)."""
    folder = Path(folder)
    if (folder / RECORD).exists() and not (folder / RECORD).is_file():
        return f"its {RECORD} is not a file"
    record = read_record(folder)
    if record is None:
        if not (folder / RECORD).exists():
            return f"it has no record of files bottleneck wrote ({RECORD})"
        return f"its record {RECORD} was edited or damaged"
    listed = record["files"]
    unknown, changed = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        for name in list(dirnames):
            sub = here / name
            if sub.is_symlink():
                unknown.append(sub.relative_to(folder).as_posix() + "/")
                dirnames.remove(name)
            elif (sub / RECORD).is_file() and ownership_problem(sub) is None:
                dirnames.remove(name)  # a folder of ours inside (a run's report/): checked by its own record
        for name in filenames:
            full = here / name
            rel = full.relative_to(folder).as_posix()
            if rel == RECORD:
                continue
            if full.is_symlink() or not full.is_file():
                unknown.append(rel)
            elif rel not in listed:
                if not proven_by_sidecar(full):
                    unknown.append(rel)
            elif file_hash(full) != listed[rel]:
                changed.append(rel)
    if unknown:
        more = f" (+{len(unknown) - _SHOWN} more)" if len(unknown) > _SHOWN else ""
        return f"it holds files bottleneck did not write: {', '.join(sorted(unknown)[:_SHOWN])}{more}"
    if changed:
        return f"files changed since bottleneck wrote them: {', '.join(sorted(changed)[:_SHOWN])}"
    return None


def sidecar_record(path) -> dict | None:
    """The sealed sidecar ``<path>.json`` of a file or folder bottleneck exported, when it is valid and records
    ``path``'s sha256 as it is now; None otherwise."""
    path = Path(path)
    try:
        record = json.loads(path.with_name(path.name + ".json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or "sha256" not in record or record.get("seal") != seal_of(record):
        return None
    try:
        return record if file_hash(path) == record["sha256"] else None
    except OSError:
        return None


def proven_by_sidecar(f: Path) -> bool:
    """Whether the file ``f`` is an export of bottleneck's (its sealed sidecar records its digest) or such an
    export's sidecar: what an export written later into a folder of ours (a run's export/) leaves there."""
    if sidecar_record(f) is not None:
        return True
    model = f.with_name(f.name[: -len(".json")]) if f.name.endswith(".json") else None
    return model is not None and model.exists() and sidecar_record(model) is not None


def replace_problem(path) -> str | None:
    """Why ``path`` may not be replaced by a folder bottleneck writes, or None (absent, empty, or wholly ours)."""
    path = Path(path)
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.exists():
        return None
    if not path.is_dir():
        return "it is a file, not a folder"
    try:
        if not any(path.iterdir()):
            return None
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    return ownership_problem(path)


def aside_path(path) -> Path:
    """Where ``force`` moves an existing ``path``: a visible sibling named with the time, never over anything."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, i = path.with_name(f"{path.name}{ASIDE}{stamp}"), 2
    while candidate.exists() or candidate.is_symlink():
        candidate, i = path.with_name(f"{path.name}{ASIDE}{stamp}-{i}"), i + 1
    return candidate


def check_out(path, *, force: bool = False, param: str = "out") -> None:
    """Refuse, before any work, an output folder bottleneck may not replace (see ``replace_problem``), unless
    ``force``: then the old one will be moved aside when the new one is whole. One line naming the problem."""
    path = Path(path)
    problem = replace_problem(path)
    if problem is None or force:
        return
    raise BottleneckError(
        f"refusing to replace {path}: {problem}. Pass another {param}=FOLDER, or force=True to move it aside "
        f"(to {path.name}{ASIDE}<time>) and write a new one."
    )


def collect_leftovers(path) -> list[Path]:
    """Remove what killed writers of ``path`` left beside it: hidden ``.<name>.<pid>.tmp*`` folders that hold
    bottleneck's building mark or record, whose process is gone (or that are over an hour old)."""
    path = Path(path)
    removed = []
    try:
        siblings = list(path.parent.glob(f".{_glob_escape(path.name)}.*.tmp*"))
    except OSError:
        return removed
    for d in siblings:
        if d.is_symlink() or not d.is_dir() or not is_leftover_dir(d):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _pid_of(d: Path) -> int | None:
    parts = d.name.rsplit(".tmp", 1)[0].rsplit(".", 1)
    return int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else None


def is_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_leftover_dir(d: Path) -> bool:
    """Whether the hidden folder ``d`` is a killed bottleneck writer's: it carries the building mark (or a valid
    record: a replaced folder not yet deleted) and its process is gone or it is over an hour old."""
    ours = (d / BUILDING).is_file() or read_record(d) is not None
    if not ours:
        return False
    try:
        old = time.time() - d.lstat().st_mtime > _LEFTOVER_AGE_S
    except OSError:
        return False
    return old or not is_alive(_pid_of(d))


@contextmanager
def atomic_dir(path, kind: str, *, force: bool = False, notify: Callable[[str], None] | None = None):
    """Build a folder in a hidden sibling (yielded) and rename it to ``path`` when the block ends without error:
    readers see the old folder or the whole new one, never half of it. The new folder gets its sealed record
    (kind ``kind``: "run", "page", ...).

    An existing ``path`` is replaced only when it is empty or wholly ours (``replace_problem``): anything else is
    refused with one line before the block runs, so ``--out ~/Desktop`` can never replace someone's folder. With
    ``force`` such a folder is moved aside (``aside_path``, told through ``notify``) once the new one is whole."""
    path = Path(path)
    check_out(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    collect_leftovers(path)
    tmp = temp_path(path)
    if tmp.exists() and is_leftover_dir(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    record_id = uuid.uuid4().hex
    (tmp / BUILDING).write_text(record_id)
    try:
        yield tmp
        (tmp / BUILDING).unlink()
        write_record(tmp, kind, record_id=record_id)
        _fsync_tree(tmp)
        put_in_place(tmp, path, force=force, notify=notify)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def put_in_place(tmp: Path, path: Path, *, force: bool = False, notify=None) -> None:
    """Rename the whole folder ``tmp`` to ``path``: an existing ``path`` of ours is replaced (deleted after the
    rename), any other is refused, or moved aside with ``force``."""
    if not (path.exists() or path.is_symlink()):
        os.replace(tmp, path)
        return
    problem = replace_problem(path)  # again: the folder may have changed while the work ran
    if problem is not None:
        if not force:
            check_out(path)  # raises
        aside = aside_path(path)
        os.replace(path, aside)
        os.replace(tmp, path)
        if notify:
            notify(f"{path} was not bottleneck's ({problem}): moved it aside to {aside}.")
        return
    if path.is_dir() and any(path.iterdir()):
        old = temp_path(path, ".old")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rmdir(path)
        os.replace(tmp, path)


def reseal(folder, names) -> None:
    """Record again the digests of the files ``names`` (relative) that bottleneck itself just wrote into a folder
    of ours (a fine-tuned run's metrics.json rewritten at the end); every other entry is kept as it was, so a
    file someone else added since stays unknown."""
    folder = Path(folder)
    record = read_record(folder)
    if record is None:
        raise BottleneckError(f"{folder} has no valid {RECORD}; it is not a folder bottleneck wrote.")
    for name in names:
        full = folder / name
        if full.is_file():
            record["files"][Path(name).as_posix()] = file_hash(full)
        else:
            record["files"].pop(Path(name).as_posix(), None)
    record["seal"] = seal_of(record)
    write_json_atomic(folder / RECORD, record, indent=None)


# A folder of folders bottleneck manages (a cache root): its own sealed record says so, so `cache gc` never
# collects in a folder that merely holds names that look like ours.
ROOT_RECORD = ".bottleneck-root.json"


def mark_root(folder, kind: str) -> None:
    """Create ``folder`` if needed and give it the sealed record of a ``kind`` root ("cache root"), once."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if root_problem(folder, kind) is None:
        return
    if (folder / ROOT_RECORD).exists():
        return  # an edited or foreign record is not replaced: gc stays refused there until a person looks
    record = {"format": RECORD_FORMAT, "writer": "bottleneck", "kind": kind, "id": uuid.uuid4().hex}
    record["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record["seal"] = seal_of(record)
    write_json_atomic(folder / ROOT_RECORD, record, indent=None)


def root_problem(folder, kind: str) -> str | None:
    """Why ``folder`` is not a ``kind`` root by its own record (a sentence), or None."""
    try:
        record = json.loads((Path(folder) / ROOT_RECORD).read_text())
    except FileNotFoundError:
        return f"it has no {ROOT_RECORD} (the record `bottleneck extract` writes in a cache folder)"
    except (OSError, ValueError, UnicodeDecodeError):
        return f"its {ROOT_RECORD} cannot be read"
    if not isinstance(record, dict) or record.get("seal") != seal_of(record):
        return f"its {ROOT_RECORD} was edited or damaged"
    if record.get("kind") != kind:
        return f"its {ROOT_RECORD} is of a {record.get('kind')!r}, not a {kind}"
    return None


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (the folders last: what makes the names durable), so that a
    folder renamed into place after it is whole and on disk too, not only in the page cache."""
    folders = []
    for dirpath, _, filenames in os.walk(root):
        folders.append(dirpath)
        for name in filenames:
            fsync_path(os.path.join(dirpath, name))
    if os.name != "nt":  # Windows cannot open folders
        for folder in reversed(folders):
            fsync_path(folder)
