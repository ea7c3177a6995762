"""`cache export` and `similar` on synthetic caches of growing size: seconds and peak RSS (each run in a fresh
process). The caches are written chunk by chunk (commits of 1024 rows, as extraction commits), never whole.

    python scripts/bench_export.py --rows 50000 200000 --dim 512 --work /tmp/bench-export
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNK = 1024


def make(path: Path, n: int, dim: int) -> None:
    from bottleneck.cache import CacheWriter
    from bottleneck.config import ExtractConfig
    from bottleneck.data.manifest import Manifest

    names = [f"c{i}" for i in range(10)]
    writer = CacheWriter(
        path, key=f"{n:064d}", key_material={}, config=ExtractConfig(backbone="arrays", weights="none"),
        class_names=names, manifest=Manifest([], [], [], [], names, "", "arrays"), skipped=[],
    )  # fmt: skip
    rng = np.random.default_rng(0)
    writer.create_split(
        "train", n, (dim,), "float32", np.arange(n) % 10, [f"train/{i}" for i in range(n)], CHUNK
    )
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        writer.write("train", a, rng.normal(size=(b - a, dim)).astype(np.float32))
        writer.commit("train", b)
    writer.finish()


def one(kind: str, cache: str, out: str) -> None:
    t = time.perf_counter()
    if kind == "similar":
        from bottleneck.inspection import find_similar

        find_similar(cache, id="train/7", k=10)
    else:
        from bottleneck.cache.export import export_cache

        export_cache(cache, out, to=kind)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(time.perf_counter() - t, 2), "peak_rss_mb": round(rss)}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-export"))
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(*args.one)
    for n in args.rows:
        shutil.rmtree(args.work, ignore_errors=True)
        make(args.work / "cache", n, args.dim)
        for kind in ("parquet", "npy", "similar"):
            cmd = [sys.executable, __file__, "--one", kind, str(args.work / "cache"), str(args.work / kind)]
            r = json.loads(
                subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
            )
            print(
                f"{n:>8} rows x {args.dim}  {kind:<8} {r['seconds']:>6.2f} s  peak RSS {r['peak_rss_mb']} MB"
            )
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
