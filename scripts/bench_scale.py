"""Benchmark what scales with the number of files: a cache hit on many unchanged files, and one changed file.

Generates (once, reused from --work) N tiny PNGs in class folders (a few hundred bytes each), extracts them once
with a trivial backbone (MobileNetV2 at 32 px, random weights, ONNX), then measures in one run:
  hit            a second `extract` of the same folder: seconds, and image files opened (counted by wrapping
                 builtins.open), with the hash index (the default) and with --rehash (every file read)
  one changed    one file rewritten with new content: files opened, rows computed and reused
and, with --rows N, the manifest of an N-row array source (a folder of .npy pairs, 8x8 RGB rows): seconds to
open it (hash every row, build the manifest, fingerprint it) and the extra peak RSS, in a fresh process;
and, with --cluster-images N, the same extraction of N tiny PNGs in one process and on Dask LocalClusters
(started before the clock, as a long-lived cluster is): throughputs, bitwise equality of the stores, the
per-task overhead (one worker vs one process, per task) against a ResNet50 chunk's compute time, and a run
during which one of two workers is SIGKILLed.

  python scripts/bench_scale.py --files 200000 --rows 1000000 --cluster-images 4000 --work /tmp/bench-scale
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_tiny_pngs(root: Path, n: int, classes: int = 10, seed: int = 0) -> Path:
    """n PNGs of 8x8 random pixels (about 250 bytes each), aged an hour so the index trusts their times."""
    from PIL import Image

    done = root / ".done"
    if done.exists() and done.read_text() == f"{n} {classes} {seed}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    old = time.time() - 3600
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
    pixels = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    for i in range(n):
        path = root / f"class{i % classes}" / f"{i:07d}.png"
        Image.fromarray(pixels[i]).save(path)
        os.utime(path, (old, old))
    done.write_text(f"{n} {classes} {seed}")
    return root


MANIFEST_CHILD = """
import sys, time
from bottleneck.data import open_source
def rss(field):
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1]) / 1024
base = rss("VmRSS:")
t = time.perf_counter()
with open_source(sys.argv[1]) as src:
    fp = src.manifest.fingerprint()
    n = len(src.manifest.items)
