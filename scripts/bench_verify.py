"""What checking every read against its checksum costs, beside what it protects: a logreg fit on the same cache.

For a cache (default: Fashion-MNIST, all 70 000 images, extracted with the default backbone into --cache-dir
when not there yet), side by side in one run, each timed --repeats times (medians):

  raw read        every split's features read whole without the checks (the store's own reads)
  checked read    the same through ``Cache.features`` as heads read them: every region hashed and compared
  logreg fit      ``fit_head(cache, "logreg")``, which reads through the checks itself

and prints the checks' cost (checked - raw) as a share of the fit (target: at most 10 %).

  python scripts/bench_verify.py [--cache CACHE | --source /usr/share/datasets/fashion-mnist] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import bottleneck


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_all(path: Path, verify: bool) -> int:
    """Bytes of every split's features read whole, with or without the checks (a fresh Cache: nothing known)."""
    cache = bottleneck.open_cache(path)
    total = 0
    for split in cache.splits:
        total += np.asarray(cache.features(split, verify=verify)[:]).nbytes
    cache.close()
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, help="A cache folder (default: extract --source first).")
    p.add_argument("--source", default="/usr/share/datasets/fashion-mnist", help="Source to extract.")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"), help="Where to extract it.")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    path = args.cache
    if path is None:
        t0 = time.perf_counter()
        result = bottleneck.extract(args.source, cache_dir=args.cache_dir)
        path = result.path
        print(f"cache {path} ({'hit' if result.hit else 'extracted'} in {time.perf_counter() - t0:.1f} s)")
    nbytes = read_all(path, verify=False)  # warm the page cache for both
    raw = timed(lambda: read_all(path, verify=False), args.repeats)
    checked = timed(lambda: read_all(path, verify=True), args.repeats)
    fit = timed(lambda: bottleneck.fit_head(path, "logreg", save=False), max(1, args.repeats // 2))
    cost = checked - raw
    print(f"features:      {nbytes / 1e6:.0f} MB")
    print(f"raw read:      {raw:.2f} s")
    print(f"checked read:  {checked:.2f} s   (hashing {nbytes / 1e6 / max(cost, 1e-9):.0f} MB/s)")
    print(f"logreg fit:    {fit:.2f} s")
    print(f"checks / fit:  {cost / fit:.1%}   (target <= 10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
