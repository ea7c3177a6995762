"""Fine-tuning from the best frozen head, on Fashion-MNIST: the figures in the README.

  python scripts/fine_tune.py                      # 500 per class of train (10% val), the full 10 000 test images
  python scripts/fine_tune.py --per-class 100 --test 1000 --epochs 3    # a quick look

Steps: extract EfficientNet-Lite0 features (224 px, top layer) once; fit logreg and mlp heads; take the one
with the best val accuracy; fine-tune it with the recipe's defaults (top block unfrozen, SGD momentum 0.9,
lr 1e-4, early stopping on val loss) from cached activations of the cut (`prefix_cache="auto"`); then time one
epoch of the same fine-tuning through the whole network (`prefix_cache="off"`) in the same run. Prints the
table and writes it to --out as JSON.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def subset_npz(path: Path, per_class: int, test: int | None) -> Path:
    """x_train/y_train (first ``per_class`` of each class) and x_test/y_test (first ``test``, or all) as .npz."""
    from bottleneck.data.array_sources import read_idx
    from bottleneck.data.datasets import FASHION_MNIST_DIR

    if path.exists():
        return path
    src = FASHION_MNIST_DIR
    x, y = read_idx(src / "train-images-idx3-ubyte.gz"), read_idx(src / "train-labels-idx1-ubyte.gz")
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)]))
    xt, yt = read_idx(src / "t10k-images-idx3-ubyte.gz"), read_idx(src / "t10k-labels-idx1-ubyte.gz")
    n = len(yt) if test is None else test
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x[keep], y_train=y[keep], x_test=xt[:n], y_test=yt[:n])
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--test", type=int, default=None, help="test images (default: all 10 000)")
    p.add_argument("--unfreeze", default="1")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--out", type=Path, default=Path("runs") / "fine-tune-fm")
    args = p.parse_args(argv)

    import bottleneck
    from bottleneck.runs import fit_head
    from bottleneck.tuning import fine_tune

    data = subset_npz(args.out / f"fm-{args.per_class}-{args.test or 'all'}.npz", args.per_class, args.test)
    t = time.perf_counter()
    result = bottleneck.extract(data, cache_dir=args.cache_dir, val_fraction=0.1, image_size=args.image_size)
    extract_s = time.perf_counter() - t
    print(f"features: {result.cache.path} ({'hit' if result.hit else f'{extract_s:.0f} s'})", file=sys.stderr)
    frozen = {h: fit_head(result.cache, h, runs_dir=args.out) for h in ("logreg", "mlp")}
    best = max(frozen, key=lambda h: frozen[h].metrics["val"]["accuracy"])
    unfreeze = args.unfreeze if args.unfreeze == "all" else int(args.unfreeze)
    common = {"unfreeze": unfreeze, "lr": args.lr, "optimizer": args.optimizer, "runs_dir": args.out}
    t = time.perf_counter()
    tuned = fine_tune(frozen[best], epochs=args.epochs, notify=lambda s: print(s, file=sys.stderr), **common)
    tune_s = time.perf_counter() - t
    # One epoch of the same training through the whole network, for the per-epoch comparison.
    full = fine_tune(frozen[best], epochs=1, prefix_cache="off", save=False, **common)
    cached_epoch = float(np.median(tuned.summary["epoch_seconds"]))
    full_epoch = full.summary["epoch_seconds"][0]
    rows = [
        *[
            (f"frozen {h}", r.metrics["val"]["accuracy"], r.metrics["test"]["accuracy"])
            for h, r in frozen.items()
        ],
        (f"fine-tuned {best}", tuned.metrics["val"]["accuracy"], tuned.metrics["test"]["accuracy"]),
    ]
    print("| model | val accuracy | test accuracy |\n|---|---|---|")
    for name, v, te in rows:
        print(f"| {name} | {v:.4f} | {te:.4f} |")
    gain = tuned.metrics["test"]["accuracy"] - frozen[best].metrics["test"]["accuracy"]
    print(f"\nfine-tuning adds {100 * gain:+.2f} points of test accuracy (target: >= +1.5)")
    print(
        f"per epoch: whole network {full_epoch:.1f} s, cached activations {cached_epoch:.1f} s "
        f"({full_epoch / cached_epoch:.1f}x); fine-tune total {tune_s:.0f} s, "
        f"best epoch {tuned.summary['selection']}"
    )
    record = {
        "rows": rows,
        "gain_points": 100 * gain,
        "epoch_seconds_full": full_epoch,
        "epoch_seconds_cached": cached_epoch,
        "tuned_run": str(tuned.path),
        "summary": {k: tuned.summary[k] for k in ("params", "unfrozen", "selection", "epoch_seconds")},
    }
    (args.out / "fine_tune.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
