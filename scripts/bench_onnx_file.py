"""Benchmark an ONNX model file as the backbone against ONNX Runtime running that file itself (issue #33).

The "user's file" is a PyTorch-style NCHW ResNet-like classifier made without torch: a Keras ResNet50 (or a
ResNet-18-like net, --arch resnet18) with random weights, traced behind an NCHW->NHWC transpose and converted
by tf2onnx (float32 input "input" (N, 3, S, S), output "logits"), so the file has a classifier tail and the
default features are the classifier's input. --model PATH benches any .onnx file instead (preprocess torch).
Measured in one run, on the same machine, in --repeats rounds that each time every measure once (a, a', b, d,
int8-compute, c, int8-extract, p, then again), so that noise from other work hits each alike; medians over
rounds, and ratios as the median of the per-round ratios and as measured in the quietest round (the one
with the fastest (a)), the load average of each round printed beside it:

  (a)  pure          onnxruntime.InferenceSession on the user's file itself (the engine's settings: intra-op
                     threads = cores, sequential, all graph optimizations, no spinning), fed a pre-made float32
                     NCHW batch of --batch-size, images/s over --seconds
  (a') pure-spin     the same with ONNX Runtime's default spinning thread pool (for reference)
  (b)  ours-compute  bottleneck's engine (the feature model: uint8 NHWC in, Cast/Sub/Div/Transpose, the graph
                     pruned to the tap, pooled) on a pre-made uint8 batch
  (d)  pruned        that feature model without its preprocessing prefix, fed the float32 batch of (a): the
                     prefix costs (d) - (b), pruning the classifier tail gains (d) - (a)
  (c)  ours-extract  whole `bottleneck.extract` calls on generated JPEGs (image checks, decode, resize, compute,
                     store), each a cache miss (everything under the cache dir removed but the engines, prepared
                     once beforehand as a user's second run finds them): computed rows / wall seconds of the call;
                     "compute phase" is the rate between the first and last computed batch (progress callback)
  int8               the int8 engine on the uint8 batch, and whole extract calls with precision="int8"
                     (accept_drift=True, calibration=64; quantized once beforehand); agreement from the cache meta
  (p)  pipeline      whole fp32 extract calls with the engine's compute replaced by zeros (decode, resize, store)

Weights are random: speed only. Targets (issue #33): (b)/(a) and (c)/(a) >= 0.9; int8/fp32 extract >= 2x.

  python scripts/bench_onnx_file.py --arch resnet50 --image-size 160 --images 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import Steady, make_jpegs  # noqa: E402


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


SPIN_PAUSE_S = 0.2  # ONNX Runtime's spinning workers keep the cores busy a while after a run


def prefix_model(feature_path: Path):
    """The feature model's preprocessing prefix alone: uint8 NHWC ``images`` in, the user's graph's input out."""
    import onnx
    from onnx import helper

    m = onnx.load(str(feature_path))
    g = m.graph
    nodes = [nd for nd in g.node if all(o.startswith("pre_") for o in nd.output)]
    last = nodes[-1].output[0]
    inits = [t for t in g.initializer if t.name.startswith("pre_")]
    out = helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, None)
    new = helper.make_graph(nodes, "prefix", list(g.input), [out], inits)
    result = helper.make_model(new, opset_imports=list(m.opset_import))
    result.ir_version = m.ir_version
    return result


