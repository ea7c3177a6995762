"""Figures of `bottleneck inspect` on Fashion-MNIST (EfficientNet-Lite0 ImageNet features, 2 cores).

  python scripts/bench_inspect.py planted          # planted duplicates: recall and false pairs per threshold
  python scripts/bench_inspect.py noise            # planted label noise: cleanlab vs lowest self-confidence
  python scripts/bench_inspect.py scan             # the whole 70 000-image near-duplicate scan: time, memory
  python scripts/bench_inspect.py page             # the page of the 10 000-image test split in chromium
  python scripts/bench_inspect.py all

planted: 300 train and 300 test images per class exported as PNG folders, 50 train images copied into test
(25 byte-identical, 13 re-encoded as JPEG quality 75, 12 resized by -10 % or +10 %), extracted, then every
threshold's recall of the 50 planted pairs and the share of flagged train-test pairs that were not planted.
noise: the 3 000 train features of that subset with 5 % of the labels flipped to another class (seeded);
precision and recall of cleanlab's flagged set on 5-fold out-of-fold logistic regression, beside the rows with
the lowest probability of their label (the same count). scan: the full dataset (70 000 images, 1280-d) read
from the cache, L2-normalised and scanned block by block; time, peak of traced memory, and the machine's
float32 matmul rate at the time (the scan is that matmul); --faiss also times faiss-cpu's exact range search.
page: a logreg head fitted on the full cache, `inspect_cache(run=...)` writes the test split's page; the load
time in headless chromium is the browser's own navigation timing.
Features: Lite0 at --image-size (default 128: 70 000 images extract in ~5 min on 2 cores; 224 takes ~11).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

THRESHOLDS = (0.85, 0.88, 0.9, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98)


def _extract(source, args):
    import bottleneck

    return bottleneck.extract(source, cache_dir=args.cache_dir, image_size=args.image_size).cache


def planted_source(out: Path, per_class: int, seed: int = 0) -> tuple[Path, list[tuple[str, str]]]:
    """A Fashion-MNIST subset with 50 train images planted into test; (source, [(original id, copy id)])."""
    from PIL import Image

    from bottleneck.data.datasets import export_fashion_mnist

    clean = Path(export_fashion_mnist(out / f"fm-{per_class}", per_class=per_class, download=False)["path"])
    src = out / f"fm-{per_class}-planted"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(clean, src)
    rng = np.random.default_rng(seed)
    train = sorted(p.relative_to(src).as_posix() for p in (src / "train").rglob("*.png"))
    picked = [train[i] for i in rng.choice(len(train), 50, replace=False)]
    pairs = []
    for k, rel in enumerate(picked):
        cls = rel.split("/")[1]
        im = Image.open(src / rel)
        if k < 25:
            copy = f"test/{cls}/planted-{k:02d}.png"
            shutil.copyfile(src / rel, src / copy)
        elif k < 38:
            copy = f"test/{cls}/planted-{k:02d}.jpg"
            im.save(src / copy, "JPEG", quality=75)
        else:
            scale = 0.9 if k % 2 else 1.1
            side = round(im.width * scale)
            copy = f"test/{cls}/planted-{k:02d}.png"
            im.resize((side, side), Image.BILINEAR).save(src / copy)
        pairs.append((rel, copy))
    return src, pairs


def bench_planted(args) -> dict:
    from bottleneck.inspection import exact_duplicates, near_duplicates
    from bottleneck.inspection.job import load_features
    from bottleneck.inspection.rows import Rows

    src, planted = planted_source(args.out, args.per_class)
    cache = _extract(src, args)
    rows = Rows(cache)
    X = load_features(cache, rows)
    index = {str(i): k for k, i in enumerate(rows.id)}
    want = {tuple(sorted((index[a], index[b]))) for a, b in planted}
    ex = exact_duplicates(rows.hash)
    exact = {(int(a), int(b)) for a, b in zip(ex.a, ex.b, strict=True)}
    pairs = near_duplicates(X, min(THRESHOLDS))
    cross = rows.split[pairs.a] != rows.split[pairs.b]
    print(f"\nplanted duplicates: {cache.path} ({len(rows)} images), 50 planted train -> test pairs")
    print(
        "| threshold | recall | flagged train-test pairs | not planted | false share | within-split pairs |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    table = []
    for t in THRESHOLDS:
        keep = pairs.score >= t
        flagged = {
            (int(a), int(b)) for a, b in zip(pairs.a[keep & cross], pairs.b[keep & cross], strict=True)
        }
        flagged |= {p for p in exact if rows.split[p[0]] != rows.split[p[1]]}
        found = len(want & flagged)
        false = len(flagged - want)
        share = false / max(1, len(flagged))
        within = int(np.sum(keep & ~cross))
        table.append({"threshold": t, "recall": found / 50, "false_share": share, "flagged": len(flagged)})
        print(f"| {t} | {found / 50:.2f} | {len(flagged)} | {false} | {share:.3f} | {within} |")
    kinds = {"exact": range(25), "jpeg q75": range(25, 38), "resized": range(38, 50)}
    pl = [tuple(sorted((index[a], index[b]))) for a, b in planted]
    for kind, ks in kinds.items():
        s = [float(X[pl[k][0]] @ X[pl[k][1]]) for k in ks]
        print(f"{kind}: cosine of the planted pairs min {min(s):.4f}, median {np.median(s):.4f}")
    return {"table": table}


def bench_noise(args) -> dict:
    from bottleneck.data.datasets import export_fashion_mnist
    from bottleneck.inspection.job import load_features
    from bottleneck.inspection.label_errors import find_label_issues, lowest_confidence, out_of_fold_proba
    from bottleneck.inspection.rows import Rows

    src = Path(
        export_fashion_mnist(args.out / f"fm-{args.per_class}", per_class=args.per_class, download=False)[
            "path"
        ]
    )
    cache = _extract(src, args)
    rows = Rows(cache)
    train = rows.of("train")
    X = load_features(cache, rows)[train]
    y = rows.label[train]
    rng = np.random.default_rng(args.seed)
    flipped = rng.choice(len(y), round(0.05 * len(y)), replace=False)
    noisy = y.copy()
    k = len(cache.class_names)
    noisy[flipped] = (y[flipped] + rng.integers(1, k, len(flipped))) % k
    t = time.perf_counter()
    proba = out_of_fold_proba(X, noisy, folds=5, seed=args.seed)
    fit_s = time.perf_counter() - t
    issues = find_label_issues(noisy, proba)
    truth = set(flipped.tolist())

    def pr(found):
        found = set(np.asarray(found).tolist())
        hit = len(found & truth)
        return hit / max(1, len(found)), hit / len(truth)

    p1, r1 = pr(issues.rows)
    p2, r2 = pr(lowest_confidence(noisy, proba, len(issues)))
    oof_acc = float(np.mean(np.argmax(proba, 1) == noisy))
    sugg = float(
        np.mean(
            issues.suggested[np.isin(issues.rows, flipped)] == y[issues.rows[np.isin(issues.rows, flipped)]]
        )
    )
    print(
        f"\nlabel noise: {len(y)} train images, {len(flipped)} labels flipped (5 %), out-of-fold fits {fit_s:.1f} s, "
        f"out-of-fold accuracy on the noisy labels {oof_acc:.3f}"
    )
    print("| method | flagged | precision | recall |")
    print("|---|---:|---:|---:|")
    print(f"| cleanlab find_label_issues | {len(issues)} | {p1:.3f} | {r1:.3f} |")
    print(f"| lowest self-confidence (same count) | {len(issues)} | {p2:.3f} | {r2:.3f} |")
    print(f"suggested label = the true one for {sugg:.3f} of the flipped images found")
    return {"precision": p1, "recall": r1, "baseline_precision": p2, "baseline_recall": r2}


def _matmul_rate() -> float:
    a = np.random.default_rng(0).random((1024, 1280), np.float32)
    b = np.random.default_rng(1).random((20000, 1280), np.float32)
    a @ b.T
    t = time.perf_counter()
    for _ in range(3):
        a @ b.T
    return 3 * 2 * 1024 * 20000 * 1280 / (time.perf_counter() - t) / 1e9


def bench_scan(args) -> dict:
    import tracemalloc

    from bottleneck.data.datasets import FASHION_MNIST_DIR
    from bottleneck.inspection import DEFAULT_THRESHOLD, exact_duplicates, near_duplicates
    from bottleneck.inspection.duplicates import without
    from bottleneck.inspection.job import load_features
    from bottleneck.inspection.rows import Rows

    cache = _extract(FASHION_MNIST_DIR, args)
    rows = Rows(cache)
    rate = _matmul_rate()
    tracemalloc.start()
    t0 = time.perf_counter()
    X = load_features(cache, rows)
    t1 = time.perf_counter()
    exact = exact_duplicates(rows.hash)
    near = without(near_duplicates(X, args.threshold or DEFAULT_THRESHOLD), exact)
    t2 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    cross_near = int(np.sum(rows.split[near.a] != rows.split[near.b]))
    cross_exact = int(np.sum(rows.split[exact.a] != rows.split[exact.b]))
    print(
        f"\nfull scan: {len(rows)} x {X.shape[1]} features, threshold {args.threshold or DEFAULT_THRESHOLD}"
    )
    print(
        f"read + normalise {t1 - t0:.1f} s, exact + near scan {t2 - t1:.1f} s, whole {t2 - t0:.1f} s; "
        f"peak traced memory {peak / 2**20:.0f} MiB (features {X.nbytes / 2**20:.0f} MiB); "
        f"float32 matmul at {rate:.0f} GFLOP/s now (the scan is {len(X) ** 2 * X.shape[1] / 1e12:.1f} TFLOP)"
    )
    print(f"pairs: {len(exact)} exact ({cross_exact} train-test), {len(near)} near ({cross_near} train-test)")
    out = {"seconds": t2 - t0, "scan_seconds": t2 - t1, "peak_mib": peak / 2**20, "gflops": rate,
           "near": len(near), "cross_near": cross_near, "exact": len(exact), "cross_exact": cross_exact}  # fmt: skip
    if args.faiss:
        import faiss

        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        index = faiss.IndexFlatIP(X.shape[1])
        index.add(X)
        lims, _, _ = index.range_search(X, args.threshold or DEFAULT_THRESHOLD)
        print(f"faiss-cpu IndexFlatIP range_search: {time.perf_counter() - t:.1f} s "
              f"({(int(lims[-1]) - len(X)) // 2} pairs without self-pairs)")  # fmt: skip
    return out


def bench_page(args) -> dict:
    import chromium

    from bottleneck.data.datasets import FASHION_MNIST_DIR
    from bottleneck.inspection import inspect_cache
    from bottleneck.runs import fit_head

    cache = _extract(FASHION_MNIST_DIR, args)
    run_dir = args.out / "run-logreg"
    if not (run_dir / "metrics.json").exists():
        fit_head(cache, "logreg", out=run_dir)
    t = time.perf_counter()
    result = inspect_cache(cache, run=run_dir, out=args.out / "inspect-full", label_errors=args.label_errors)
    total = time.perf_counter() - t
    print(f"\ninspect of the full cache with a run: {total:.1f} s {result.summary['seconds']}")
    print(f"counts {result.summary['counts']}, leaks {result.summary['leaks']}")
    reason = chromium.missing()
    if reason:
        print(f"page load not measured: {reason}")
        return {"seconds": total}
    with chromium.Browser() as b:
        b.driver.get((result.path / "index.html").as_uri())
        load = chromium.load_seconds(b.driver)
        errors = b.errors()
    n = len(list((result.path / "thumbs").iterdir()))
    size = (result.path / "index.html").stat().st_size / 1e6
    print(
        f"page of the 10 000-image test split: loaded in {load:.2f} s in headless chromium ({n} thumbnails, "
        f"{size:.1f} MB of HTML), console errors: {len(errors)}"
    )
    return {"seconds": total, "load_seconds": load}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("planted", "noise", "scan", "page", "all"))
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument(
        "--threshold", type=float, default=None, help="near-duplicate threshold (default: the library's)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--faiss", action="store_true", help="also time faiss-cpu's exact range search (if installed)"
    )
    p.add_argument("--label-errors", action="store_true", help="page: also find label errors on all 70 000")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--out", type=Path, default=Path("runs") / "bench-inspect")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = {"planted": bench_planted, "noise": bench_noise, "scan": bench_scan, "page": bench_page}
    for name, step in steps.items():
        if args.what in (name, "all"):
            step(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
