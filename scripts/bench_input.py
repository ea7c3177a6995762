"""Benchmark the input side of extraction: reads and decodes per image, and the img/s of a trivial backbone.

On generated small PNGs in class folders (default 20 000, 64x64, generated once into --work and reused):
  decode alone   decode + resize of every image on one core, bytes already in memory (the input ceiling)
  extract        `bottleneck.extract` with MobileNetV2 at 32 px, random weights, ONNX (converted beforehand):
                 whole call (hashing, checks, model load, decode, compute, store) and its steady compute phase
  reads, decodes file opens of source images and full image decodes during that call, per image (counted by
                 wrapping builtins.open and PIL's ImageFile.load)
and, with --parquet, only this: the same PNGs as a Parquet file (the Hugging Face layout: {bytes, path} image
structs, a ClassLabel in the metadata, row groups of --row-group rows) against the class folders, whole
`extract` calls with the trivial `pixels` backbone side by side (rehashed, fresh cache, alternated, best of
three), their img/s and ratio, and the cache hit of each. With --photos N, fast JPEG decoding on N generated
2000x1500 photos: decode + resize to 224 per image on one thread, full vs `fast_decode` (PIL draft: libjpeg's scaled IDCT), the pixel difference it makes, and whole
`extract` calls of EfficientNet-Lite0 (random weights, ONNX) with and without it, side by side.

With --webdataset, the same PNGs packed into WebDataset .tar shards (img2dataset's layout, key.png + key.cls)
and extracted with the `pixels` backbone side by side with the class folders (alternated, best of two): img/s
of each, their ratio, and the cache hit on the shards (which reads no image bytes).

  python scripts/bench_input.py --images 20000 --photos 200 --work /tmp/bench-input
  python scripts/bench_input.py --images 20000 --webdataset --work /tmp/bench-input
  python scripts/bench_input.py --images 20000 --parquet --work /tmp/bench-input
  python scripts/bench_input.py --images 2000 --size 16 --rss --work /tmp/bench-input   # peak RSS at N and 10 N
"""

from __future__ import annotations

import argparse
import builtins
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def make_pngs(root: Path, n: int, size: int = 64, classes: int = 10, seed: int = 0) -> Path:
    """Small PNGs: smooth colour fields with noise, a few KB each, like thumbnails."""
    from PIL import Image

    done = root / ".done"
    if done.exists() and done.read_text() == f"{n} {size} {classes} {seed}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(base).resize((size, size), Image.BILINEAR), dtype=np.int16)
        img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:06d}.png")
    done.write_text(f"{n} {size} {classes} {seed}")
    return root


@contextmanager
def counting(root: Path):
    """Count opens of files under ``root`` and full decodes (ImageFile.load calls that decode data)."""
    from PIL import ImageFile

    counts = {"opens": 0, "decodes": 0}
    lock = threading.Lock()
    real_open, real_os_open, real_load = builtins.open, os.open, ImageFile.ImageFile.load
    prefix = str(root)

    def count(file):
        if isinstance(file, str | Path) and str(file).startswith(prefix):
            with lock:
                counts["opens"] += 1

    def open_(file, *a, **kw):
        count(file)
        return real_open(file, *a, **kw)

    def os_open(file, *a, **kw):  # image files are opened with os.open (never blocking on a FIFO)
        count(file)
        return real_os_open(file, *a, **kw)

    def load(self):
        if self.tile:  # not yet decoded: this call decodes
            with lock:
                counts["decodes"] += 1
        return real_load(self)

    builtins.open, os.open, ImageFile.ImageFile.load = open_, os_open, load
    try:
        yield counts
    finally:
        builtins.open, os.open, ImageFile.ImageFile.load = real_open, real_os_open, real_load


def make_photos(root: Path, n: int, size=(2000, 1500), classes: int = 4, seed: int = 0) -> Path:
    """Photo-like JPEGs: smooth colour fields, edges and fine noise, quality 90 (about 1 MB each)."""
    from PIL import Image

    done = root / ".done"
    if done.exists() and done.read_text() == f"{n} {size} {seed}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (h // 100, w // 100, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:05d}.jpg", quality=90)
    done.write_text(f"{n} {size} {seed}")
    return root