def interleaved(fns: dict, batch: int, seconds: float, pause_after=()) -> dict:
    """Images/s of each ``fns[k]()`` (one batch per call), the calls taken in turn (a, b, c, a, b, c, ...) after one
    warm-up call each, until the first has run ``seconds`` (3 calls at least): each kind runs as many calls, so
    that the load of other work hits each alike. {k: {"wall": images/s over all its calls, "best": its fastest
    call's images/s}}. ``pause_after``: kinds after whose calls to wait (untimed) for the cores to go quiet: a
    session with spinning threads slowed the next call by 30%."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    first = next(iter(fns))
    while sum(times[first]) < seconds or len(times[first]) < 3:
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
            if k in pause_after:
                time.sleep(SPIN_PAUSE_S)
    return {k: {"wall": batch * len(v) / sum(v), "best": batch / min(v)} for k, v in times.items()}


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


def med(xs) -> float:
    return float(np.median(xs))


class NullEngine:
    """The engine ``extract`` would use, with its compute replaced by zeros: times the rest of a call (image
    checks, decode, resize, store)."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), *self._engine.feature_shape), np.float32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", type=Path, default=None, help="bench this .onnx file (preprocess torch) instead"
    )
    p.add_argument("--arch", choices=("resnet50", "resnet18"), default="resnet50", help="the generated model")
    p.add_argument("--image-size", type=int, default=160, help="the generated model's input size")
    p.add_argument("--images", type=int, default=256, help="JPEGs per extract call")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="rounds; each times every measure once")
    p.add_argument("--seconds", type=float, default=4.0, help="per in-memory throughput measurement")
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
    from bottleneck.inference.runner import run_extraction

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-onnx-file-"))
    work.mkdir(parents=True, exist_ok=True)
    cores = _tf.cpu_count()
    B, n = args.batch_size, args.images
    if args.model:
        model, what = args.model.resolve(), f"{args.model} (preprocess torch)"
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
    print(
        f"model: {what}\n  {model}  ({model.stat().st_size / 1e6:.0f} MB, input {graph.input_name} "
        f"{graph.layout}, tap {graph.taps(None)}, features {engine.feature_shape})"
    )
    print(
        f"cores: {cores}   batch: {B}   images: {n} JPEG 256x256 -> {size}px   rounds: {args.repeats} x "
        f"{args.seconds:g} s per in-memory measure   feature model prepared + checked in {prepare_s:.1f} s (once)"
        f"   load average {os.getloadavg()[0]:.2f}",
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
    spin = ort_session(str(model), cores, spinning=True)
    pruned = ort_session(pruned_model(engine.path, graph.input_name, f32.shape[1:]), cores)
    prefix = ort_session(prefix_model(engine.path), cores)
    feeds = {graph.input_name: f32}
    # the pruned graph gives the engine's features from the same pixels: it is the engine minus its prefix
    want, got = engine(u8), pruned.run(None, feeds)[0]
    close = np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    assert got.shape == want.shape and close, "the pruned graph does not give the engine's features"

    # Engines (feature model, int8 model) prepared once before the timed calls, as a user's second run finds them.
    data = make_jpegs(work / "images", n)
    extract_kw = {"batch_size": B}
    int8_kw = {**extract_kw, "precision": "int8", "accept_drift": True, "calibration": args.calibration}
    one_time = {}
    int8_engine, int8_meta = None, {}
    if args.int8:
        t = time.perf_counter()
        first = timed_extract(data, model, cache_dir, n, **int8_kw)
        one_time["int8_first_call_s"] = time.perf_counter() - t
        int8_cache = bottleneck.open_cache(first["path"])
        int8_meta = int8_cache.meta.get("int8") or {}
        int8_engine = choose_engine(int8_cache.config, cache_dir, int8_meta=int8_cache.meta)

    def pipeline_only() -> float:
        """Rows/s of a whole fp32 extract call with the compute replaced by zeros."""
        clear_cache(cache_dir)
        t = time.perf_counter()
        r = run_extraction(
            data,
            backbone=str(model),
            preprocess="torch",
            cache_dir=cache_dir,
            engine_factory=lambda config: NullEngine(engine),
            **extract_kw,
        )
        assert r.computed == n, r.computed
        return n / (time.perf_counter() - t)

    in_memory = {
        "pure": lambda: pure.run(None, feeds),
        "pure-spin": lambda: spin.run(None, feeds),
        "ours-compute": lambda: engine(u8),
        "pruned": lambda: pruned.run(None, feeds),
        "prefix": lambda: prefix.run(None, {"images": u8}),
        **({"int8-compute": lambda: int8_engine(u8)} if args.int8 else {}),
    }
    calls = {
        "ours-extract": lambda: timed_extract(data, model, cache_dir, n, **extract_kw),
        **(
            {"int8-extract": lambda: timed_extract(data, model, cache_dir, n, **int8_kw)} if args.int8 else {}
        ),
        "pipeline": pipeline_only,
    }
    measures = [*in_memory, *calls]
    rounds: list[dict] = []
    for i in range(args.repeats):  # each round times every measure, so that noise hits each alike
        r = interleaved(in_memory, B, args.seconds, pause_after={"pure-spin"})
        r.update({k: fn() for k, fn in calls.items()})
        rounds.append(r)
        print(
            f"  round {i + 1}: pure {r['pure']['wall']:.1f}  ours-compute {r['ours-compute']['wall']:.1f}  "
            f"ours-extract {r['ours-extract']['wall']:.1f}"
            + (f"  int8-extract {r['int8-extract']['wall']:.1f}" if args.int8 else "")
            + f" img/s   load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )

    def value(k: str, field: str = "wall") -> list[float]:
        return [r[k][field] if isinstance(r[k], dict) else r[k] for r in rounds]

    def best(k: str) -> float:
        """The fastest call of an in-memory measure; the fastest round of a whole-call one."""
        return max(value(k, "best" if k in in_memory else "wall"))

    med_of = {k: med(value(k)) for k in measures}

    # the round least slowed by other work on the machine
    quiet = int(np.argmax(value("pure")))

    def paired(num: str, den: str, field: str = "wall") -> float:
        """The median over rounds of num/den measured in the same round."""
        return med([x / y for x, y in zip(value(num, field), value(den), strict=True)])

    def ratio(num: str, den: str, field: str = "wall") -> dict:
        return {
            "paired": paired(num, den, field),
            "of_medians": med_of[num] / med_of[den],
            "quiet": value(num, field)[quiet] / value(den)[quiet],
        }

    # the prefix's share of a batch: its time over the engine's, both at their median rate
    prefix_share = med_of["ours-compute"] / med_of["prefix"]
    ratios = {
        "ours_compute/pure": ratio("ours-compute", "pure"),
        "ours_extract/pure": ratio("ours-extract", "pure"),
        "pruned/pure": ratio("pruned", "pure"),
        "ours_compute/pruned": ratio("ours-compute", "pruned"),
        "pure/pure_spin": ratio("pure", "pure-spin"),
    }
    if args.int8:
        ratios["int8_extract/ours_extract"] = ratio("int8-extract", "ours-extract")
        ratios["int8_compute/ours_compute"] = ratio("int8-compute", "ours-compute")
    steady = {k: med(value(k, "steady")) for k in calls if k != "pipeline"}
    res = {
        "model": str(model),
        "what": what,
        "cores": cores,
        "batch": B,
        "images": n,
        "image_size": size,
        "rounds": args.repeats,
        "feature_shape": list(engine.feature_shape),
        "prepare_s": prepare_s,
        **one_time,
        "img_s": {k: {"median": med_of[k], "best": best(k), "rounds": value(k)} for k in measures},
        "extract_compute_phase_img_s": steady,
        "extract_s_per_call": {k: med(value(k, "seconds")) for k in steady},
        "ratios": ratios,
        "prefix_share_of_batch": prefix_share,
        "int8_meta": int8_meta,
    }
    w = 47
    labels = {
        "pure": "(a)  pure: ORT on the user's file, f32 NCHW",
        "pure-spin": "(a') pure, ORT's default spinning pool",
        "ours-compute": "(b)  ours-compute: engine on uint8 NHWC",
        "pruned": "(d)  feature model minus prefix, f32 NCHW",
        "prefix": "(e)  the prefix alone (Cast/Sub/Div/Transpose)",
        "int8-compute": "(i)  int8 engine on uint8 NHWC",
        "ours-extract": "(c)  ours-extract: whole calls, rows/wall s",
        "int8-extract": "(j)  int8 extract: whole calls, rows/wall s",
        "pipeline": "(p)  extract, compute zeroed: rows/wall s",
    }
    print(f"\n{'img/s':<{w}}{'median':>8}{'best':>8}   per round")
    for k in measures:
        print(f"{labels[k]:<{w}}{med_of[k]:>8.1f}{best(k):>8.1f}   {' '.join(f'{x:.1f}' for x in value(k))}")
        if k in steady:
            print(
                f"{'       its compute phase (progress)':<{w}}{steady[k]:>8.1f}{'':>8}   "
                f"{' '.join(f'{x:.1f}' for x in value(k, 'steady'))}   ({med(value(k, 'seconds')):.2f} s/call)"
            )
    print("(best: the fastest batch of an in-memory measure, the fastest round of a whole call)")

    def show(name: str) -> str:
        r = ratios[name]
        return f"{r['paired']:.3f} (of medians {r['of_medians']:.3f}, quietest round {r['quiet']:.3f})"

    print(
        f"\nratios: median of the per-round ratios (of the medians; in the quietest round, {quiet + 1}: the one with "
        "the fastest (a))\n"
        f"target 1, >= 0.9:  (b)/(a) = {show('ours_compute/pure')}\n"
        f"                   (c)/(a) = {show('ours_extract/pure')}\n"
        f"  (b)/(d) = {show('ours_compute/pruned')}: the prefix; (e) takes {100 * prefix_share:.1f}% of (b)'s batch time\n"
        f"  (d)/(a) = {show('pruned/pure')}: the pruned classifier tail\n"
        f"  (a)/(a') = {show('pure/pure_spin')}: no spinning vs ORT's default"
    )
    if args.int8:
        m = int8_meta
        print(
            f"target 2, >= 2x:   (j)/(c) = {show('int8_extract/ours_extract')}\n"
            f"  compute phases {steady['int8-extract'] / steady['ours-extract']:.2f}x   (i)/(b) = "
            f"{show('int8_compute/ours_compute')}\n"
            f"  int8 agreement (cache meta): mean cosine {m.get('mean_cosine', float('nan')):.4f}, min "
            f"{m.get('min_cosine', float('nan')):.4f} on {m.get('agreement_images')} held-out images; weights "
            f"{m.get('weights')}, calibration {m.get('calibration_images')} images; the first int8 call (quantizing) "
            f"took {one_time['int8_first_call_s']:.1f} s"
        )
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
