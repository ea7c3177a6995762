"""Benchmark an ONNX model file as the backbone against ONNX Runtime running that file itself (issue #33).

The "user's file" is a PyTorch-style NCHW ResNet-like classifier made without torch: a Keras ResNet50 (or a
ResNet-18-like net, --arch resnet18) with random weights, traced behind an NCHW->NHWC transpose and converted
by tf2onnx (float32 input "input" (N, 3, S, S), output "logits"), so the file has a classifier tail and the
default features are the classifier's input. --model PATH benches any .onnx file instead (preprocess torch).
Measured in one run, on the same machine, medians of --repeats:

  pure          onnxruntime.InferenceSession on the user's file itself (the engine's thread settings: intra-op
                threads = cores, sequential, all graph optimizations, no spinning), fed pre-made float32 NCHW
                batches of --batch-size
  pure-spin     the same with ONNX Runtime's default spinning thread pool (for reference)
  ours-compute  bottleneck's engine (the feature model: uint8 NHWC in, Cast/Sub/Div/Transpose, the graph pruned
                to the tap, pooled) on pre-made uint8 batches
  pruned        that feature model without its preprocessing prefix, fed the float32 NCHW batches (the prefix's
                cost is pruned vs ours-compute; pruning the tail is pruned vs pure)
  ours-extract  whole `bottleneck.extract` calls on generated JPEGs (image checks, decode, resize, compute,
                store), a cache miss each (everything under the cache dir removed but the prepared engines):
                computed rows / wall seconds of the call; "steady" is its compute phase from the progress
  int8          whole extract calls with precision="int8" (accept_drift=True, calibration=64; quantized once
                beforehand), alternated with the fp32 calls above; and the int8 engine on uint8 batches
pure, pure-spin, ours-compute and pruned are timed in rounds (a, a', b, d, a, a', b, d, ...), the fp32 and int8
extracts likewise, so that noise hits each alike. Weights are random: speed only (int8 agreement is low).

  python scripts/bench_onnx_file.py --arch resnet50 --image-size 160 --images 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import make_jpegs  # noqa: E402


def resnet18(keras, size: int, classes: int = 1000):
    """A ResNet-18-like Keras model (basic blocks 2-2-2-2, 64..512 filters), logits out."""
    layers = keras.layers
    inp = keras.Input((size, size, 3))
    x = layers.Conv2D(64, 7, 2, padding="same", use_bias=False)(inp)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    for filters, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            y = layers.Conv2D(filters, 3, s, padding="same", use_bias=False)(x)
            y = layers.ReLU()(layers.BatchNormalization()(y))
            y = layers.BatchNormalization()(layers.Conv2D(filters, 3, 1, padding="same", use_bias=False)(y))
            if s != 1 or x.shape[-1] != filters:
                x = layers.BatchNormalization()(layers.Conv2D(filters, 1, s, use_bias=False)(x))
            x = layers.ReLU()(layers.Add()([y, x]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(classes)(x))


def make_model(path: Path, arch: str, size: int) -> None:
    """Write the NCHW float32 ONNX classifier of ``arch`` at ``size`` to ``path`` (TensorFlow + tf2onnx)."""
    import onnx

    from bottleneck import _onnx, _tf

    _tf.configure_threads()
    tf = _tf.tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    if arch == "resnet50":
        model = keras.applications.ResNet50(weights=None, include_top=True, input_shape=(size, size, 3))
    else:
        model = resnet18(keras, size)

    @tf.function
    def nchw(x):
        return model(tf.transpose(x, [0, 2, 3, 1]), training=False)

    spec = [tf.TensorSpec([None, 3, size, size], tf.float32)]
    proto = _onnx.function_to_onnx(nchw, spec, input_name="input", output_name="logits")
    onnx.save(proto, str(path))


def ort_session(model, threads: int, spinning: bool = False):
    """An InferenceSession with OnnxEngine's settings (``spinning``: ONNX Runtime's default pool instead)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def pruned_model(feature_path: Path, input_name: str, shape: tuple):
    """The feature model at ``feature_path`` without its preprocessing prefix: float32 ``input_name`` (N, *shape)
    in, as the user's graph takes it."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(feature_path))
    g = m.graph
    prefix = [n for n in g.node if any(o.startswith("pre_") or o == input_name for o in n.output)]
    keep = [n for n in g.node if n not in prefix]
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if not t.name.startswith("pre_")]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.input[:]
    g.input.append(helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", *shape]))
    return m


def rate(fn, batch: int, seconds: float) -> float:
    """Images/s of ``fn()`` (one batch per call) over at least ``seconds`` and 3 calls, after one warm-up."""
    fn()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds or n < 3 * batch:
        fn()
        n += batch
    return n / (time.perf_counter() - t)


class Steady:
    """Progress callback timing the compute phase (from the first computed batch to the last)."""

    def __init__(self):
        self.points = []

    def __call__(self, stage, done, total):
        if stage != "check" and done:
            self.points.append((time.perf_counter(), done))

    def rate(self) -> float:
        if len(self.points) < 2:
            return float("nan")
        (t0, d0), (t1, d1) = self.points[0], self.points[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else float("nan")


def clear_cache(cache_dir: Path) -> None:
    """Everything under ``cache_dir`` but the prepared engines (feature model, int8 model and their records)."""
    for p in cache_dir.iterdir() if cache_dir.exists() else []:
        if p.name != "engines":
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def timed_extract(data: Path, model: Path, cache_dir: Path, n: int, **kw) -> dict:
    """One whole extract call, a cache miss: computed rows / wall seconds, the compute phase's rate."""
    import bottleneck

    clear_cache(cache_dir)
    steady = Steady()
    t = time.perf_counter()
    r = bottleneck.extract(
        data, backbone=str(model), preprocess="torch", cache_dir=cache_dir, progress=steady, **kw
    )
    wall = time.perf_counter() - t
    assert not r.hit and r.computed == n and r.reused == 0, (r.hit, r.computed, r.reused)
    return {
        "wall": r.computed / wall,
        "seconds": wall,
        "steady": steady.rate(),
        "path": r.path,
        "engine": r.engine,
    }


