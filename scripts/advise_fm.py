"""Layer sets, greedy selection and `advise` on a Fashion-MNIST pilot: the figures in the README.

  python scripts/advise_fm.py                       # 300 per class of train, the full 10 000 test images
  python scripts/advise_fm.py --per-class 100 --single 4    # a quicker look
  python scripts/advise_fm.py --only-cold --compare-views   # cold advise, the pilot fine-tune with views and without
  python scripts/advise_fm.py --only-cold --compare-fine-tune   # cold advise as before (fine-tune, scoring on all
                                                  # features), with --fine-tune, then as it runs by default

0. `advise` on 10 classes x 100 Fashion-MNIST PNGs (train only, so a fifth is held out as test), cold: an
   empty cache folder, the ONNX model converted in the run; its wall time (--no-cold skips it).

Steps, in one run on the same pilot rows (train 300 per class, a fifth of it as val, the whole test split):
1. `advise` (EfficientNet-Lite0, ImageNet weights): one blocks + wide pass and the pixels, every candidate
   scored (pixels, top, each layer, greedy, multiscale, blocks, wide), the choice, a short fine-tune; its wall
   time and every row's val and test figures.
2. Scoring single layers from the pilot cache vs extracting each of them separately and scoring it (--single
   layers spread over the depth, the top included): seconds of each, and the ratio.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument(
        "--single", type=int, default=4, help="layers (evenly spread, top included) extracted separately"
    )
    p.add_argument("--fine-tune", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--cold",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first time `advise` on 10 classes x 100 PNGs with an empty cache folder (no ONNX model either)",
    )
    p.add_argument("--only-cold", action="store_true", help="run step 0 alone")
    p.add_argument(
        "--compare-views",
        action="store_true",
        help="step 0 twice, side by side: the pilot fine-tune with fine-tune's default views, then as advise runs it",
    )
    p.add_argument(
        "--compare-fine-tune",
        action="store_true",
        help="step 0 three times, side by side: with the fine-tune and logreg solving on all features (as before "
        "the row-space sweep), with --fine-tune, then advise's default (no fine-tune on this pilot)",
    )
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--out", type=Path, default=Path("runs") / "advise-fm")
    args = p.parse_args(argv)

    import bottleneck
    from bottleneck.data.datasets import FASHION_MNIST_DIR
    from bottleneck.runs.advise import PILOT_HOLDOUT, PILOT_VAL, advise
    from bottleneck.runs.layer_sets import score_layer_sets

    def say(line):
        print(line, file=sys.stderr, flush=True)

    source = FASHION_MNIST_DIR
    cold = None
    if args.cold:
        import shutil
        import tempfile

        import bottleneck.heads.logreg as logreg
        import bottleneck.runs.advise as advise_module
        from bottleneck.data.datasets import export_fashion_mnist

        current = dict(advise_module.PILOT_FINE_TUNE)
        row_space = logreg.ROW_SPACE_UP_TO
        # label: (the pilot fine-tune's recipe, advise's fine_tune, logreg's row-space limit)
        variants = {"current": (current, None, row_space)}
        if args.compare_views:  # the short fine-tune with fine-tune's own default views, first, side by side
            variants = {"default views": ({}, True, row_space), "current": (current, True, row_space)}
        if args.compare_fine_tune:
            variants = {
                "fine-tune, all features": (current, True, 0),
                "--fine-tune": (current, True, row_space),
            } | variants
        for label, (recipe, fine_tune, limit) in variants.items():
            advise_module.PILOT_FINE_TUNE, logreg.ROW_SPACE_UP_TO = recipe, limit
            with tempfile.TemporaryDirectory() as tmp:
                pngs = Path(export_fashion_mnist(Path(tmp) / "fm", per_class=100)["path"]) / "train"
                t = time.perf_counter()
                small = advise(
                    pngs,
                    cache_dir=Path(tmp) / "cache",
                    out=Path(tmp) / "advice",
                    fine_tune=fine_tune,
                    notify=say,
                )
                cold = {
                    "variant": label,
                    "pilot fine-tune": recipe or "fine-tune's defaults",
                    "images": sum(small.pilot.values()),
                    "seconds": round(time.perf_counter() - t, 1),
                    "timings": small.timings,
                    "recommended": small.recommendation["name"],
                    "cell": f"{small.cell['data']} data, {small.cell['similarity']}",
                    "fine-tune row": next(
                        ({k: r.get(k) for k in ("val_accuracy", "val_loss", "test_accuracy")}
                         for r in small.rows if r["kind"] == "fine-tune"), None,
                    ),
                }  # fmt: skip
                shutil.copytree(Path(tmp) / "advice", args.out / "cold-10x100", dirs_exist_ok=True)
            say(f"advise, 10 classes x 100 images, cold, {label}: {cold['seconds']} s")
            say(json.dumps(cold))
        if args.only_cold:
            print(json.dumps(cold, indent=2))
            return 0
    t = time.perf_counter()
    advice = advise(
        source,
        per_class=args.per_class,
        fine_tune=args.fine_tune,
        cache_dir=args.cache_dir,
        out=args.out,
        notify=say,
    )
    advise_s = time.perf_counter() - t
    say(f"advise: {advise_s:.1f} s")
    options = {
        "pilot": {"per_class": args.per_class, "seed": 0, "holdout": PILOT_HOLDOUT},
        "seed": 0,
        "val_fraction": PILOT_VAL,
    }
    pilot = bottleneck.open_cache(advice.caches["pilot"])
    rec = advice.recommendation

    every = [n for n, _, _ in pilot.columns]
    k = min(args.single, len(every))
    names = [every[round(i * (len(every) - 1) / max(1, k - 1))] for i in range(k)]
    t = time.perf_counter()
    score_layer_sets(pilot, [[n] for n in names])
    cache_s = time.perf_counter() - t
    t = time.perf_counter()
    for n in names:
        one = bottleneck.extract(source, cache_dir=args.cache_dir / "single", layer=n, **options).cache
        score_layer_sets(one, [[n]])
    separate_s = time.perf_counter() - t

    result = {
        "cold_10x100": cold,
        "pilot": advice.pilot,
        "advise_seconds": round(advise_s, 1),
        "cell": advice.cell,
        "recommended": rec,
        "reason": advice.reason,
        "rows": {
            r["name"]: {
                k: r.get(k) for k in ("dims", "val_accuracy", "val_loss", "val_loss_se", "test_accuracy")
            }
            for r in advice.rows
            if r["kind"] not in ("block", "wide")
        },
        "best_single_layer_on_val": min(
            (r for r in advice.rows if r["kind"] in ("block", "wide")), key=lambda r: r["val_loss"]
        )["name"],
        "oracle_test": max(r["test_accuracy"] for r in advice.rows if r.get("test_accuracy") is not None),
        "greedy_layers": advice.search["layers"],
        "single_layers": {
            "layers": len(names),
            "from_pilot_cache_s": round(cache_s, 1),
            "separate_extractions_s": round(separate_s, 1),
            "ratio": round(separate_s / cache_s, 1),
            "pilot_extraction_s": pilot.meta.get("extract_seconds"),
        },
    }
    print(json.dumps(result, indent=2))
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