print(f"{n} {time.perf_counter() - t:.2f} {rss('VmHWM:') - base:.0f}")
"""


def manifest_of_rows(work: Path, rows: int) -> tuple[int, float, float]:
    """(rows, seconds, extra peak MB) of opening an array source of ``rows`` rows in a fresh process."""
    import subprocess

    folder = work / f"rows{rows}"
    if not (folder / "y_train.npy").exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        np.save(folder / "x_train.npy", rng.integers(0, 256, (rows, 8, 8, 3), dtype=np.uint8))
        np.save(folder / "y_train.npy", np.arange(rows) % 10)
    out = subprocess.run([sys.executable, "-c", MANIFEST_CHILD, str(folder)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    n, seconds, mb = out.stdout.split()
    return int(n), float(seconds), float(mb)


def files_part(args, work: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_input import counting

    import bottleneck

    t = time.perf_counter()
    data = make_tiny_pngs(work / f"tiny{args.files}", args.files)
    made = time.perf_counter() - t
    mb = sum(f.stat().st_size for f in data.rglob("*.png")) / 1e6
    cache = work / "cache"
    kw = dict(backbone="mobilenet_v2", weights="none", image_size=32, engine="onnx", batch_size=256)
    t = time.perf_counter()
    first = bottleneck.extract(data, cache_dir=cache, **kw)
    print(
        f"{args.files} PNGs, {mb:.0f} MB (generated in {made:.0f} s); first extract "
        f"{time.perf_counter() - t:.1f} s ({'hit' if first.hit else f'{first.computed} computed'})"
    )
    for label, rehash in (("hit, hash index", False), ("hit, --rehash", True), ("hit, hash index", False)):
        with counting(data) as counts:
            t = time.perf_counter()
            r = bottleneck.extract(data, cache_dir=cache, rehash=rehash, **kw)
            s = time.perf_counter() - t
        assert r.hit
        print(f"{label:<18} {s:6.2f} s, {counts['opens']} image files opened")
    victim = sorted((data / "class3").glob("*.png"))[5]
    saved = victim.read_bytes()
    try:
        from PIL import Image

        rng = np.random.default_rng(time.time_ns())  # new content on every run: never a cache made before
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(victim)
        with counting(data) as counts:
            t = time.perf_counter()
            r = bottleneck.extract(data, cache_dir=cache, **kw)
            s = time.perf_counter() - t
        print(
            f"one changed file:  {s:6.2f} s, {counts['opens']} image files opened, {r.computed} row computed, "
            f"{r.reused} reused"
        )
    finally:
        victim.write_bytes(saved)
        old = time.time() - 3600
        os.utime(victim, (old, old))


def cluster_part(args, work: Path) -> None:
    import signal
    import threading

    from distributed import Client, LocalCluster

    from bottleneck.inference.plan import chunk_rows_for
    from bottleneck.inference.runner import run_extraction

    data = make_tiny_pngs(work / f"cluster{args.cluster_images}", args.cluster_images, seed=1)
    cache = work / "cluster-cache"
    kw = dict(
        backbone="mobilenet_v2", weights="none", image_size=32, engine="onnx", batch_size=32, chunk_rows=256
    )
    tasks = -(-args.cluster_images // 256)
    run_extraction(
        data, cache_dir=cache, **kw
    )  # converts and verifies the ONNX model once, for every run below

    def timed(**extra):
        t = time.perf_counter()
        r = run_extraction(data, cache_dir=cache, force=True, **kw, **extra)
        return time.perf_counter() - t, r.cache.load("train")[0]

    one_s, ref = timed()
    print(
        f"{args.cluster_images} PNGs in {tasks} ranges of 256 rows; one process: {args.cluster_images / one_s:.0f} img/s"
    )
    for n in (1, 2):
        with LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=None) as lc:
            address = lc.scheduler_address
            first_s, x = timed(cluster=address)  # each worker builds its engine here
            steady_s, y = timed(cluster=address)
            same = x.tobytes() == ref.tobytes() and y.tobytes() == ref.tobytes()
            print(
                f"local cluster, {n} worker(s): first {args.cluster_images / first_s:.0f} img/s, then "
                f"{args.cluster_images / steady_s:.0f} img/s; stores bitwise equal to one process: {same}"
            )
            if n == 1:
                per_task = (steady_s - one_s) / tasks
                rows = chunk_rows_for(32, (2048,), "float32")
                chunk_s = rows / args.resnet50_rate
                print(
                    f"per-task overhead (1 worker vs 1 process): {per_task * 1000:.0f} ms a task = "
                    f"{100 * per_task / chunk_s:.2f} % of a ResNet50 chunk ({rows} rows at "
                    f"{args.resnet50_rate} img/s = {chunk_s:.0f} s)"
                )
                continue
            with Client(lc, set_as_default=False) as client:
                out, thread = {}, None

                def run(out=out, address=address):
                    out["t"], out["x"] = timed(cluster=address)

                thread = threading.Thread(target=run)
                thread.start()
                while thread.is_alive() and not list(cache.glob("*/commits/train/*.json")):
                    time.sleep(0.01)
                pids = client.run(os.getpid)
                alive = thread.is_alive()
                os.kill(next(iter(pids.values())), signal.SIGKILL)
                thread.join()
                print(
                    f"one of 2 workers SIGKILLed mid-run ({alive=}): completed in {out['t']:.1f} s, "
                    f"bitwise equal: {out['x'].tobytes() == ref.tobytes()}"
                )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=200_000, help="0 to skip the file part")
    p.add_argument("--rows", type=int, default=0, help="also time the manifest of an N-row array source")
    p.add_argument(
        "--cluster-images", type=int, default=0, help="also compare Dask clusters with one process"
    )
    p.add_argument(
        "--resnet50-rate",
        type=float,
        default=24.4,
        help="ResNet50 img/s of one process here (scripts/bench_extract.py: fp32 ONNX, 2 cores), for the overhead",
    )
    p.add_argument("--work", type=Path, default=None, help="scratch folder; images are kept there for reuse")
    args = p.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    if args.files:
        files_part(args, work)
    if args.rows:
        n, seconds, mb = manifest_of_rows(work, args.rows)
        print(f"manifest of a {n}-row array source: {seconds:.2f} s, {mb:.0f} MB extra peak RSS")
    if args.cluster_images:
        cluster_part(args, work)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