def all_of(runs: list[dict]) -> str:
    return " ".join(f"{r['wall']:.1f}" for r in runs)


def med(xs) -> float:
    return float(np.median(xs))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", type=Path, default=None, help="bench this .onnx file (preprocess torch) instead"
    )
    p.add_argument("--arch", choices=("resnet50", "resnet18"), default="resnet50", help="the generated model")
    p.add_argument("--image-size", type=int, default=160, help="the generated model's input size")
    p.add_argument("--images", type=int, default=256, help="JPEGs per extract call")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="per in-memory throughput measurement")
    p.add_argument("--calibration", type=int, default=64, help="int8 calibration images")
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True, help="time precision int8")
    p.add_argument(
        "--work", type=Path, default=None, help="scratch folder, kept (default: a temp dir, removed)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--make-model", type=Path, default=None, help=argparse.SUPPRESS)  # the child process's job
    args = p.parse_args(argv)

    if args.make_model:
        make_model(args.make_model, args.arch, args.image_size)
        return 0

    import bottleneck
    from bottleneck import _tf
    from bottleneck.backbones.onnx_file import read_graph
    from bottleneck.config import ExtractConfig
    from bottleneck.inference.chooser import choose_engine

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-onnx-file-"))
    work.mkdir(parents=True, exist_ok=True)
    cores = _tf.cpu_count()
    B = args.batch_size
    if args.model:
        model, what = args.model.resolve(), str(args.model)
    else:
        model = work / f"{args.arch}-{args.image_size}-nchw.onnx"
        what = f"Keras {args.arch} (random weights) -> tf2onnx, float32 NCHW, {args.image_size}px, with classifier"
        if not model.exists():  # made in a child process: TensorFlow stays out of this one
            t = time.perf_counter()
            cmd = [sys.executable, __file__, "--make-model", str(model), "--arch", args.arch]
            subprocess.run([*cmd, "--image-size", str(args.image_size)], check=True)
            print(f"made {model.name} in {time.perf_counter() - t:.0f} s", flush=True)
    graph = read_graph(model)
    cache_dir = work / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)

    t = time.perf_counter()
    engine = choose_engine(ExtractConfig(backbone=str(model), preprocess="torch", batch_size=B), cache_dir)
    prepare_s = time.perf_counter() - t
    size = engine.input_size
    taps = graph.taps(None)
    print(
        f"model: {what}\n  {model}  ({model.stat().st_size / 1e6:.0f} MB, input {graph.input_name} "
        f"{graph.layout}, tap {taps}, features {engine.feature_shape})"
    )
    print(
        f"cores: {cores}   batch: {B}   images: {args.images} JPEG 256x256 -> {size}px   repeats: {args.repeats}"
        f"   feature model prepared + checked in {prepare_s:.1f} s (once)\n",
        flush=True,
    )

    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (B, size, size, 3), dtype=np.uint8)
    f32 = np.ascontiguousarray(
        (
            (u8.astype(np.float32) - np.float32([123.675, 116.28, 103.53]))
            / np.float32([58.395, 57.12, 57.375])
        ).transpose((0, 3, 1, 2) if graph.layout == "nchw" else (0, 1, 2, 3))
    )
    pure = ort_session(str(model), cores)
    spin = {"session": ort_session(str(model), cores, spinning=True)}
    pruned = ort_session(pruned_model(engine.path, graph.input_name, f32.shape[1:]), cores)
    feeds = {graph.input_name: f32}
    # the pruned graph gives the engine's features from the same pixels: it is the engine minus its prefix
    want = engine(u8)
    got = pruned.run(None, feeds)[0]
    assert got.shape == want.shape and np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max()), (
        "pruned"
    )
    runs = {
        "pure": lambda: pure.run(None, feeds),
        "pure-spin": lambda: spin["session"].run(None, feeds),
        "ours-compute": lambda: engine(u8),
        "pruned": lambda: pruned.run(None, feeds),
    }
    compute: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, fn in runs.items():
            compute[k].append(rate(fn, B, args.seconds))
    spin.clear()  # its spinning threads would take CPU from the extract calls

    # Engines (feature model, int8 model) prepared once before the timed calls, as a user's second run finds them.
    data = make_jpegs(work / "images", args.images)
    n = args.images
    extract_kw = {"batch_size": B}
    int8_kw = {**extract_kw, "precision": "int8", "accept_drift": True, "calibration": args.calibration}
    one_time = {}
    if args.int8:
        t = time.perf_counter()
        timed_extract(data, model, cache_dir, n, **int8_kw)
        one_time["int8_first_call_s"] = time.perf_counter() - t
    kinds = {"fp32": extract_kw, **({"int8": int8_kw} if args.int8 else {})}
    ext: dict[str, list[dict]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k, kw in kinds.items():
            ext[k].append(timed_extract(data, model, cache_dir, n, **kw))
    int8_meta, int8_compute = None, []
    if args.int8:
        int8_cache = bottleneck.open_cache(ext["int8"][-1]["path"])
        int8_meta = int8_cache.meta.get("int8")
        int8_engine = choose_engine(int8_cache.config, cache_dir, int8_meta=int8_cache.meta)
        fp32_again = []
        for _ in range(args.repeats):  # int8 vs fp32 engine alone, alternated
            int8_compute.append(rate(lambda: int8_engine(u8), B, args.seconds))
            fp32_again.append(rate(lambda: engine(u8), B, args.seconds))

    c = {k: med(v) for k, v in compute.items()}
    e = {k: {m: med([r[m] for r in v]) for m in ("wall", "steady", "seconds")} for k, v in ext.items()}
    res = {
        "model": str(model),
        "what": what,
        "cores": cores,
        "batch": B,
        "images": n,
        "image_size": size,
        "repeats": args.repeats,
        "feature_shape": list(engine.feature_shape),
        "prepare_s": prepare_s,
        **one_time,
        "compute_img_s": {k: {"median": c[k], "all": v} for k, v in compute.items()},
        "extract_img_s": {k: {**e[k], "all_wall": [r["wall"] for r in v]} for k, v in ext.items()},
        "compute_over_pure": c["ours-compute"] / c["pure"],
        "extract_over_pure": e["fp32"]["wall"] / c["pure"],
        "extract_steady_over_pure": e["fp32"]["steady"] / c["pure"],
        "prefix_cost": 1 - c["ours-compute"] / c["pruned"],
        "pruned_over_pure": c["pruned"] / c["pure"],
    }
    w = 44
    print(f"{'measure (img/s, median of ' + str(args.repeats) + ')':<{w}}{'img/s':>9}{'  all':<28}")
    labels = {
        "pure": "(a)  pure: ORT on the user's file, f32 NCHW",
        "pure-spin": "(a') pure, ORT default spinning",
        "ours-compute": "(b)  ours-compute: engine on uint8 NHWC",
        "pruned": "(d)  pruned graph alone, f32 NCHW",
    }
    for k, label in labels.items():
        print(f"{label:<{w}}{c[k]:>9.1f}  {' '.join(f'{x:.1f}' for x in compute[k])}")
    fp = e["fp32"]
    print(
        f"{'(c)  ours-extract: whole calls, rows/wall s':<{w}}{fp['wall']:>9.1f}  "
        f"{all_of(ext['fp32'])}   ({fp['seconds']:.2f} s/call)"
    )
    print(f"{'     its compute phase (steady)':<{w}}{fp['steady']:>9.1f}")
    print()
    print(
        f"target 1: (b)/(a) = {res['compute_over_pure']:.3f}   (c)/(a) = {res['extract_over_pure']:.3f}   "
        f"[>= 0.9]   steady/(a) = {res['extract_steady_over_pure']:.3f}"
    )
    print(
        f"          prefix cost 1-(b)/(d) = {res['prefix_cost']:+.3f}   pruned/(a) = {res['pruned_over_pure']:.3f}   "
        f"(a)/(a') = {c['pure'] / c['pure-spin']:.3f}"
    )
    if args.int8:
        i8 = e["int8"]
        ratio = i8["wall"] / fp["wall"]
        cratio = med(int8_compute) / med(fp32_again)
        cos = (int8_meta or {}).get("mean_cosine", float("nan"))
        res.update(
            {
                "int8_over_fp32_extract": ratio,
                "int8_over_fp32_compute": cratio,
                "int8_compute_img_s": int8_compute,
                "fp32_compute_img_s_again": fp32_again,
                "int8_meta": int8_meta,
            }
        )
        print()
        print(
            f"{'int8 extract: whole calls, rows/wall s':<{w}}{i8['wall']:>9.1f}  "
            f"{all_of(ext['int8'])}   ({i8['seconds']:.2f} s/call)"
        )
        print(f"{'     its compute phase (steady)':<{w}}{i8['steady']:>9.1f}")
        print(
            f"{'int8 engine on uint8 / fp32 engine again':<{w}}{med(int8_compute):>9.1f}  / {med(fp32_again):.1f}"
        )
        print(
            f"target 2: int8/fp32 whole extract = {ratio:.2f}x  [>= 2x]   steady {i8['steady'] / fp['steady']:.2f}x   "
            f"engine alone {cratio:.2f}x"
        )
        print(
            f"          int8 agreement (cache meta): mean cosine {cos:.4f}, min {int8_meta.get('min_cosine', float('nan')):.4f}"
            f" on {int8_meta.get('agreement_images')} images, weights {int8_meta.get('weights')}, "
            f"calibration {int8_meta.get('calibration_images')}; first int8 call (quantizing) "
            f"{one_time['int8_first_call_s']:.1f} s"
        )
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
