"""Example datasets: Fashion-MNIST from Debian's files (or the official download) exported as PNG class folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bottleneck._io import write_bytes_atomic, write_json_atomic
from bottleneck.callbacks import Progress
from bottleneck.data.array_sources import FASHION_MNIST_CLASSES, idx_files, read_idx
from bottleneck.errors import BottleneckError
from bottleneck.job_settings import FASHION_MNIST

EXPORT_MARKER = ".bottleneck-export.json"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # the dataset's official download
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",  # Keras' mirror of the same files
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}


def class_folder(name: str) -> str:
    """A class name as a folder name: lower case, "/" and spaces as "_" ("T-shirt/top" -> "t-shirt_top")."""
    return name.lower().replace("/", "_").replace(" ", "_")


def _idx(folder: Path) -> dict[tuple[str, str], Path]:
    """The IDX source's own file finder: {(split, "images"|"labels"): file}; {} when there is no folder."""
    return idx_files(folder) if folder.is_dir() else {}


def _download_fashion_mnist(dest: Path, urls=FASHION_MNIST_URLS) -> Path:
    import urllib.request

    dest.mkdir(parents=True, exist_ok=True)
    errors = []
    present = _idx(dest)
    for split, stems in FASHION_MNIST_FILES.items():
        for stem, part in zip(stems[:2], ("images", "labels"), strict=True):
            if (split, part) in present:
                continue
            for base in urls:
                try:
                    with urllib.request.urlopen(base + stem + ".gz", timeout=60) as r:
                        write_bytes_atomic(dest / f"{stem}.gz", r.read())
                    break
                except OSError as exc:
                    errors.append(f"{base}{stem}.gz: {exc}")
            else:
                raise BottleneckError(
                    f"cannot download Fashion-MNIST ({'; '.join(errors[-2:])}). Install Debian's files with "
                    f"`apt-get install dataset-fashion-mnist` or pass source=FOLDER with the four IDX files."
                )
    return dest


def export_fashion_mnist(
    out_dir,
    *,
    per_class: int | None = None,
    source=None,
    download: bool = True,
    progress: Progress | None = None,
) -> dict:
    """Write Fashion-MNIST as PNG folders ``out_dir/{train,test}/<class>/<index>.png`` (28x28 grayscale).

    ``source`` is a folder with the four IDX files; default: Debian's ``dataset-fashion-mnist`` folder, else
    (with ``download``) the official download into ``~/.cache/bottleneck/fashion-mnist``. ``per_class``
    keeps the first N images of each class in each split (a quick subset). Returns {"path", "source",
    "splits": {split: n}, "classes", "hit"}; the same export into the same folder again is a hit that writes
    nothing (a marker file records what a finished export holds).
    """
    out_dir = Path(out_dir)
    FASHION_MNIST.validate({"per_class": per_class})
    marker = out_dir / EXPORT_MARKER
    done = _finished_export(out_dir, marker, per_class)
    if done is not None:
        return done["result"] | {"hit": True}
    source = _fashion_mnist_source(source, download)
    arrays = _read_fashion_mnist(source, per_class)
    counts = _write_pngs(out_dir, arrays, progress)
    result = {
        "path": str(out_dir),
        "source": str(source),
        "splits": counts,
        "classes": [class_folder(c) for c in FASHION_MNIST_CLASSES],
    }
    # Written last: an interrupted export has no marker, so it is never mistaken for a finished one.
    write_json_atomic(marker, {"dataset": "fashion-mnist", "per_class": per_class, "result": result})
    return result | {"hit": False}


def _finished_export(out_dir: Path, marker: Path, per_class: int | None) -> dict | None:
    """The marker of the same export already finished in ``out_dir``, None for an absent or empty folder;
    BottleneckError for anything else (a file, or a folder holding other images)."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise BottleneckError(f"{out_dir} exists and is not a folder; pass a new folder for the images.")
    if not (out_dir.exists() and any(out_dir.iterdir())):
        return None
    try:
        done = json.loads(marker.read_text())
    except (OSError, ValueError):
        done = None
    if done and done.get("dataset") == "fashion-mnist" and done.get("per_class") == per_class:
        return done
    raise BottleneckError(
        f"{out_dir} is not empty and holds no finished export with per_class={per_class}; pass a new "
        "folder (or remove this one) so no other images mix in."
    )


def _fashion_mnist_source(source, download: bool) -> Path:
    """The folder of the four IDX files: ``source``, else Debian's, else (with ``download``) the download."""
    if source is None:
        source = FASHION_MNIST_DIR
        if len(_idx(source)) < 4:
            if not download:
                raise BottleneckError(
                    f"Fashion-MNIST files not found in {source}; run `apt-get install dataset-fashion-mnist` "
                    "or pass source=FOLDER."
                )
            source = _download_fashion_mnist(Path.home() / ".cache" / "bottleneck" / "fashion-mnist")
    return Path(source)


def _read_fashion_mnist(source: Path, per_class: int | None) -> dict:
    """split -> (images (N, 28, 28) uint8, labels (N,), the rows kept), each split checked against its size."""
    arrays = {}
    found = _idx(source)
    for split, (img_stem, lbl_stem, n_expected) in FASHION_MNIST_FILES.items():
        img_file, lbl_file = found.get((split, "images")), found.get((split, "labels"))
        if img_file is None or lbl_file is None:
            raise BottleneckError(
                f"{source} lacks {img_stem}[.gz] or {lbl_stem}[.gz]; pass the folder with the four Fashion-MNIST IDX files."
            )
        x, y = read_idx(img_file), read_idx(lbl_file)
        if x.shape != (n_expected, 28, 28) or y.shape != (n_expected,) or y.max() > 9:
            raise BottleneckError(
                f"{img_file.name}/{lbl_file.name} hold {x.shape} images and {y.shape} labels; Fashion-MNIST {split} "
                f"has ({n_expected}, 28, 28) and ({n_expected},) with labels 0-9. Pass the original files."
            )
        keep = np.arange(len(y))
        if per_class is not None:
            keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)]))
        arrays[split] = (x, y, keep)
    return arrays


def _write_pngs(out_dir: Path, arrays: dict, progress) -> dict:
    """The kept rows as ``out_dir/<split>/<class>/<index>.png``; split -> images written."""
    from PIL import Image

    total = sum(len(k) for _, _, k in arrays.values())
    done = 0
    counts = {}
    folders = [class_folder(c) for c in FASHION_MNIST_CLASSES]
    for split, (x, y, keep) in arrays.items():
        for c in folders:
            (out_dir / split / c).mkdir(parents=True, exist_ok=True)
        for i in keep:
            Image.fromarray(x[i], "L").save(out_dir / split / folders[y[i]] / f"{i:05d}.png")
            done += 1
            if progress and (done % 1000 == 0 or done == total):
                progress("export", done, total)
        counts[split] = int(len(keep))
    return counts
