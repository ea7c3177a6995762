"""Benchmark heads on feature caches: the script form of `bottleneck compare`.

  python scripts/compare_heads.py cache/efficientnet_lite0-3f9a2c1d cache/vgg16-0c1d2e3f --heads logreg,linear,mlp
  python scripts/compare_heads.py CACHE --heads linear,mlp --seeds 3 --param epochs=20 --param mlp.width=512
  python scripts/compare_heads.py --synthetic --rows 54000 --dim 1280 --classes 10       # time the heads alone
  python scripts/compare_heads.py --synthetic --rows 54000 --heads linear --param in_memory=false  # streaming

Prints the markdown table (mean ± std over seeds) and saves it with a CSV, a JSON and a plot under --out.
Uses only the public API: bottleneck.runs.comparison and bottleneck.cache.write_arrays.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_cache(path: Path, rows: int, dim: int, classes: int, seed: int = 0):
    """Gaussian classes in a random low-dimensional subspace plus noise: learnable, not trivially separable,
    with the sizes of real bottleneck features (train rows, 10% val, 1/6 of train as test)."""
    from bottleneck.cache import write_arrays
    from bottleneck.config import ExtractConfig

    rng = np.random.default_rng(seed)
    # Scaled so class means are ~5 apart against noise of std 1.5 per feature: roughly 90% accuracy for a linear head.
    centers = 0.1 * rng.normal(size=(classes, 32)) @ rng.normal(size=(32, dim)) / np.sqrt(32)

    def split(n):
        y = np.arange(n) % classes
        x = (centers[y] + 1.5 * rng.normal(size=(n, dim))).astype(np.float32)
        return x, y

    splits = {
        "train": split(rows),
        "val": split(max(classes, rows // 10)),
        "test": split(max(classes, rows // 6)),
    }
    config = ExtractConfig(backbone="synthetic", weights="none")
    return write_arrays(path, splits, class_names=[f"class{i}" for i in range(classes)], config=config)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("caches", nargs="*", type=Path, help="cache folders made by `bottleneck extract`")
    p.add_argument("--heads", default="logreg,linear,mlp")
    p.add_argument("--seeds", type=int, default=1, help="repeat every fit with seeds 0..N-1")
    p.add_argument("--param", action="append", default=[], help="KEY=VALUE or HEAD.KEY=VALUE (JSON values)")
    p.add_argument("--out", type=Path, default=Path("runs") / "compare-heads")
    p.add_argument("--synthetic", action="store_true", help="benchmark on a generated cache instead")
    p.add_argument("--rows", type=int, default=20000, help="synthetic train rows")
    p.add_argument("--dim", type=int, default=1280, help="synthetic feature length")
    p.add_argument("--classes", type=int, default=10, help="synthetic classes")
    args = p.parse_args(argv)

    from bottleneck.errors import BottleneckError
    from bottleneck.runs import compare, parse_params

    heads = [h for h in args.heads.split(",") if h]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            caches = list(args.caches)
            if args.synthetic:
                t = time.perf_counter()
                caches.append(
                    synthetic_cache(Path(tmp) / "synthetic", args.rows, args.dim, args.classes).path
                )
                print(
                    f"synthetic cache: {args.rows} x {args.dim}, {args.classes} classes ({time.perf_counter() - t:.1f} s)"
                )
            if not caches:
                p.error("pass cache folders or --synthetic")
            t = time.perf_counter()
            result = compare(
                caches, heads, seeds=range(args.seeds), params=parse_params(args.param, heads), out=args.out
            )
    except BottleneckError as exc:
        from bottleneck.cli.common import cli_spelling

        print(f"error: {cli_spelling(str(exc))}", file=sys.stderr)
        return 2
    print(result.markdown())
    print(
        f"{len(result.records)} fits in {time.perf_counter() - t:.1f} s; table, CSV, JSON and plot in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
