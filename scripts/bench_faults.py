"""Fault injection: damage small real caches in every way a disk, a tool or a person can, and tally what happens.

For each store format (zarr, zarr sharded, npy, h5) a cache is extracted once (the ``pixels`` backbone over
generated noise PNGs with train/val/test splits, several chunks per split), then for each corruption a copy of
it is damaged and used the way users use a cache:

  fit-head    ``fit_head`` on the damaged cache: a one-line CacheError (detected), the same metrics as on the
              undamaged cache (correct), an exception of another kind (crash) or other metrics (SILENT: wrong
              bytes handed out without a word, the one outcome that must never happen)
  verify      ``verify_cache``: does it report the damage?
  extract     the same ``extract`` again: never a hit on damage; the cache it leaves must equal the undamaged one
              (features, labels, ids), and ``computed`` says how many rows had to be computed again

  python scripts/bench_faults.py [--work DIR] [--formats zarr,zarr-sharded,npy,h5]

The test suite runs the same catalogue (tests/test_faults.py); this script prints the tally.

  python scripts/bench_faults.py --cli [--only fit-head,inspect] [--bound 120]

runs the fuzz sweep of every command instead (scripts/cli_sweep.py; tests/test_cli_sweep.py runs it too): every
option and path argument given values a careless or hostile user would type, with user files planted where
output paths point, and the tally of tracebacks, hangs, silent no-ops and user files lost (target: 0 of each).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import bottleneck
from bottleneck.errors import BottleneckError, CacheError

CLASSES = ("ant", "bee", "cow")
PER_SPLIT = {"train": 140, "val": 20, "test": 20}  # per class: 420 train rows, 4 chunks of 128
SETTINGS = {"backbone": "pixels", "image_size": 16, "batch_size": 2}  # 128 rows per chunk (64 batches)
FORMATS = {
    "zarr": {"format": "zarr"},
    "zarr-sharded": {"format": "zarr", "shard_rows": 256},
    "npy": {"format": "npy"},
    "h5": {"format": "h5"},
}


def make_source(root: Path, seed: int = 0) -> Path:
    """Noise PNGs, 16x16, in root/<split>/<class>/: each image distinct, each class a little brighter."""
    rng = np.random.default_rng(seed)
    for split, n in PER_SPLIT.items():
        for k, cls in enumerate(CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 160, (16, 16, 3)) + 40 * k
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


# -- the corruptions ------------------------------------------------------------------------------------------------
def _feature_file(cache: Path, fmt: str, split: str = "train", chunk: int = 1) -> Path:
    """The file holding a split's features: a zarr chunk (or shard) object, the .npy, or the .h5."""
    if fmt == "zarr":
        return cache / "features.zarr" / split / "features" / "c" / str(chunk) / "0"
    return cache / "npy" / split / "features.npy" if fmt == "npy" else cache / "features.h5"


def _flip(path: Path, keep_mtime: bool = False) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(len(data), middle + 16)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    if keep_mtime:  # as silent disk corruption would: nothing but the bytes changed
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _truncate(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size * 6 // 10)


def _delete(cache: Path, fmt: str) -> None:
    if fmt == "h5":
        import h5py

        with h5py.File(cache / "features.h5", "a") as f:
            del f["train/features"]
    else:
        _feature_file(cache, fmt).unlink()


def _edit_column(cache: Path, fmt: str, name: str) -> None:
    """Labels: the first train row gets another class. Ids: the first two train ids swap."""

    def edited(values):
        values = np.array(values)
        if name == "labels":
            values[0] = (values[0] + 1) % len(CLASSES)
        else:
            values[[0, 1]] = values[[1, 0]]
        return values

    if fmt == "zarr":
        import zarr

        arr = zarr.open_group(str(cache / "features.zarr"), mode="r+")[f"train/{name}"]
        arr[:] = edited(arr[:])
    elif fmt == "npy":
        path = cache / "npy" / "train" / f"{name}.npy"
        np.save(path, edited(np.load(path)))
    else:
        import h5py

        with h5py.File(cache / "features.h5", "a") as f:
            ds = f[f"train/{name}"]
            values = ds.asstr()[:] if name == "ids" else ds[:]
            ds[:] = edited(values)


def _edit_meta(cache: Path, change) -> None:
    path = cache / "meta.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(change(meta)))


def _rows_edit(meta):
    meta["splits"]["train"]["n"] -= 1
    return meta


def _names_edit(meta):
    meta["class_names"] = meta["class_names"][::-1]
    return meta


CORRUPTIONS = {
    "chunk deleted": _delete,
    "chunk truncated": lambda c, fmt: _truncate(_feature_file(c, fmt)),
    "bytes flipped": lambda c, fmt: _flip(_feature_file(c, fmt)),
    "bytes flipped, mtime kept": lambda c, fmt: _flip(_feature_file(c, fmt), keep_mtime=True),
    "labels edited": lambda c, fmt: _edit_column(c, fmt, "labels"),
    "ids edited": lambda c, fmt: _edit_column(c, fmt, "ids"),
    "row count edited": lambda c, fmt: _edit_meta(c, _rows_edit),
    "class names edited": lambda c, fmt: _edit_meta(c, _names_edit),
    "meta.json emptied": lambda c, fmt: (c / "meta.json").write_text("{}"),
    "meta.json a list": lambda c, fmt: (c / "meta.json").write_text("[]"),
    "manifest truncated": lambda c, fmt: _truncate(c / "manifest.npz"),
}


# -- one trial ------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    fmt: str
    corruption: str
    fit: str  # detected | correct | crash | SILENT
    message: str  # the error's text (detected, crash)
    verify_ok: bool  # True when verify_cache saw nothing wrong
    hit: bool  # the extract after the damage was a hit
    repaired: bool  # that extract's cache equals the undamaged one
    computed: int  # rows it computed again
    rows: int  # rows in the cache


def snapshot(cache) -> dict:
    """Every split's features, labels and ids, read through the checks (a damaged cache raises)."""
    return {
        s: (np.asarray(cache.features(s)[:]), cache.labels(s), cache.ids(s).tolist()) for s in cache.splits
    }


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[s][0], b[s][0]) and np.array_equal(a[s][1], b[s][1]) and a[s][2] == b[s][2]
        for s in a
    )


