"""The main job end to end on an embedded default: a Fashion-MNIST subset -> real EfficientNet-Lite0 features
(offline ImageNet weights, pooled from three layers) -> logistic regression, linear and MLP heads compared side
by side, beside a logistic regression on the raw pixels (the baseline).

  python scripts/demo.py [--per-class 100] [--heads logreg,linear,mlp]

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (scripts/demo.sh installs it) or, on a machine with
a network, from the dataset's official download. A second run is a cache hit and only refits the heads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=100, help="images per class in each of train and test")
    p.add_argument("--heads", default="logreg,linear,mlp")
    p.add_argument(
        "--layer",
        default=None,
        help="backbone layer(s), comma-separated; default: Lite0's multi-scale set, 'top' = its top layer",
    )
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "demo")
    p.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    args = p.parse_args(argv)

    import bottleneck
    from bottleneck.backbones.presets import example_layers
    from bottleneck.cli.progress import ProgressBar
    from bottleneck.config import ExtractConfig
    from bottleneck.data.datasets import export_fashion_mnist
    from bottleneck.errors import BottleneckError
    from bottleneck.runs import compare

    try:
        t0 = time.perf_counter()
        data = export_fashion_mnist(args.work / "fashion-mnist", per_class=args.per_class)
        print(f"dataset: Fashion-MNIST subset {data['splits']} from {data['source']}")
        bar = ProgressBar()
        result = bottleneck.extract(
            data["path"],
            ExtractConfig(layer=example_layers(args.layer)),
            val_fraction=0.2,
            seed=0,
            cache_dir=args.cache_dir,
            progress=bar,
            notify=print,
        )
        bar.close()
        cache = result.cache
        how = "cache hit" if result.hit else f"{result.computed} images, engine {result.engine}"
        print(f"features: {cache.path} ({how}, {result.seconds:.1f} s)")
        comparison = compare([cache.path], args.heads.split(","), baseline=True, out=args.work / "compare")
    except BottleneckError as exc:
        from bottleneck.cli.common import cli_spelling

        print(f"error: {cli_spelling(str(exc))}", file=sys.stderr)
        return 2
    print()
    print(comparison.markdown())
    print(f"\ntable, CSV and plot in {args.work / 'compare'}; total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
