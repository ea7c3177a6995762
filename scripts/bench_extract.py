"""Benchmark extraction against the usual recipe and the hardware limit; prints one table.

For each backbone, on the same generated JPEGs in class folders, measured in one run:
  recipe    keras.utils.image_dataset_from_directory(shuffle=False) + model.predict (the usual blog recipe,
            same feature model, so only the pipeline differs)
  tf        bottleneck extract, TensorFlow engine (end to end: decode, resize, compute, store)
  onnx      bottleneck extract, ONNX Runtime engine
  int8      bottleneck extract --precision int8 (the ONNX model quantized, calibrated on the same images)
  tf-pure / onnx-pure   each engine on an in-memory uint8 batch (the ceiling for end to end); onnx and int8
            runs are bracketed by pure rates right before and after, --rounds times, and run/pure is the median
and NumPy float32 matmul GFLOP/s (the hardware limit), the input's cost per image on one core (decode alone,
then the resize to the input size) with the bound it puts on run/pure (the engine gets the cores' time the
input leaves it: bound = engine core-seconds / (engine core-seconds + input core-seconds) per image), where the
compute phase's CPU goes per image (engine threads, decode threads, store threads, idle cores; Linux), the
cache-hit time, and peak RSS of extraction for a small vs a 10x larger image count (a flat RSS means features
stream to disk). Last, the fixed cost of a small run: `bottleneck extract` of new images in a fresh process,
using a verified ONNX model from its record (no TensorFlow import) versus verifying it again against
TensorFlow, alternated, median of --repeats.

Weights are random (weights="none"): the compute is identical to ImageNet weights and nothing is downloaded.

  python scripts/bench_extract.py --images 512 --backbones resnet50,mobilenet_v2,efficientnet_lite0,vgg16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import cache, partial
from pathlib import Path

import numpy as np


def make_jpegs(root: Path, n: int, size: int = 256, classes: int = 4, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        # smooth random images compress like photos; pure noise would make JPEG decoding unrealistically slow
        small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(d / f"{i:06d}.jpg", quality=90)
    return root


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    a @ b
    best = min(_timeit(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def input_cost(data: Path, size: int, n: int = 256, repeats: int = 3) -> dict:
    """Seconds per image on one core, as extraction decodes (median of ``repeats`` passes over ``n`` files'
    bytes held in memory): ``decode`` alone (with its copy into a NumPy array, which extraction skips: about
    0.08 ms of a 256 px image counted here rather than in the resize), ``resize`` (decode + resize to ``size``
    minus decode). Their sum is what extraction spends."""
    from bottleneck.data.decode import decode_image, decode_resized

    blobs = [f.read_bytes() for f in sorted(data.rglob("*.jpg"))[:n]]
    decode = np.median([_timeit(lambda: [decode_image(b) for b in blobs]) for _ in range(repeats)]) / len(
        blobs
    )
    both = np.median([_timeit(lambda: [decode_resized(b, size) for b in blobs]) for _ in range(repeats)])
    return {"decode": float(decode), "resize": float(both / len(blobs) - decode)}


def input_bound(engine: float, cost: dict) -> float:
    """The best run/pure the cores allow: per image the engine needs ``engine`` core-seconds at its pure rate,
    and the input its own on the same cores."""
    return engine / (engine + cost["decode"] + cost["resize"])


def _cpu(ms: dict) -> str:
    return ", ".join(f"{role} {v:.2f}" for role, v in ms.items())


def _rounds(ratios: list[float]) -> str:
    return " ".join(f"{r:.2f}" for r in ratios)


def _timeit(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def model_gflop(model) -> float:
    """Forward FLOPs per image (2 x multiply-adds of conv, depthwise conv and dense layers)."""
    import keras

    total = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            k = np.prod(layer.kernel_size)
            out = layer.output.shape
            total += 2 * k * out[1] * out[2] * out[3]
        elif isinstance(layer, keras.layers.Conv2D):
            k = np.prod(layer.kernel_size)
            cin = layer.input.shape[-1] // layer.groups
            out = layer.output.shape
            total += 2 * k * cin * out[1] * out[2] * out[3]
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total / 1e9


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _all_layers(layer)
        else:
            yield layer


def bench_recipe(model, data: Path, size: int, batch: int) -> float:
    import keras

    ds = keras.utils.image_dataset_from_directory(
        data, labels="inferred", image_size=(size, size), batch_size=batch, shuffle=False, verbose=False
    )
    t = time.perf_counter()
    n = 0
    feats = model.predict(ds.map(lambda x, y: x), verbose=0)
    n = len(feats)
    return n / (time.perf_counter() - t)


def bench_pure(engine, size: int, batch: int, seconds: float = 6.0) -> float:
    return pure_rate_and_cpu(engine, size, batch, seconds)[0]


def pure_rate_and_cpu(engine, size: int, batch: int, seconds: float = 6.0) -> tuple[float, dict]:
    """img/s of the engine alone on an in-memory uint8 batch, and its CPU ms per image: ``engine`` (every thread
    of the process, all of them the engine's here) and ``idle`` (what the cores did not use of the wall time)."""
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    engine(x)
    n, t, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t < seconds or n < 2 * batch:
        engine(x)
        n += batch
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return n / wall, {"engine": cpu / n * 1e3, "idle": (_cores() * wall - cpu) / n * 1e3}


@cache
def _cores() -> int:
    """The cores extraction uses, read once: the pure rates, the compute phase's idle time and the engine's
    core-ms all count the same cores."""
    from bottleneck import _tf

    return _tf.cpu_count()


def _task_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by native thread id (Linux; else empty)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []:
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


# Thread name prefixes of extraction's own threads (iter_groups' decode pool, compute_split's committer, zarr's
# I/O loop); every other thread (the caller and ONNX Runtime's or TensorFlow's pools) is the engine's.
_ROLES = (("decode", "input"), ("commit", "store"), ("zarr", "store"), ("asyncio", "store"))


class ThreadCpu:
    """CPU time by role (engine, input, store) since it was made, from per-thread snapshots. Snapshots merge, so a
    thread that ended keeps what it had at the last one taken while it ran (the decode pool ends before the last
    commit: its last batch or so is not counted)."""

    def __init__(self):
        self.start = _task_cpu()
        self.last = dict(self.start)
        self.names: dict[int, str] = {}
        self.snap()

    def snap(self) -> None:
        self.last.update(_task_cpu())
        self.names.update({t.native_id: t.name for t in threading.enumerate()})

    def by_role(self) -> dict[str, float]:
        out = {"engine": 0.0, "input": 0.0, "store": 0.0}
        for tid, cpu in self.last.items():
            name = self.names.get(tid, "")
            out[next((role for prefix, role in _ROLES if name.startswith(prefix)), "engine")] += (
                cpu - self.start.get(tid, 0.0)
            )
        return out


class Steady:
    """Progress callback that times the compute phase alone (after model build, checks and the first batch), and
    the CPU each role of the process's threads used meanwhile."""

    def __init__(self):
        self.points = []
        self.cpu: ThreadCpu | None = None

    def __call__(self, stage, done, total):
        if stage != "check" and done:
            self.points.append((time.perf_counter(), done))
            if self.cpu is None:
                self.cpu = ThreadCpu()
            else:
                self.cpu.snap()

    def rate(self) -> float:
        if len(self.points) < 2:
            return float("nan")
        (t0, d0), (t1, d1) = self.points[0], self.points[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else float("nan")

    def cpu_ms(self) -> dict:
        """CPU ms per image of the compute phase by role, and ``idle``: the cores' wall time no thread used."""
        if len(self.points) < 2 or self.cpu is None:
            return {}
        (t0, d0), (t1, d1) = self.points[0], self.points[-1]
        roles = self.cpu.by_role()
        n = d1 - d0
        out = {role: sec / n * 1e3 for role, sec in roles.items()}
        out["idle"] = (_cores() * (t1 - t0) - sum(roles.values())) / n * 1e3
        return out


def bracketed(engine, size: int, batch: int, run, rounds: int) -> tuple[dict, float, dict, list[float]]:
    """``rounds`` whole runs, each with the engine's pure rate timed right before and right after it: this
    machine's speed drifts by tens of percent within minutes, and a pure rate taken minutes away from the run made
    run/pure read 0.74 one day and 1.35 the next. Returns the median round (by run/pure): its run, its pure rate
    and pure CPU ms per image (the means of its two brackets); and every round's run/pure, so that one disturbed
    round cannot make the figure."""
    results = []
    for _ in range(max(1, rounds)):
        before = pure_rate_and_cpu(engine, size, batch)
        r = run()
        after = pure_rate_and_cpu(engine, size, batch)
        pure = (before[0] + after[0]) / 2
        cpu = {k: (before[1][k] + after[1][k]) / 2 for k in before[1]}
        results.append((r["steady"] / pure, r, pure, cpu))
    results.sort(key=lambda x: x[0])
    _, r, pure, cpu = results[len(results) // 2]
    return r, pure, cpu, [round(x[0], 4) for x in results]


def bench_extract(data: Path, backbone: str, engine: str, batch: int, cache_dir: Path, **kw) -> dict:
    """Wall-clock img/s of a whole `extract` call (model build, image checks, decode, compute, store), its
    steady compute-phase rate, and the cache-hit re-run time."""
    import bottleneck

    # The ONNX model was converted (into cache_dir/engines) before this timed run, as a user's second run finds it.
    for old in cache_dir.glob(f"{backbone}-*"):
        shutil.rmtree(old)
    steady = Steady()
    t = time.perf_counter()
    r = bottleneck.extract(
        data,
        backbone=backbone,
        weights="none",
        engine=engine,
        batch_size=batch,
        cache_dir=cache_dir,
        progress=steady,
        **kw,
    )
    wall = r.computed / (time.perf_counter() - t)
    t = time.perf_counter()
    hit = bottleneck.extract(
        data, backbone=backbone, weights="none", engine=engine, batch_size=batch, cache_dir=cache_dir, **kw
    )
    assert hit.hit
    return {
        "wall": wall,
        "steady": steady.rate(),
        "cpu": steady.cpu_ms(),
        "hit": time.perf_counter() - t,
        "engine": r.engine,
        "cache": r.cache,
    }


RSS_CHILD = """
import sys, bottleneck
bottleneck.extract(sys.argv[1], backbone="mobilenet_v2", weights="none", image_size=96, engine=sys.argv[3],
                   cache_dir=sys.argv[2])
# VmHWM is this process's own peak; ru_maxrss would carry over the parent's peak through fork + exec.
print(int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) / 1024)
"""


def peak_rss_mb(data: Path, cache_dir: Path, engine: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(data), str(cache_dir), engine],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def small_runs(work: Path, n: int, repeats: int) -> dict:
    """Median wall seconds of whole CLI extractions of n new images, with the verification record vs without."""
    cache = work / "small-cache"
    cmd = [sys.executable, "-m", "bottleneck", "extract", "--weights", "none", "--engine", "onnx", "-q"]
    cmd += ["--cache-dir", str(cache)]
    subprocess.run(
        [*cmd, str(make_jpegs(work / "small0", n, size=128, seed=99))], check=True, capture_output=True
    )
    times: dict[str, list[float]] = {"record": [], "verify": []}
    for i in range(2 * repeats):
        kind = ("record", "verify")[i % 2]
        if kind == "verify":
            for f in (cache / "engines").glob("*.verified.json"):
                f.unlink()
        data = make_jpegs(work / f"small{i + 1}", n, size=128, seed=100 + i)  # new images: a cache miss
        t = time.perf_counter()
        subprocess.run([*cmd, str(data)], check=True, capture_output=True)
        times[kind].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=512)
    p.add_argument(
        "--backbones",
        default="resnet50,mobilenet_v2,efficientnet_lite0,vgg16",
        help="'' for the RSS part only",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--int8", action=argparse.BooleanOptionalAction, default=True, help="also time --precision int8"
    )
    p.add_argument(
        "--rss-images", default="2000,20000", help="image counts for the peak-RSS comparison ('' to skip)"
    )
    p.add_argument("--small-images", type=int, default=64, help="images per small run (0 to skip)")
    p.add_argument("--repeats", type=int, default=3, help="small runs of each kind")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="bracketed runs per engine (pure, run, pure); run/pure is the median round's, every round is printed",
    )
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    import bottleneck
    from bottleneck import _tf
    from bottleneck.inference.chooser import choose_engine
    from bottleneck.inference.engines import OnnxEngine, convert_to_onnx, onnx_model_path

    _tf.configure_threads()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-"))
    data = make_jpegs(work / "images", args.images)
    peak = sgemm_gflops()
    cores = _cores()
    print(f"cores: {cores}   images: {args.images} JPEG 256x256   NumPy sgemm: {peak:.0f} GFLOP/s\n")
    rows = []
    header = (
        f"{'backbone':<20}{'GFLOP/img':>10}{'recipe':>8}{'tf':>7}{'onnx':>7}{'onnx-run':>9}{'tf-pure':>8}"
        f"{'onnx-pure':>10}{'GFLOP/s':>8}{'/sgemm':>7}{'run/pure':>9}{'bound':>7}{'onnx/tf':>8}{'/recipe':>8}{'hit s':>7}"
        f"{'int8':>7}{'int8/onnx':>10}{'/recipe':>8}{'int8-run':>9}{'int8-pure':>10}{'run/pure':>9}"
    )
    print(header)
    for name in [b for b in args.backbones.split(",") if b]:
        cfg = bottleneck.ExtractConfig(backbone=name, weights="none", batch_size=args.batch_size)
        tf_engine = choose_engine(cfg.replace(engine="tensorflow"), work / "cache")
        size = tf_engine.input_size
        gflop = model_gflop(tf_engine.model)
        onnx_path = onnx_model_path(cfg, size, work / "cache")
        if not onnx_path.exists():
            convert_to_onnx(tf_engine, onnx_path)
        onnx_engine = OnnxEngine(onnx_path, size, tf_engine.feature_shape)
        tf_pure = bench_pure(tf_engine, size, args.batch_size)
        cost = input_cost(data, size)
        recipe = bench_recipe(tf_engine.model, data, size, args.batch_size)
        tf_run = bench_extract(data, name, "tensorflow", args.batch_size, work / "cache")
        onnx_run, onnx_pure, onnx_pure_cpu, onnx_ratios = bracketed(
            onnx_engine,
            size,
            args.batch_size,
            partial(bench_extract, data, name, "onnx", args.batch_size, work / "cache"),
            args.rounds,
        )
        int8 = {"precision": "int8", "accept_drift": True}  # random weights: speed only, not agreement
        int8_run = {"wall": float("nan"), "steady": float("nan"), "cpu": {}}
        int8_pure_cpu: dict = {}
        int8_pure = float("nan")
        int8_ratios = [float("nan")]
        if args.int8:
            # Quantized once before the timed run, as a user's second run finds it.
            quantized = bottleneck.extract(
                data, backbone=name, weights="none", cache_dir=work / "cache", **int8
            )
            int8_engine = choose_engine(
                quantized.cache.config, work / "cache", int8_meta=quantized.cache.meta
            )
            int8_run, int8_pure, int8_pure_cpu, int8_ratios = bracketed(
                int8_engine,
                size,
                args.batch_size,
                partial(bench_extract, data, name, "onnx", args.batch_size, work / "cache", **int8),
                args.rounds,
            )
        best = max(tf_run["wall"], onnx_run["wall"])
        row = {
            "backbone": name,
            "gflop_per_image": gflop,
            "recipe": recipe,
            "tf": tf_run["wall"],
            "onnx": onnx_run["wall"],
            "tf_steady": tf_run["steady"],
            "onnx_steady": onnx_run["steady"],
            "onnx_engine_used": onnx_run["engine"],
            "tf_pure": tf_pure,
            "onnx_pure": onnx_pure,
            "onnx_gflops": onnx_pure * gflop,
            "onnx_gflops_over_sgemm": onnx_pure * gflop / peak,
            "steady_over_pure": onnx_run["steady"] / onnx_pure,  # the median round's own
            "steady_over_pure_rounds": onnx_ratios,
            "run_cpu_ms": onnx_run["cpu"],
            "pure_cpu_ms": onnx_pure_cpu,
            "input_decode_ms": cost["decode"] * 1e3,
            "input_resize_ms": cost["resize"] * 1e3,
            "engine_core_ms": cores / onnx_pure * 1e3,
            "input_bound": input_bound(cores / onnx_pure, cost),
            "tf_steady_over_pure": tf_run["steady"] / tf_pure,
            "onnx_over_tf": onnx_run["wall"] / tf_run["wall"],
            "best_over_recipe": best / recipe,
            "hit_seconds": onnx_run["hit"],
            "int8": int8_run["wall"],
            "int8_steady": int8_run["steady"],
            "int8_over_onnx": int8_run["wall"] / onnx_run["wall"],
            "int8_over_recipe": int8_run["wall"] / recipe,
            "int8_pure": int8_pure,
            "int8_steady_over_pure": int8_run["steady"] / int8_pure,
            "int8_steady_over_pure_rounds": int8_ratios,
            "int8_run_cpu_ms": int8_run["cpu"],
            "int8_pure_cpu_ms": int8_pure_cpu,
            "int8_input_bound": input_bound(cores / int8_pure, cost),
            "sgemm_gflops": peak,
        }
        rows.append(row)
        print(
            f"{name:<20}{gflop:>10.2f}{recipe:>8.1f}{row['tf']:>7.1f}{row['onnx']:>7.1f}{row['onnx_steady']:>9.1f}"
            f"{tf_pure:>8.1f}{onnx_pure:>10.1f}{row['onnx_gflops']:>8.0f}{row['onnx_gflops_over_sgemm']:>7.2f}"
            f"{row['steady_over_pure']:>9.2f}{row['input_bound']:>7.2f}{row['onnx_over_tf']:>8.2f}{row['best_over_recipe']:>8.2f}"
            f"{row['hit_seconds']:>7.2f}{row['int8']:>7.1f}{row['int8_over_onnx']:>10.2f}"
            f"{row['int8_over_recipe']:>8.2f}{row['int8_steady']:>9.1f}{int8_pure:>10.1f}"
            f"{row['int8_steady_over_pure']:>9.2f}",
            flush=True,
        )
    print(
        "\nimg/s: recipe = image_dataset_from_directory + model.predict; tf / onnx = whole `extract` calls "
        "(model build,\nimage checks, decode, compute, store); onnx-run = its compute phase; *-pure = the engine "
        "alone on an\nin-memory batch. GFLOP/s = onnx-pure x GFLOP/img (/sgemm: over the NumPy matmul peak); "
        "run/pure = onnx-run / onnx-pure (the median of --rounds bracketed rounds);\nbound = the most run/pure can be when decoding and resizing share the cores (input ms per image below);\nonnx/tf and /recipe compare whole calls (best engine vs recipe); int8 = whole `extract --precision int8`\ncalls (model quantized beforehand), int8/onnx and its /recipe against the same calls;\nint8-run = its compute phase, int8-pure = the int8 engine alone, run/pure their ratio."
    )
    for row in rows:
        print(
            f"{row['backbone']}: input per image on one core: decode {row['input_decode_ms']:.2f} ms + resize "
            f"{row['input_resize_ms']:.2f} ms; engine {row['engine_core_ms']:.2f} core-ms "
            f"(fp32 bound {row['input_bound']:.2f}, run/pure {row['steady_over_pure']:.2f}; int8 bound "
            f"{row['int8_input_bound']:.2f}, run/pure {row['int8_steady_over_pure']:.2f})"
        )
        print(
            f"{row['backbone']}: run/pure of each bracketed round, sorted: fp32 "
            f"{_rounds(row['steady_over_pure_rounds'])}; int8 {_rounds(row['int8_steady_over_pure_rounds'])}"
        )
        for kind, prefix in (("fp32", ""), ("int8", "int8_")):
            if row[f"{prefix}run_cpu_ms"]:
                print(
                    f"{row['backbone']} {kind}: CPU ms per image in the median round's compute phase: "
                    f"{_cpu(row[f'{prefix}run_cpu_ms'])}; the engine alone: {_cpu(row[f'{prefix}pure_cpu_ms'])}"
                )
    rss = {}
    if args.rss_images:
        for n in [int(x) for x in args.rss_images.split(",")]:
            d = make_jpegs(work / f"rss{n}", n, size=64)
            rss[n] = peak_rss_mb(d, work / "rss-cache", "auto")
        print(
            "peak RSS (mobilenet_v2 @96px): " + ", ".join(f"{n} images: {mb:.0f} MB" for n, mb in rss.items())
        )
    small = {}
    if args.small_images:
        small = small_runs(work, args.small_images, args.repeats)
        print(
            f"small run ({args.small_images} new images, efficientnet_lite0, onnx, whole CLI process, median of "
            f"{args.repeats}): verified model reused {small['record']:.2f} s, verified again "
            f"{small['verify']:.2f} s ({small['verify'] / small['record']:.1f}x)"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "rss_mb": rss, "sgemm_gflops": peak, "small_run_s": small}, indent=1)
        )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
