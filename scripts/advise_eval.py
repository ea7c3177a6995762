"""Does following `advise` pay? Advise on a pilot, then run its printed commands on the whole data: the README table.

  python scripts/advise_eval.py --dataset digits          # one dataset per run (results saved as JSON)
  python scripts/advise_eval.py --dataset lfw
  python scripts/advise_eval.py --dataset fashion-mnist   # ~25 min on 2 cores: 70 000 images at the end
  python scripts/advise_eval.py --table                   # the table of every saved result

Datasets that install offline, of three kinds (each written once as an .npz with a train and a test split, or
read in place):
- fashion-mnist: Debian's `dataset-fashion-mnist` IDX files (60 000 / 10 000, 28x28 clothing), pilot 300 per class;
- digits: scikit-learn's bundled 8x8 handwritten digits (1 797; a stratified fifth as test), far from ImageNet,
  pilot 100 per class;
- lfw: scikit-image's `lfw_subset` (200 25x25 crops: faces or not; a stratified fifth as test), pilot 100.

For each: `advise` (Lite0 224 px, ImageNet weights, its short fine-tune) scores every candidate on the pilot's
val rows and, after its choice, on the test split; then its commands run verbatim in a shell (`bottleneck` is
`python -m bottleneck`) on the whole source, and the top layer and the pixels are fitted on the whole data the
same way, for comparison. Printed: the recommendation against the best candidate on test (the oracle), the top
layer and the pixels, on the pilot and on the whole data, and the cell's evidence (for its thresholds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PILOT = {"fashion-mnist": 300, "digits": 100, "lfw": 100}


def _split(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """A stratified fifth of each class as test."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: round(len(idx) * 0.2)]] = True
    return {"x_train": x[~test], "y_train": y[~test], "x_test": x[test], "y_test": y[test]}


