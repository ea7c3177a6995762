"""Figures of `bottleneck inspect` on Fashion-MNIST (EfficientNet-Lite0 ImageNet features, 2 cores).

  python scripts/bench_inspect.py planted          # planted duplicates: the feature rule vs the pixel check
  python scripts/bench_inspect.py ranks            # how near a JPEG / resized copy's original is among 60 000
  python scripts/bench_inspect.py noise            # planted label noise: the estimated count vs cleanlab
  python scripts/bench_inspect.py noise --dataset digits --seeds 0,1,2 --flip look-alike
  python scripts/bench_inspect.py scan --exact     # the whole 70 000-image near-duplicate scan: time, memory
  python scripts/bench_inspect.py page             # the page of the 10 000-image test split in chromium
  python scripts/bench_inspect.py all

planted: 300 train and 300 test images per class exported as PNG folders, 50 train images copied into test
(25 byte-identical, 13 re-encoded as JPEG quality 75, 12 resized by -10 % or +10 %), extracted; the recall of
the 50 planted pairs and the share of flagged train-test pairs that were not planted, for the old rule (cosine
of the features >= a threshold) and for the new one (each image's nearest neighbours in the features, confirmed
by the RMS difference of 8 x 8 grey copies of the two images), with the new rule's calibration: the planted
pairs' pixel differences, the closest other candidate pairs', and recall / false pairs per limit and per k.
ranks: 300 random Fashion-MNIST train images, each re-encoded (JPEG q75) and resized (+-10 %), extracted; the
rank of the original among all 60 000 train images by cosine, and the pixel difference copy-original (k).
noise: the train features of a Fashion-MNIST subset (--per-class) or of scikit-learn's digits (all 1 797), 5 %
of the labels flipped (seeded; uniform: to any other class; look-alike: to one fixed look-alike class);
precision and recall of the flagged set of each method on 5-fold out-of-fold logistic regression, beside the
rows with the lowest probability of their label (the same count, and the true count), per seed.
scan: the full dataset (70 000 images, 1280-d) read from the cache, L2-normalised and scanned block by block
as `inspect` scans it (through 256 dimensions with an exact bound at this size: inspection.cosine_bound), by the
old rule (cosine >= 0.97; `--no-pixel-check`) and the new one (neighbours + images read from the IDX files +
pixel check); time (untraced), peak of traced memory (a second run), the load average, and the machine's
float32 matmul rate at the time.
page: a logreg head fitted on the full cache, `inspect_cache(run=...)` writes the test split's page; the load
time in headless chromium is the browser's own navigation timing.
Features: Lite0 at --image-size (default 224, the library's default; 128 extracts 2x faster).
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


def _full(args):
    """The full Fashion-MNIST cache: --full-cache, else extracted from the IDX files into --cache-dir."""
    from bottleneck.cache.reader import as_cache
    from bottleneck.data.datasets import FASHION_MNIST_DIR

    return as_cache(args.full_cache) if args.full_cache else _extract(FASHION_MNIST_DIR, args)


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


def _flagged_cross(rows, pairs, exact) -> set:
    """Train-test pairs (a, b) flagged by ``pairs`` (near) and ``exact``."""
    out = set()
    for p in (pairs, exact):
        cross = rows.split[p.a] != rows.split[p.b]
        out |= {(int(a), int(b)) for a, b in zip(p.a[cross], p.b[cross], strict=True)}
    return out


def bench_planted(args) -> dict:
    from bottleneck.inspection import exact_duplicates, near_duplicates
    from bottleneck.inspection.duplicates import DEFAULT_THRESHOLD, NEIGHBOURS, candidate_pairs, without
    from bottleneck.inspection.findings import load_features
    from bottleneck.inspection.pixel_check import (
        MAX_RMS,
        near_duplicates_by_pixels,
        pixel_distances,
        tiny_images,
    )
    from bottleneck.inspection.rows import Rows

    src, planted = planted_source(args.out, args.per_class)
    cache = _extract(src, args)
    rows = Rows(cache)
    X = load_features(cache, rows)
    index = {str(i): k for k, i in enumerate(rows.id)}
    pl = [tuple(sorted((index[a], index[b]))) for a, b in planted]
    want = set(pl)
    kinds = {"exact": range(25), "jpeg q75": range(25, 38), "resized": range(38, 50)}
    exact = exact_duplicates(rows.hash)

    def score(flagged):
        found = len(want & flagged)
        return found / 50, len(flagged - want), (len(flagged) - found) / max(1, len(flagged))

    print(f"\nplanted duplicates: {cache.path} ({len(rows)} images), 50 planted train -> test pairs")
    print("old rule, features alone (cosine >= threshold; byte-identical copies also by their hash):")
    print("| threshold | recall | flagged train-test pairs | not planted | false share |")
    print("|---:|---:|---:|---:|---:|")
    pairs = without(near_duplicates(X, min(THRESHOLDS)), exact)
    old = []
    for t in THRESHOLDS:
        flagged = _flagged_cross(rows, pairs.take(pairs.score >= t), exact)
        recall, false, share = score(flagged)
        old.append({"threshold": t, "recall": recall, "false_share": share, "flagged": len(flagged)})
        print(f"| {t} | {recall:.2f} | {len(flagged)} | {false} | {share:.3f} |")
    for kind, ks in kinds.items():
        cos = [float(X[pl[k][0]] @ X[pl[k][1]]) for k in ks]
        print(f"{kind}: cosine of the planted pairs min {min(cos):.4f}, median {np.median(cos):.4f}")

    t0 = time.perf_counter()
    near, rule = near_duplicates_by_pixels(
        X, rows, exact, threshold=DEFAULT_THRESHOLD, neighbours=NEIGHBOURS,
        source_options=cache.meta.get("source_options"), resize=cache.config.resize,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    new = dict(zip(("recall", "false", "false_share"), score(_flagged_cross(rows, near, exact)), strict=True))
    within = int(np.sum(rows.split[near.a] == rows.split[near.b]))
    print(
        f"\nnew rule, defaults (each image's {NEIGHBOURS} nearest, pixel RMS <= {MAX_RMS}): recall "
        f"{new['recall']:.2f}, {new['false']} train-test pairs not planted (false share {new['false_share']:.3f}), "
        f"{within} within-split pairs; "
        f"{rule['candidate_pairs']} candidate pairs of {rule['images_compared']} images read, {seconds:.1f} s"
    )
    # Calibration: every candidate pair's pixel difference, the planted ones against the others.
    cand = without(candidate_pairs(X, neighbours=max(NEIGHBOURS, 20)), exact)
    need = np.unique(np.concatenate([cand.a, cand.b]))
    tiny = tiny_images(rows.manifest, rows.manifest_rows[need], resize=cache.config.resize)
    dist = pixel_distances(tiny, np.searchsorted(need, cand.a), np.searchsorted(need, cand.b))
    key = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(cand.a, cand.b, strict=True))}
    for kind, ks in list(kinds.items())[1:]:
        d = [dist[key[pl[k]]] if pl[k] in key else np.inf for k in ks]
        print(f"{kind}: pixel RMS of the planted pairs max {max(d):.2f}, median {np.median(d):.2f}")
    is_planted = np.array([(int(a), int(b)) in want for a, b in zip(cand.a, cand.b, strict=True)], bool)
    cross = rows.split[cand.a] != rows.split[cand.b]
    other = np.sort(dist[~is_planted])[:5]
    print(f"closest other candidate pairs: pixel RMS {', '.join(f'{v:.2f}' for v in other)}")
    print("| pixel RMS limit | recall | train-test pairs not planted | false share | within-split pairs |")
    print("|---:|---:|---:|---:|---:|")
    for limit in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        keep = dist <= limit
        recall, false, share = score(_flagged_cross(rows, cand.take(keep & cross), exact))
        print(f"| {limit} | {recall:.2f} | {false} | {share:.3f} | {int(np.sum(keep & ~cross))} |")
    print("| neighbours k | planted pairs among the candidates (25 altered) | candidate pairs |")
    print("|---:|---:|---:|")
    for k in (1, 2, 5, 10, 20):
        c = candidate_pairs(X, neighbours=k, threshold=1.0)
        got = {(int(a), int(b)) for a, b in zip(c.a, c.b, strict=True)}
        print(f"| {k} | {sum(pl[i] in got for i in range(25, 50))} | {len(c)} |")
    return {"old": old, "new": new}


# look-alike flips: each class to one similar class (Fashion-MNIST: T-shirt <-> shirt, pullover <-> coat,
# sandal <-> sneaker, dress -> coat, trouser -> dress, bag -> pullover, boot -> sneaker; digits: 0 -> 7 ... by eye)
LOOK_ALIKE = {"fm": [6, 3, 4, 4, 2, 7, 0, 5, 2, 7], "digits": [7, 7, 3, 8, 9, 6, 5, 1, 3, 4]}


def _noise_features(args):
    """(X (N, D) unit-norm, y (N,)) of the train rows of --dataset, extracted at --image-size."""
    from bottleneck.inspection.findings import load_features
    from bottleneck.inspection.rows import Rows

    if args.dataset == "digits":
        from sklearn.datasets import load_digits

        path = args.out / "digits.npz"
        if not path.exists():
            d = load_digits()
            x = np.round(d.images * (255 / 16)).astype(np.uint8)
            np.savez(path, x_train=x, y_train=d.target.astype(np.int64))
        src = path
    else:
        from bottleneck.data.datasets import export_fashion_mnist

        src = Path(export_fashion_mnist(args.out / f"fm-{args.per_class}", per_class=args.per_class,
                                        download=False)["path"])  # fmt: skip
    cache = _extract(src, args)
    rows = Rows(cache)
    train = rows.of("train")
    return load_features(cache, rows)[train], rows.label[train], cache


def bench_noise(args) -> dict:
    from bottleneck.inspection.label_errors import (
        estimated_error_counts,
        find_label_issues,
        lowest_confidence,
        out_of_fold_proba,
    )

    X, y, cache = _noise_features(args)
    k = len(cache.class_names)
    print(f"\nlabel noise: {cache.path}, {len(y)} train images, 5 % of the labels flipped ({args.flip})")
    print("| seed | oof accuracy | method | flagged | precision | recall |")
    print("|---:|---:|---|---:|---:|---:|")
    results = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        flipped = rng.choice(len(y), round(0.05 * len(y)), replace=False)
        noisy = y.copy()
        if args.flip == "uniform":
            noisy[flipped] = (y[flipped] + rng.integers(1, k, len(flipped))) % k
        else:
            noisy[flipped] = np.asarray(LOOK_ALIKE[args.dataset])[y[flipped]]
        t = time.perf_counter()
        proba = out_of_fold_proba(X, noisy, folds=5, seed=seed)
        fit_s = time.perf_counter() - t
        truth = set(flipped.tolist())

        def pr(found, truth=truth):
            found = set(np.asarray(found).tolist())
            hit = len(found & truth)
            return hit / max(1, len(found)), hit / len(truth)

        acc = float(np.mean(np.argmax(proba, 1) == noisy))
        new = find_label_issues(noisy, proba, "estimate")
        row = {"seed": seed, "fit_s": fit_s, "estimated": float(estimated_error_counts(noisy, proba).sum())}
        methods = [("estimate (new default)", new.rows)]
        try:
            old = find_label_issues(noisy, proba, "cleanlab")
            methods += [("cleanlab find_label_issues (old)", old.rows),
                        ("lowest self-confidence, cleanlab's count", lowest_confidence(noisy, proba, len(old)))]  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - cleanlab missing: the new rule alone
            print(f"cleanlab: {exc}")
        methods += [("lowest self-confidence, the new count", lowest_confidence(noisy, proba, len(new))),
                    ("lowest self-confidence, the true count", lowest_confidence(noisy, proba, len(truth)))]  # fmt: skip
        for name, found in methods:
            p_, r_ = pr(found)
            row[name] = {"flagged": len(found), "precision": p_, "recall": r_}
            print(f"| {seed} | {acc:.3f} | {name} | {len(found)} | {p_:.3f} | {r_:.3f} |")
        hit = np.isin(new.rows, flipped)
        row["suggested_right"] = float(np.mean(new.suggested[hit] == y[new.rows[hit]])) if hit.any() else None
        results.append(row)
    for name in results[0]:
        if isinstance(results[0][name], dict):
            p_ = [r[name]["precision"] for r in results]
            r_ = [r[name]["recall"] for r in results]
            print(f"{name}: precision median {np.median(p_):.3f} (min {min(p_):.3f}), recall median "
                  f"{np.median(r_):.3f} (min {min(r_):.3f}) over {len(results)} seeds")  # fmt: skip
    sugg = [r["suggested_right"] for r in results if r["suggested_right"] is not None]
    print(f"the suggested label is the true one for {np.mean(sugg):.3f} of the flipped images flagged; "
          f"out-of-fold fits {np.mean([r['fit_s'] for r in results]):.1f} s")  # fmt: skip
    return {"runs": results}


def bench_ranks(args) -> dict:
    """How far a JPEG q75 / resized copy's original is among all 60 000 train images (the choice of k)."""
    from PIL import Image

    from bottleneck.data.array_sources import read_idx
    from bottleneck.data.datasets import FASHION_MNIST_DIR
    from bottleneck.inspection.findings import load_features
    from bottleneck.inspection.pixel_check import pixel_distances, tiny_images
    from bottleneck.inspection.rows import Rows

    x = read_idx(sorted(FASHION_MNIST_DIR.glob("train-images*"))[0])
    pick = np.random.default_rng(args.seed + 5).choice(len(x), 300, replace=False)
    root = args.out / "copies"
    if not (root / "jpeg").exists():
        for kind in ("jpeg", "resized"):
            (root / kind).mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(pick):
            im = Image.fromarray(x[i], "L")
            im.save(root / "jpeg" / f"{i:05d}.jpg", "JPEG", quality=75)
            side = round(28 * (0.9 if n % 2 else 1.1))
            im.resize((side, side), Image.BILINEAR).save(root / "resized" / f"{i:05d}.png")
    copies = _extract(root, args)
    crows = Rows(copies)
    P = load_features(copies, crows)
    full = _full(args)
    frows = Rows(full)
    F = load_features(full, frows)[frows.of("train")]
    by_index = {int(i.split("/")[1]): r for r, i in enumerate(frows.id[frows.of("train")])}
    ctiny = tiny_images(crows.manifest, crows.manifest_rows, resize=copies.config.resize)
    print(
        f"\ncopies: {len(P)} (JPEG q75 and +-10 % resized copies of 300 train images) against {len(F)} train"
    )
    print("| copy | cosine to the original (min / median) | original among the copy's k nearest: k=1 | 5 | 10 "
          "| 20 | 50 | pixel RMS to the original (max / median) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---|")
    out = {}
    for kind in copies.class_names:
        sel = np.flatnonzero(crows.label == copies.class_names.index(kind))
        own = np.array([by_index[int(Path(crows.id[r]).stem)] for r in sel])
        S = P[sel] @ F.T
        so = S[np.arange(len(sel)), own]
        rank = (S > so[:, None]).sum(axis=1)
        otiny = tiny_images(
            frows.manifest, frows.manifest_rows[frows.of("train")][own], resize=full.config.resize
        )
        both = np.concatenate([ctiny[sel], otiny])
        d = pixel_distances(both, np.arange(len(sel)), len(sel) + np.arange(len(sel)))
        tops = [float(np.mean(rank < k)) for k in (1, 5, 10, 20, 50)]
        out[kind] = {"top": tops, "min_cosine": float(so.min()), "max_rms": float(d.max())}
        print(f"| {kind} | {so.min():.3f} / {np.median(so):.3f} | " + " | ".join(f"{t:.3f}" for t in tops)
              + f" | {d.max():.2f} / {np.median(d):.2f} |")  # fmt: skip
    return out