def photo_decoding(paths: list[Path], size: int = 224) -> dict:
    """Per-image decode + resize rates from bytes in memory, full vs fast, and their pixel difference."""
    from bottleneck.data import decode_image, resize_image

    blobs = [p.read_bytes() for p in paths]
    out = {}
    images = {}
    for name, draft in (("full", None), ("fast", size), ("full2", None), ("fast2", size)):
        t = time.perf_counter()
        images[name[:4]] = [resize_image(decode_image(b, draft=draft), size) for b in blobs]
        out.setdefault(name[:4], []).append(len(blobs) / (time.perf_counter() - t))
    diff = [
        np.abs(a.astype(np.int16) - b).mean() for a, b in zip(images["full"], images["fast"], strict=True)
    ]
    return {"full": max(out["full"]), "fast": max(out["fast"]), "mean_abs_diff": float(np.mean(diff))}


def photo_extraction(data: Path, cache: Path) -> dict:
    """Whole `extract` img/s of Lite0 (ONNX, random weights) on the photos, full vs fast decoding."""
    import bottleneck

    kw = dict(backbone="efficientnet_lite0", weights="none", engine="onnx", cache_dir=cache)
    rates: dict[str, list[float]] = {"full": [], "fast": []}
    for _ in range(2):  # alternated, best of two: the machine's noise hits both
        for name, fast in (("full", False), ("fast", True)):
            for old in cache.glob("efficientnet_lite0-*"):
                if old.is_dir():
                    shutil.rmtree(old)
            t = time.perf_counter()
            r = bottleneck.extract(data, fast_decode=fast, **kw)
            rates[name].append(r.computed / (time.perf_counter() - t))
    return {k: max(v) for k, v in rates.items()}


def decode_alone(paths: list[Path], size: int) -> float:
    """img/s of decode + resize on one thread, from bytes in memory."""
    from bottleneck.data.decode import decode_resized

    blobs = [p.read_bytes() for p in paths]
    t = time.perf_counter()
    for b in blobs:
        decode_resized(b, size)
    return len(blobs) / (time.perf_counter() - t)


def pack_shards(data: Path, root: Path, per_shard: int = 1000) -> Path:
    """The class-folder PNGs of ``data`` as WebDataset shards under ``root``: key.png + key.cls (class index)."""
    import tarfile

    paths = sorted(data.glob("*/*.png"))
    done = root / ".done"
    if done.exists() and done.read_text() == f"{len(paths)} {per_shard}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    classes = sorted({p.parent.name for p in paths})
    old = time.time() - 3600  # shards written just now would be scanned again next run (racy, like files)
    for s in range(0, len(paths), per_shard):
        shard = root / f"train-{s // per_shard:06d}.tar"
        with tarfile.open(shard, "w") as tar:
            for i, p in enumerate(paths[s : s + per_shard], start=s):
                tar.add(p, arcname=f"{i:09d}.png")
                cls = tarfile.TarInfo(f"{i:09d}.cls")
                label = str(classes.index(p.parent.name)).encode()
                cls.size = len(label)
                tar.addfile(cls, io.BytesIO(label))
        os.utime(shard, (old, old))
    done.write_text(f"{len(paths)} {per_shard}")
    return root


def webdataset_mode(data: Path, work: Path, args) -> int:
    """img/s of `extract` (pixels backbone) on the class folders and on the same images as shards, side by side."""
    import bottleneck

    shards = pack_shards(data, work / f"shards{args.images}")
    cache = work / "cache-wds"
    kw = dict(backbone="pixels", batch_size=args.batch_size, cache_dir=cache)
    rates: dict[str, list[float]] = {"files": [], "webdataset": []}
    for _ in range(2):  # alternated, best of two: the machine's noise hits both
        for name, source in (("files", data), ("webdataset", shards)):
            shutil.rmtree(cache, ignore_errors=True)
            t = time.perf_counter()
            r = bottleneck.extract(source, **kw)
            rates[name].append(r.computed / (time.perf_counter() - t))
    t = time.perf_counter()
    hit = bottleneck.extract(shards, **kw)
    hit_s = time.perf_counter() - t
    files, web = max(rates["files"]), max(rates["webdataset"])
    mb = sum(p.stat().st_size for p in shards.glob("*.tar")) / 1e6
    print(f"{r.computed} PNGs {args.size}x{args.size}, pixels backbone, whole extract calls (best of two)")
    print(f"class folders:        {files:8.0f} img/s")
    print(f"WebDataset shards:    {web:8.0f} img/s  ({len(list(shards.glob('*.tar')))} shards, {mb:.0f} MB)")
    print(f"ratio shards / files: {web / files:8.2f}x")
    print(f"cache hit on shards:  {hit_s:8.2f} s  (hit: {hit.hit})")
    return 0


