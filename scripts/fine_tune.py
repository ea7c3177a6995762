"""Fine-tuning recipes measured on real datasets: the table in the README (dataset x recipe -> frozen val/test,
fine-tuned val/test, seconds).

  python scripts/fine_tune.py --datasets fm-200-2000,digits,lfw --recipes old,default,u1,no-ls   # pilots
  python scripts/fine_tune.py --datasets fm-500-all --recipes default,views4 --whole-epoch          # the targets
  python scripts/fine_tune.py --table                                                               # print only

Each dataset (``scripts/ft_datasets.py``: Fashion-MNIST subsets, scikit-learn's digits, scikit-image's faces) is
extracted once with EfficientNet-Lite0 at 224 px (top layer; cached), logreg and mlp heads are fitted, and the
better one on val is fine-tuned with each recipe (``RECIPES``: overrides of the defaults of
``bottleneck.tuning.TuneSettings``). Every row goes to --out/results.jsonl as it finishes, so a long measurement
runs in pieces (rows already there are skipped). ``--whole-epoch`` also times one augmented epoch through the
whole network (``prefix_cache="off"``) for the last recipe with views, side by side in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ft_datasets import dataset_npz  # noqa: E402

# The recipe of the classic tutorials, which this project used before (issue 23 measured it below the head).
OLD = {
    "unfreeze": 1,
    "optimizer": "sgd",
    "lr": 1e-4,
    "lr_decay": 1.0,
    "weight_decay": 0.0,
    "schedule": "constant",
    "warmup": 0.0,
    "label_smoothing": 0.0,
}
RECIPES = {
    "old": OLD,
    "default": {},
    "u1": {"unfreeze": 1},
    "u2": {"unfreeze": 2},
    "u5": {"unfreeze": 5},
    "lr1e-4": {"lr": 1e-4},
    "lr3e-3": {"lr": 3e-3},
    "no-decay": {"lr_decay": 1.0},
    "no-ls": {"label_smoothing": 0.0},
    "no-wd": {"weight_decay": 0.0},
    "onecycle": {"schedule": "onecycle"},
    "gradual": {"gradual": True},
    "train-bn": {"train_bn": True},
    "sgd": {"optimizer": "sgd", "lr": 1e-2},
    "views4": {"views": 4},
    "ls0": {"label_smoothing": 0.0},
    "ls0-lr3e-4": {"label_smoothing": 0.0, "lr": 3e-4},
    "ls0-lr1e-4": {"label_smoothing": 0.0, "lr": 1e-4},
    "ls0-lr3e-4-u1": {"label_smoothing": 0.0, "lr": 3e-4, "unfreeze": 1},
    "ls0-lr3e-4-views4": {"label_smoothing": 0.0, "lr": 3e-4, "views": 4},
    "ls0-lr1e-4-views4": {"label_smoothing": 0.0, "lr": 1e-4, "views": 4},
    "views4-u5": {"views": 4, "unfreeze": 5},
    "views4-flip": {"views": 4, "augment": "flip,crop,zoom,contrast"},
    "views4-lr1e-5": {"views": 4, "lr": 1e-5},
    "views4-lr3e-5": {"views": 4, "lr": 3e-5},
    "views4-u1": {"views": 4, "unfreeze": 1},
    "views4-u1-lr1e-5": {"views": 4, "unfreeze": 1, "lr": 1e-5},
    "views4-flipcrop": {"views": 4, "augment": "flip,crop"},
    "views4-plain": {"views": 4, "plain_view": True},
    "views4-plain-lr3e-5": {"views": 4, "plain_view": True, "lr": 3e-5},
    # patience 10 as it was counted when measured (until 2026-12-07 it stopped after patience + 1 epochs)
    "views4-plain-p10": {"views": 4, "plain_view": True, "patience": 11},
    # after the calibrated selection (tuning.calibrate) and the new defaults (lr 1e-3, 4 views)
    "no-views": {"views": 0},
    "lr3e-4": {"lr": 3e-4},
    "lr1e-4-views4": {"lr": 1e-4, "views": 4},
    "epochs12": {"epochs": 12},
}
VAL_FRACTION = {"lfw": 0.2}


def frozen_heads(name: str, data: Path, args) -> dict:
    import bottleneck
    from bottleneck.runs import fit_head

    t = time.perf_counter()
    result = bottleneck.extract(data, cache_dir=args.cache_dir, val_fraction=VAL_FRACTION.get(name, 0.1))
    print(
        f"{name}: features {result.cache.path.name} ({'hit' if result.hit else f'{time.perf_counter() - t:.0f} s'})"
    )
    runs = args.out / "runs" / name
    heads = {}
    for head in ("logreg", "mlp"):
        found = sorted(runs.glob(f"*-{head}")) if runs.exists() else []
        heads[head] = (
            bottleneck.runs.load_run(found[0]) if found else fit_head(result.cache, head, runs_dir=runs)
        )
    return heads


def measure(name: str, recipe: str, heads: dict, args) -> dict:
    from bottleneck.tuning import fine_tune

    best = max(heads, key=lambda h: heads[h].metrics["val"]["accuracy"])
    start = heads[best]
    overrides = dict(RECIPES[recipe])
    if args.epochs:
        overrides["epochs"] = args.epochs
    t = time.perf_counter()
    tuned = fine_tune(
        start, save=False, cache_dir=args.cache_dir, notify=lambda s: print(f"  {s}", flush=True), **overrides
    )
    seconds = time.perf_counter() - t
    s = tuned.summary
    row = {
        "dataset": name,
        "recipe": recipe,
        "overrides": RECIPES[recipe],
        "head": best,
        "frozen": {h: {k: r.metrics[k]["accuracy"] for k in ("val", "test")} for h, r in heads.items()},
        "frozen_val": start.metrics["val"]["accuracy"],
        "frozen_test": start.metrics["test"]["accuracy"],
        "frozen_best_test": max(r.metrics["test"]["accuracy"] for r in heads.values()),
        "val": s["metrics"]["val"]["accuracy"],
        "test": s["metrics"]["test"]["accuracy"],
        "seconds": round(seconds, 1),
        "train_seconds": s["fit_seconds"],
        "epoch_seconds": s["epoch_seconds"],
        "selection": s["selection"],
        "views": s["views"],
        "mode": s["mode"],
        "evaluation": s["evaluation"],
        "params": s["params"],
    }
    if args.whole_epoch and s["views"]:
        whole = whole_epoch_seconds(start, overrides, s["views"]["augment"], args)
        row["whole_epoch_seconds"] = whole
        built = s["views"]["seconds"]
        epoch = float(sorted(s["epoch_seconds"])[len(s["epoch_seconds"]) // 2])
        row["views_ratio_first"] = (built + epoch) / whole
        row["views_ratio_after"] = epoch / whole
    return row


def whole_epoch_seconds(start, overrides: dict, augment: str, args) -> float:
    """Seconds of one epoch of the same training through the whole network, augmenting on the fly (what --views
    replaces): the same preparation as fine_tune, one epoch timed, nothing evaluated."""
    from bottleneck.runs.folders import run_cache
    from bottleneck.tuning.fine_tuning import prepare
    from bottleneck.tuning.images import open_cache_images
    from bottleneck.tuning.loop import Trainer
    from bottleneck.tuning.recipe import TuneSettings

    settings = TuneSettings.build(
        **{k: v for k, v in overrides.items() if k not in ("views", "augment")},
        views=0,
        augment=augment,
        prefix_cache="off",
    )
    cache = run_cache(start.summary)
    with open_cache_images(cache) as images:
        prep = prepare(start, cache, images, settings, args.cache_dir, None, lambda s: None)
        trainer = Trainer(prep.model, prep.groups, prep.state, settings, prep.train_data.steps)
        t = time.perf_counter()
        for i, (x, y, w) in enumerate(prep.train_data.epoch(1)):
            trainer.train_step(1, i, x, y, w)
        return time.perf_counter() - t


def table(rows: list[dict]) -> str:
    """Markdown: per dataset and recipe, the frozen start head and the fine-tuned model on val and test."""
    lines = [
        "| dataset | recipe | start head | frozen val | frozen test | fine-tuned val | fine-tuned test | Δ test "
        "(points) | best frozen test | kept epoch | s/epoch | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sel = r["selection"]
        kept = "0 (start)" if sel["best epoch"] == 0 else str(sel["best epoch"])
        lines.append(
            f"| {r['dataset']} | {r['recipe']} | {r['head']} | {r['frozen_val']:.4f} | {r['frozen_test']:.4f} | "
            f"{r['val']:.4f} | {r['test']:.4f} | {100 * (r['test'] - r['frozen_test']):+.2f} | "
            f"{r['frozen_best_test']:.4f} | {kept} of {sel['epochs run']} | {_median(r['epoch_seconds']):.1f} | "
            f"{r['seconds']:.0f} |"
        )
    for r in rows:
        if "whole_epoch_seconds" in r:
            lines.append(
                f"\n{r['dataset']} {r['recipe']}: {r['views']['computed']} views built in {r['views']['seconds']:.0f} s, "
                f"an epoch on the views {_median(r['epoch_seconds']):.1f} s, an augmented epoch through the whole "
                f"network {r['whole_epoch_seconds']:.1f} s: (views + one epoch) / whole epoch = "
                f"{r['views_ratio_first']:.2f}; each later epoch {r['views_ratio_after']:.2f}"
            )
    return "\n".join(lines)


def _median(values) -> float:
    return float(sorted(values)[len(values) // 2]) if values else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="fm-500-all")
    p.add_argument("--recipes", default="old,default")
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    p.add_argument("--whole-epoch", action="store_true")
    p.add_argument("--table", action="store_true", help="only print the table of what was measured")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--out", type=Path, default=Path("runs") / "fine-tune-bench")
    p.add_argument(
        "--data", type=Path, default=Path("runs") / "data", help="where the .npz datasets are written"
    )
    args = p.parse_args(argv)
    results = args.out / "results.jsonl"
    done = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    if not args.table:
        for name in args.datasets.split(","):
            heads = frozen_heads(name, dataset_npz(name, args.data), args)
            for recipe in args.recipes.split(","):
                if any(r["dataset"] == name and r["recipe"] == recipe for r in done):
                    continue
                print(f"{name} / {recipe}", flush=True)
                row = measure(name, recipe, heads, args)
                done.append(row)
                with results.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(table([row]), flush=True)
    print(table(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