def _matmul_rate() -> float:
    a = np.random.default_rng(0).random((1024, 1280), np.float32)
    b = np.random.default_rng(1).random((20000, 1280), np.float32)
    a @ b.T
    t = time.perf_counter()
    for _ in range(3):
        a @ b.T
    return 3 * 2 * 1024 * 20000 * 1280 / (time.perf_counter() - t) / 1e9


def bench_scan(args) -> dict:
    import os
    import tracemalloc

    from bottleneck.inspection import DEFAULT_THRESHOLD, exact_duplicates
    from bottleneck.inspection.duplicates import NEIGHBOURS
    from bottleneck.inspection.findings import load_features
    from bottleneck.inspection.pixel_check import near_duplicates_by_pixels
    from bottleneck.inspection.rows import Rows

    cache = _full(args)
    rows = Rows(cache)
    rate = _matmul_rate()
    out = {"gflops": rate}
    threshold = args.threshold or DEFAULT_THRESHOLD

    def scan(rule):
        t0 = time.perf_counter()
        X = load_features(cache, rows)
        t1 = time.perf_counter()
        exact = exact_duplicates(rows.hash)
        near, r = near_duplicates_by_pixels(
            X, rows, exact, threshold=threshold, neighbours=NEIGHBOURS, pixel_check=rule == "new",
            source_options=cache.meta.get("source_options"), resize=cache.config.resize,
        )  # fmt: skip
        return X.shape, exact, near, r, t1 - t0, time.perf_counter() - t1

    for rule in ("old", "new") if args.rule == "both" else (args.rule,):
        load = os.getloadavg()[0]
        # Timed untraced (tracemalloc's hook on every allocation slowed the 70 000 image reads 2.7x), then run
        # again traced for the peak memory.
        shape, exact, near, r, read_s, scan_s = scan(rule)
        tracemalloc.start()
        scan(rule)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        cross_near = int(np.sum(rows.split[near.a] != rows.split[near.b]))
        cross_exact = int(np.sum(rows.split[exact.a] != rows.split[exact.b]))
        info = (
            f"cosine >= {threshold}"
            if rule == "old"
            else f"{r['rule']}: {r['candidate_pairs']} candidate pairs, {r['images_compared']} images read"
        )
        print(f"\nfull scan, {rule} rule ({info}; scan {r['scan']}): {shape[0]} x {shape[1]} features")
        print(
            f"read + normalise {read_s:.1f} s, duplicates {scan_s:.1f} s, whole {read_s + scan_s:.1f} s; peak "
            f"traced memory (a second run) {peak / 2**20:.0f} MiB (features {shape[0] * shape[1] * 4 / 2**20:.0f} "
            f"MiB); load average {load:.1f} at the start; float32 matmul at {rate:.0f} GFLOP/s before (the exact "
            f"scan would be {shape[0] ** 2 * shape[1] / 1e12:.1f} TFLOP)"
        )
        print(
            f"pairs: {len(exact)} exact ({cross_exact} train-test), {len(near)} near ({cross_near} train-test)"
        )
        out[rule] = {"seconds": read_s + scan_s, "scan_seconds": scan_s, "peak_mib": peak / 2**20, "load": load,
                     "near": len(near), "cross_near": cross_near, "exact": len(exact), "scan": r["scan"]}  # fmt: skip
        if rule == "new" and args.show:
            _montage(rows, near, args.out / "scan-near.png", cache)
        if args.exact:
            # The same rule with the exact scan, side by side: the bound switched off where pixel_check asks.
            import bottleneck.inspection.pixel_check as pixel_check

            chosen, pixel_check.bounded_rows_for = pixel_check.bounded_rows_for, lambda X: None
            try:
                _, _, near_x, r_x, read_x, scan_x = scan(rule)
            finally:
                pixel_check.bounded_rows_for = chosen
            same = set(zip(near.a.tolist(), near.b.tolist(), strict=True)) == set(
                zip(near_x.a.tolist(), near_x.b.tolist(), strict=True)
            )
            print(
                f"exact scan, same rule: whole {read_x + scan_x:.1f} s ({len(near_x)} near pairs, "
                f"{'the same' if same else 'NOT the same'} pairs); bounded / exact time "
                f"{(read_s + scan_s) / (read_x + scan_x):.2f}"
            )
            out[rule] |= {"exact_seconds": read_x + scan_x, "same_pairs": same}
    return out