class Reference:
    """The undamaged cache of one format: its folder, contents and fitted metrics."""

    def __init__(self, source: Path, work: Path, fmt: str):
        self.source, self.fmt = source, fmt
        self.options = {**SETTINGS, **FORMATS[fmt]}
        self.store = "zarr" if fmt.startswith("zarr") else fmt
        result = bottleneck.extract(source, cache_dir=work / f"ref-{fmt}", **self.options)
        self.path = result.path
        self.contents = snapshot(result.cache)
        self.metrics = bottleneck.fit_head(self.path, "logreg", save=False).summary["metrics"]
        self.rows = sum(result.cache.n(s) for s in result.cache.splits)


def trial(ref: Reference, corruption: str, work: Path) -> Outcome:
    """Damage a copy of ``ref``'s cache with ``corruption`` and use it: fit, verify, extract again."""
    from bottleneck.cache.manage import verify_cache

    cache_dir = work / f"{ref.fmt}-{corruption.replace(' ', '-').replace(',', '')}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = cache_dir / ref.path.name
    shutil.copytree(ref.path, cache)  # copy2: times kept, so the copy's witness still matches
    CORRUPTIONS[corruption](cache, ref.store)

    try:
        metrics = bottleneck.fit_head(cache, "logreg", save=False).summary["metrics"]
        fit, message = ("correct" if metrics == ref.metrics else "SILENT"), ""
    except CacheError as exc:
        fit, message = "detected", str(exc)
    except Exception as exc:  # what the tally calls a crash: a traceback for the user
        fit, message = "crash", f"{type(exc).__name__}: {exc}"
    try:
        verify_ok = verify_cache(cache).ok
    except BottleneckError:
        verify_ok = False
    result = bottleneck.extract(ref.source, cache_dir=cache_dir, **ref.options)
    repaired = same(snapshot(result.cache), ref.contents)
    return Outcome(
        ref.fmt, corruption, fit, message, verify_ok, result.hit, repaired, result.computed, ref.rows
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one).")
    p.add_argument("--formats", default=",".join(FORMATS), help="Comma-separated: " + ", ".join(FORMATS))
    p.add_argument(
        "--cli",
        action="store_true",
        help="Instead: the fuzz sweep of every command's options (scripts/cli_sweep.py), with user files planted "
        "where output paths point; prints the tally of tracebacks, hangs, silent no-ops and files lost.",
    )
    args, rest = p.parse_known_args(argv)
    if args.cli:
        import cli_sweep

        return cli_sweep.main(rest + (["--work", str(args.work)] if args.work else []))
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-faults-"))
    source = make_source(work / "source")
    outcomes = []
    t0 = time.perf_counter()
    for fmt in args.formats.split(","):
        ref = Reference(source, work, fmt)
        for corruption in CORRUPTIONS:
            o = trial(ref, corruption, work)
            outcomes.append(o)
            print(
                f"{fmt:<13} {corruption:<26} fit {o.fit:<9} verify {'ok' if o.verify_ok else 'BAD':<4} "
                f"extract {'hit' if o.hit else 'miss':<4} {'repaired' if o.repaired else 'NOT REPAIRED'} "
                f"({o.computed}/{o.rows} rows computed)"
            )
    tally = {k: sum(o.fit == k for o in outcomes) for k in ("detected", "correct", "crash", "SILENT")}
    one_line = sum(o.fit == "detected" and "\n" not in o.message for o in outcomes)
    print()
    print(f"corruptions tried:              {len(outcomes)}")
    print(f"detected (one-line error):      {tally['detected']} ({one_line} on one line)")
    print(f"result still correct:           {tally['correct']}")
    print(f"crashed (not a one-line error): {tally['crash']}")
    print(f"silently accepted:              {tally['SILENT']}   (target 0)")
    print(f"verify missed damage:           {sum(o.verify_ok and o.fit != 'correct' for o in outcomes)}")
    print(f"extract was a hit on damage:    {sum(o.hit and o.fit != 'correct' for o in outcomes)}")
    print(f"not repaired by extract:        {sum(not o.repaired for o in outcomes)}")
    print(f"seconds:                        {time.perf_counter() - t0:.1f}")
    return 0 if tally["SILENT"] == 0 and tally["crash"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