def make_parquet(data: Path, out: Path, row_group: int) -> Path:
    """The class-folder PNGs of ``data`` as one Parquet file in the Hugging Face layout, written with pyarrow."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    if out.exists():
        return out
    classes = sorted(d.name for d in data.iterdir() if d.is_dir())
    paths = sorted(data.glob("*/*.png"))
    features = {"image": {"_type": "Image"}, "label": {"names": classes, "_type": "ClassLabel"}}
    schema = pa.schema(
        [("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64())],
        metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()},
    )
    with pq.ParquetWriter(out, schema) as writer:
        for a in range(0, len(paths), row_group):
            block = paths[a : a + row_group]
            images = [{"bytes": p.read_bytes(), "path": p.name} for p in block]
            labels = [classes.index(p.parent.name) for p in block]
            writer.write_table(pa.table({"image": images, "label": labels}, schema=schema))
    return out


def parquet_vs_files(data: Path, work: Path, args) -> None:
    """Whole `extract` img/s of the pixels backbone on the same images as files and as Parquet, side by side."""
    import bottleneck

    table = make_parquet(data, work / f"train-{args.images}-rg{args.row_group}.parquet", args.row_group)
    sources = {"files": data, "parquet": table}
    cache = work / "cache-parquet"
    kw = dict(backbone="pixels", image_size=args.image_size, batch_size=args.batch_size, cache_dir=cache)
    rates: dict[str, list[float]] = {k: [] for k in sources}
    hits: dict[str, float] = {}
    for _ in range(3):  # alternated, best of three: the machine's noise hits both
        for name, src in sources.items():
            shutil.rmtree(cache, ignore_errors=True)
            t = time.perf_counter()
            r = bottleneck.extract(src, rehash=True, **kw)
            rates[name].append(r.computed / (time.perf_counter() - t))
            t = time.perf_counter()
            assert bottleneck.extract(src, **kw).hit
            hits[name] = time.perf_counter() - t
    files, parquet = max(rates["files"]), max(rates["parquet"])
    mb = table.stat().st_size / 1e6
    print(
        f"{args.images} PNGs {args.size}x{args.size}, pixels backbone @{args.image_size}px, whole extract calls:"
    )
    print(f"  files   {files:8.0f} img/s   cache hit {hits['files']:.2f} s")
    print(
        f"  parquet {parquet:8.0f} img/s   cache hit {hits['parquet']:.2f} s  ({mb:.0f} MB, {args.row_group} rows a group)"
    )
    print(f"  parquet / files: {parquet / files:.2f}x")


class Steady:
    def __init__(self):
        self.points = []

    def __call__(self, stage, done, total):
        if stage in ("train", "val", "test") and done:
            self.points.append((time.perf_counter(), done))

    def rate(self) -> float:
        if len(self.points) < 2:
            return float("nan")
        (t0, d0), (t1, d1) = self.points[0], self.points[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else float("nan")


RSS_CHILD = """
import resource, sys
import bottleneck
bottleneck.extract(sys.argv[1], backbone="pixels", image_size=int(sys.argv[3]), cache_dir=sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def rss_mode(work: Path, args) -> int:
    """Peak RSS of a fresh process extracting N and 10 N images (pixels backbone) as class folders, Parquet and
    WebDataset shards: what grows with the dataset besides the manifest (ids, hashes: O(N) by design)."""
    import subprocess
    import sys

    rows = []
    for n in (args.images, 10 * args.images):
        data = make_pngs(work / f"pngs{n}", n, args.size)
        sources = {
            "files": data,
            "parquet": make_parquet(data, work / f"rss-{n}.parquet", args.row_group),
            "webdataset": pack_shards(data, work / f"shards{n}"),
        }
        for kind, src in sources.items():
            cache = work / f"rss-cache-{kind}-{n}"
            shutil.rmtree(cache, ignore_errors=True)
            out = subprocess.run(
                [sys.executable, "-c", RSS_CHILD, str(src), str(cache), str(args.image_size)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            rows.append((kind, n, int(out.stdout.split()[-1])))
    print(f"peak RSS of one extract (pixels @{args.image_size}px, {args.size}x{args.size} PNGs), MB:")
    for kind in ("files", "parquet", "webdataset"):
        small, large = (mb for k, _, mb in rows if k == kind)
        print(
            f"  {kind:10s} {args.images:7d}: {small:6d}   {10 * args.images:7d}: {large:6d}   x{large / small:.2f}"
        )
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--size", type=int, default=64, help="side of the generated PNGs")
    p.add_argument("--image-size", type=int, default=32, help="backbone input side")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: cores)")
    p.add_argument("--photos", type=int, default=0, help="also time fast JPEG decoding on N 2000x1500 photos")
    p.add_argument("--work", type=Path, default=None, help="scratch folder; images are kept there for reuse")
    p.add_argument("--webdataset", action="store_true", help="compare class folders with WebDataset shards")
    p.add_argument("--parquet", action="store_true", help="only compare files and Parquet (pixels backbone)")
    p.add_argument("--row-group", type=int, default=1000, help="rows per Parquet row group (--parquet)")
    p.add_argument(
        "--rss", action="store_true", help="peak RSS at --images and 10x, files / Parquet / shards"
    )
    args = p.parse_args(argv)

    import bottleneck

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-input-"))
    if args.rss:
        return rss_mode(work, args)
    data = make_pngs(work / f"pngs{args.images}", args.images, args.size)
    if args.webdataset:
        return webdataset_mode(data, work, args)
    if args.parquet:
        parquet_vs_files(data, work, args)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    paths = sorted(data.glob("*/*.png"))
    mb = sum(p.stat().st_size for p in paths) / 1e6
    alone = decode_alone(paths[:4000], args.image_size)
    cache = work / "cache"
    kw = dict(
        backbone="mobilenet_v2",
        weights="none",
        image_size=args.image_size,
        engine="onnx",
        threads=args.threads,
    )
    # Convert the ONNX model once (on a few images), as a user's second run finds it.
    warm = make_pngs(work / "warm", 64, args.size, seed=1)
    bottleneck.extract(warm, cache_dir=cache, **kw)
    for old in cache.glob("mobilenet_v2-*"):
        if old.is_dir():
            shutil.rmtree(old)
    steady = Steady()
    with counting(data) as counts:
        t = time.perf_counter()
        r = bottleneck.extract(data, cache_dir=cache, batch_size=args.batch_size, progress=steady, **kw)
        wall = time.perf_counter() - t
    t = time.perf_counter()
    hit = bottleneck.extract(data, cache_dir=cache, batch_size=args.batch_size, **kw)
    hit_s = time.perf_counter() - t
    assert hit.hit and r.computed == len(paths)
    n = len(paths)
    print(
        f"{n} PNGs {args.size}x{args.size} ({mb:.0f} MB), mobilenet_v2 @{args.image_size}px random weights, onnx"
    )
    print(f"decode + resize alone, one thread:   {alone:8.0f} img/s")
    print(f"extract, whole call:                 {n / wall:8.0f} img/s  ({wall:.1f} s, engine {r.engine})")
    print(f"extract, steady compute phase:       {steady.rate():8.0f} img/s")
    print(f"file opens per image:                {counts['opens'] / n:8.2f}")
    print(f"full decodes per image:              {counts['decodes'] / n:8.2f}")
    print(f"cache hit:                           {hit_s:8.2f} s")
    if args.photos:
        photos = make_photos(work / f"photos{args.photos}", args.photos)
        paths = sorted(photos.glob("*/*.jpg"))
        dec = photo_decoding(paths[:60])
        print(f"\n{len(paths)} JPEG photos 2000x1500, decode + resize to 224 on one thread:")
        print(
            f"  full {dec['full']:.1f} img/s, fast {dec['fast']:.1f} img/s ({dec['fast'] / dec['full']:.1f}x); "
            f"mean |difference| {dec['mean_abs_diff']:.2f} of 255"
        )
        # Convert the Lite0 ONNX model once, as a user's second run finds it.
        bottleneck.extract(
            warm, backbone="efficientnet_lite0", weights="none", engine="onnx", cache_dir=cache
        )
        ext = photo_extraction(photos, cache)
        print(
            f"  extract (Lite0, onnx): full {ext['full']:.1f} img/s, fast {ext['fast']:.1f} img/s "
            f"({ext['fast'] / ext['full']:.1f}x)"
        )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