def _montage(rows, near, path, cache) -> None:
    """The first 40 train-test near pairs side by side (top: train, bottom: test), to look at."""
    from PIL import Image

    from bottleneck.report.thumbnails import rebased

    cross = near.take(rows.split[near.a] != rows.split[near.b])
    cross = cross.take(np.argsort(cross.pixel)[:40])
    from bottleneck.data.source import open_reader

    reader = open_reader(rebased(rows.manifest, None))
    canvas = Image.new("RGB", (60 * max(1, len(cross)), 120))
    for n, (a, b) in enumerate(zip(cross.a, cross.b, strict=True)):
        for r, y in ((a, 0), (b, 60)):
            item = next(iter(rows.manifest.items_at([rows.manifest_rows[r]])))
            canvas.paste(Image.fromarray(reader.read(item)).resize((56, 56)), (n * 60, y))
    canvas.save(path)
    print(f"montage of {len(cross)} train-test pairs (smallest pixel difference first): {path}")


def bench_page(args) -> dict:
    import chromium

    from bottleneck.inspection import inspect_cache
    from bottleneck.runs import fit_head

    cache = _full(args)
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
    p.add_argument("what", choices=("planted", "ranks", "noise", "scan", "page", "all"))
    p.add_argument("--image-size", type=int, default=None, help="default: the backbone's (224 for Lite0)")
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument(
        "--threshold", type=float, default=None, help="near-duplicate threshold (default: the library's)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0], help="noise: e.g. 0,1,2"
    )
    p.add_argument("--dataset", choices=("fm", "digits"), default="fm", help="noise: the data set")
    p.add_argument(
        "--flip", choices=("uniform", "look-alike"), default="uniform", help="noise: where labels go"
    )
    p.add_argument(
        "--rule", choices=("old", "new", "both"), default="both", help="scan: which rule(s) to time"
    )
    p.add_argument("--show", action="store_true", help="scan: a montage of the train-test near pairs found")
    p.add_argument("--exact", action="store_true", help="scan: also time the exact scan, side by side")
    p.add_argument("--label-errors", action="store_true", help="page: also find label errors on all 70 000")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--full-cache", default=None, help="scan/ranks/page: an existing full Fashion-MNIST cache")
    p.add_argument("--out", type=Path, default=Path("runs") / "bench-inspect")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = {"planted": bench_planted, "ranks": bench_ranks, "noise": bench_noise, "scan": bench_scan,
             "page": bench_page}  # fmt: skip
    for name, step in steps.items():
        if args.what in (name, "all"):
            step(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