def source_of(name: str, data: Path) -> Path:
    """The dataset as a bottleneck source (written once under ``data``)."""
    if name == "fashion-mnist":
        from bottleneck.data.datasets import FASHION_MNIST_DIR

        return FASHION_MNIST_DIR
    path = data / f"{name}.npz"
    if path.exists():
        return path
    data.mkdir(parents=True, exist_ok=True)
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.clip(d.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
        arrays = _split(x, d.target.astype(np.int64)) | {"class_names": np.array([str(i) for i in range(10)])}
    elif name == "lfw":
        from skimage.data import lfw_subset

        x = np.clip(np.rint(lfw_subset() * 255), 0, 255).astype(np.uint8)
        y = np.array([0] * 100 + [1] * 100)  # the first 100 are faces, the next 100 are not
        arrays = _split(x, y) | {"class_names": np.array(["face", "not a face"])}
    else:
        raise SystemExit(f"unknown dataset {name!r}; choose one of {', '.join(PILOT)}")
    np.savez(path, **arrays)
    return path


def sh(script: str, cwd: Path) -> str:
    """Run shell lines as printed, `bottleneck` being this Python's CLI; stdout (the last line: a path)."""
    prelude = f'bottleneck() {{ "{sys.executable}" -m bottleneck "$@"; }}\nset -e\n'
    done = subprocess.run(["bash", "-c", prelude + script], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed:\n{script}\n{done.stderr[-3000:]}")
    return done.stdout


def test_accuracy(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["metrics"]["test"]["accuracy"]


def run_advise(name: str, out: Path, per_class: int | None) -> dict:
    """Stage 1: `advise` on the pilot; its advice.json (and the seconds it took) under out/name."""
    from bottleneck.runs.advise import advise

    def say(line):
        print(line, file=sys.stderr, flush=True)

    work = out / name
    source = source_of(name, out / "data")
    t = time.perf_counter()
    advice = advise(
        source,
        per_class=per_class or PILOT[name],
        cache_dir=work / "cache",
        runs_dir=work / "runs",
        out=work / "advice",
        notify=say,
    )
    seconds = round(time.perf_counter() - t, 1)
    say(f"{name}: advise {seconds} s, recommended {advice.recommendation['name']}")
    (work / "advise_seconds.json").write_text(json.dumps({"seconds": seconds}))
    return advice.to_json()


def evaluate(name: str, out: Path, per_class: int | None, stage: str = "all") -> dict | None:
    """Stage 1 (advise) and/or stage 2 (follow its commands on the whole data, compare, save eval.json)."""
    work = out / name
    if stage in ("all", "advise"):
        run_advise(name, out, per_class)
    if stage == "advise":
        return None
    advice = json.loads((work / "advice" / "advice.json").read_text())
    advise_s = json.loads((work / "advise_seconds.json").read_text())["seconds"]
    source = Path(advice["source"])
    cache_dir, runs = work / "cache", work / "runs"
    rows = {r["name"]: r for r in advice["rows"]}
    scored = [r for r in advice["rows"] if r.get("test_accuracy") is not None]
    oracle = max(scored, key=lambda r: r["test_accuracy"])
    rec = advice["recommendation"]

    t = time.perf_counter()
    sh("\n".join(advice["commands"]), Path.cwd())  # verbatim, where advise ran: the user's path
    follow_s = time.perf_counter() - t
    run = runs / f"advised-{Path(str(source).rstrip('/')).stem}"
    if rec["fine_tune"]:
        run = Path(f"{run}-fine-tuned")
    whole = {"recommended": test_accuracy(run)}
    # The top layer and the pixels on the whole data, fitted the same way (a cache hit where they exist).
    frozen = json.loads((Path(str(run).removesuffix("-fine-tuned")) / "metrics.json").read_text())
    rec_cache = frozen["cache"]["path"]
    q = f"'{source}'"
    if "top_activation" in rec["layers"] and rec["backbone"] != "pixels":
        sh(f"bottleneck fit-head {rec_cache} --layers top --out {runs}/top -q", Path.cwd())
    else:
        sh(
            f"C=$(bottleneck extract {q} --layer top --cache-dir {cache_dir} -q)\n"
            f'bottleneck fit-head "$C" --out {runs}/top -q',
            Path.cwd(),
        )
    whole["top layer"] = test_accuracy(runs / "top")
    sh(
        f"C=$(bottleneck extract {q} --backbone pixels --cache-dir {cache_dir} -q)\n"
        f'bottleneck fit-head "$C" --out {runs}/pixels -q',
        Path.cwd(),
    )
    whole["pixels"] = test_accuracy(runs / "pixels")

    singles = [r for r in advice["rows"] if r["kind"] in ("block", "wide")]
    best_mid = max(singles, key=lambda r: r["val_accuracy"])
    features = max(
        (r for r in advice["rows"] if r["kind"] not in ("pixels", "fine-tune")),
        key=lambda r: r["val_accuracy"],
    )
    result = {
        "dataset": name,
        "source": str(source),
        "pilot": advice["pilot"],
        "train_per_class": advice["train_per_class"],
        "advise_seconds": round(advise_s, 1),
        "follow_seconds": round(follow_s, 1),
        "recommended": rec["name"],
        "reason": advice["reason"],
        "commands": advice["commands"],
        "pilot_test": {
            "recommended": rec["test_accuracy"],
            "oracle": [oracle["name"], oracle["test_accuracy"]],
            "top layer": rows["top layer"]["test_accuracy"],
            "pixels": rows["pixels"]["test_accuracy"] if "pixels" in rows else None,
        },
        "whole_test": whole,
        "cell": advice["cell"],
        "evidence": {
            "best mid-level layer": best_mid["name"],
            "mid minus top, val points": round(
                100 * (best_mid["val_accuracy"] - rows["top layer"]["val_accuracy"]), 2
            ),
            "mid minus top, test points": round(
                100 * (best_mid["test_accuracy"] - rows["top layer"]["test_accuracy"]), 2
            ),
            "features minus pixels, val points": round(
                100 * (features["val_accuracy"] - rows["pixels"]["val_accuracy"]), 2
            )
            if "pixels" in rows
            else None,
        },
        "rows": [
            {
                k: r.get(k)
                for k in ("name", "kind", "dims", "val_accuracy", "val_loss", "val_loss_se", "test_accuracy")
            }
            for r in advice["rows"]
        ],
    }
    (work / "eval.json").write_text(json.dumps(result, indent=2))
    return result


def table(out: Path) -> str:
    lines = [
        "| dataset | pilot train/val/test | recommended | rec. test | oracle (test) | top layer | pixels | "
        "whole: rec. / top / pixels | advise s |",
        "|---|---|---|---:|---|---:|---:|---|---:|",
    ]
    for path in sorted(out.glob("*/eval.json")):
        r = json.loads(path.read_text())
        p, w = r["pilot_test"], r["whole_test"]
        pilot = "/".join(str(r["pilot"].get(s, 0)) for s in ("train", "val", "test"))
        pix = "-" if p["pixels"] is None else f"{p['pixels']:.4f}"
        lines.append(
            f"| {r['dataset']} | {pilot} | {r['recommended']} | {p['recommended']:.4f} | {p['oracle'][0]} "
            f"({p['oracle'][1]:.4f}) | {p['top layer']:.4f} | {pix} | {w['recommended']:.4f} / "
            f"{w['top layer']:.4f} / {w['pixels']:.4f} | {r['advise_seconds']} |"
        )
    lines.append("")
    for path in sorted(out.glob("*/eval.json")):
        r = json.loads(path.read_text())
        lines.append(f"{r['dataset']}: cell {r['cell']['data']}, {r['cell']['similarity']}; {r['evidence']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(PILOT))
    p.add_argument(
        "--per-class", type=int, default=None, help="pilot train images per class (default: per dataset)"
    )
    p.add_argument("--out", type=Path, default=Path("runs") / "advise-eval")
    p.add_argument("--table", action="store_true", help="print the table of every saved result")
    p.add_argument(
        "--stage",
        choices=("all", "advise", "follow"),
        default="all",
        help="run in two pieces (advise, then follow)",
    )
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    if args.dataset:
        print(json.dumps(evaluate(args.dataset, args.out, args.per_class, args.stage), indent=2))
    if args.table or not args.dataset:
        print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
