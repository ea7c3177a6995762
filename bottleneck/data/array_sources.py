"""Array sources: .h5 (SIGNS layout or named keys), .npz, a folder of .npy pairs, and MNIST-style IDX folders.

Naming rule for .npz keys, .npy file names (without .npy) and .h5 datasets when no keys are given, matched
case-insensitively, with <split> one of train, val, valid, validation, test:

    x_<split> / y_<split>    <split>_x / <split>_y    <split>_images / <split>_labels
    <split>_set_x / <split>_set_y (SIGNS)    images_<split> / labels_<split>

or one unsplit pair ``x``/``y`` or ``images``/``labels`` (taken as train). Class names come from a
``list_classes``, ``class_names`` or ``classes`` entry when present, else "0".."K-1"; an IDX folder whose
labels are exactly Fashion-MNIST's official ones (whatever the folder is called) gets Fashion-MNIST's names.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bottleneck.data.manifest import SPLIT_ALIASES, SPLIT_ORDER
from bottleneck.errors import SourceError

_PATTERNS = (
    ("x_{s}", "y_{s}"),
    ("{s}_x", "{s}_y"),
    ("{s}_images", "{s}_labels"),
    ("{s}_set_x", "{s}_set_y"),
    ("images_{s}", "labels_{s}"),
)
_UNSPLIT = (("x", "y"), ("images", "labels"))
CLASS_KEYS = ("list_classes", "class_names", "classes")
KEYS_EXAMPLE = "'train=X_train:y_train,test=X_test:y_test' (optionally ',classes=class_names')"

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# blake2b (16 bytes) of the decoded uint8 label arrays of Fashion-MNIST's official files, per split. An IDX folder
# gets the names above only when every split's labels are exactly these, so the names (part of the manifest
# fingerprint, hence the cache key) follow the files, not what the folder happens to be called. Subsets, relabelled
# or other IDX data (MNIST, EMNIST, KMNIST: same layout) keep the generic "0".."K-1".
_FASHION_MNIST_LABELS = {
    "train": (60000, "372ac19362f2425103e5082d13e71e66"),
    "test": (10000, "36a6875013fe680369ab320bd2ad1fe9"),
}


@dataclass
class ArraySet:
    """Images (N, H, W[, C]) uint8 and labels (N,) int64 per split; images may be lazy (memmap, h5 dataset)."""

    images: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    class_names: list = field(default_factory=list)
    handle: object = None  # an open file to close with the source (h5)


def find_pairs(names) -> dict[str, tuple[str, str]]:
    """{split: (images name, labels name)} found in ``names`` by the module's naming rule."""
    lower = {n.lower(): n for n in names}
    pairs: dict[str, tuple[str, str]] = {}
    for alias, split in SPLIT_ALIASES.items():
        for xp, yp in _PATTERNS:
            x, y = xp.format(s=alias), yp.format(s=alias)
            if x in lower and y in lower:
                got = (lower[x], lower[y])
                if split in pairs and pairs[split] != got:
                    raise SourceError(
                        f"two image/label pairs for the {split} split: {pairs[split]} and {got}; "
                        f"name the ones to use with h5_keys=, e.g. {KEYS_EXAMPLE}."
                    )
                pairs[split] = got
    if not pairs:
        for x, y in _UNSPLIT:
            if x in lower and y in lower:
                return {"train": (lower[x], lower[y])}
    return pairs


def parse_keys(spec) -> tuple[dict[str, tuple[str, str]], str | None]:
    """``{"train": ("X_train", "y_train"), ...}`` (tuples, lists or "X:y" strings, plus an optional
    ``"classes": name``) or the CLI string ``"train=X_train:y_train,test=X_test:y_test[,classes=name]"``."""
    if isinstance(spec, str):
        d = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            if not sep or not value.strip():
                raise SourceError(
                    f"h5 keys {spec!r}: {part!r} is not split=images:labels; write e.g. {KEYS_EXAMPLE}."
                )
            d[name.strip()] = value.strip()
    elif isinstance(spec, dict):
        d = dict(spec)
    else:
        raise SourceError(f"h5 keys {spec!r} must be a dict or a string like {KEYS_EXAMPLE}.")
    classes = d.pop("classes", None)
    pairs = {}
    for name, value in d.items():
        split = SPLIT_ALIASES.get(str(name).lower())
        if split is None:
            raise SourceError(
                f"h5 keys: split {name!r} is not allowed; use train, val (or validation), test or classes."
            )
        if isinstance(value, str):
            value = value.split(":")
        if len(value) != 2 or not all(isinstance(v, str) and v for v in value):
            raise SourceError(
                f"h5 keys: {name}={value!r} needs two names, images:labels; e.g. {KEYS_EXAMPLE}."
            )
        pairs[split] = (value[0], value[1])
    if not pairs:
        raise SourceError(f"h5 keys {spec!r} name no split; write e.g. {KEYS_EXAMPLE}.")
    return pairs, classes


def _check(where: str, split: str, x, y) -> np.ndarray:
    """Validate one split's images and labels; returns labels as int64 (N,)."""
    shape = tuple(x.shape)
    if len(shape) == 4 and shape[-1] not in (1, 3, 4) and shape[1] in (1, 3, 4):
        raise SourceError(
            f"{where}: {split} images have shape {shape}, which looks channels-first; "
            "store them as N x H x W x C (x.transpose(0, 2, 3, 1))."
        )
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3, 4)):
        raise SourceError(
            f"{where}: {split} images have shape {shape}; expected N x H x W or N x H x W x C with C = 1, 3 or 4."
        )
    if 0 in shape[1:]:
        raise SourceError(
            f"{where}: {split} images have shape {shape}, with no pixels; store images of at least 1 x 1 pixel."
        )
    if np.dtype(x.dtype) != np.uint8:
        raise SourceError(
            f"{where}: {split} images are {x.dtype}; expected uint8 0..255. Convert them, e.g. "
            "(x * 255).round().astype('uint8') for 0..1 floats."
        )
    y = np.asarray(y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise SourceError(
            f"{where}: {split} labels have shape {y.shape}; expected (N,) or (N, 1) class indices."
        )
    if len(y) != shape[0]:
        raise SourceError(
            f"{where}: {split} has {shape[0]} images but {len(y)} labels; each image needs exactly one label."
        )
    if shape[0] == 0:
        raise SourceError(f"{where}: the {split} split has no images; remove it or add images.")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise SourceError(
                f"{where}: {split} labels are {y.dtype} {y[:5].tolist()}...; expected integer class indices 0..K-1 "
                "(map class names to indices first)."
            )
    y = y.astype(np.int64)
    if y.min() < 0:
        raise SourceError(
            f"{where}: {split} labels include {int(y.min())}; labels must be class indices 0..K-1 (no negatives)."
        )
    return y


def _names(raw) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(raw).reshape(-1).tolist()]


def _finish(where: str, images: dict, raw_labels: dict, names) -> ArraySet:
    out = ArraySet()
    for split in SPLIT_ORDER:
        if split in images:
            out.images[split] = images[split]
            out.labels[split] = _check(where, split, images[split], raw_labels[split])
    k = max(int(y.max()) for y in out.labels.values()) + 1
    if names is not None:
        out.class_names = _names(names)
        if k > len(out.class_names):
            raise SourceError(
                f"{where}: labels go up to {k - 1} but only {len(out.class_names)} class names are given; "
                "fix the labels or the class name list."
            )
        twice = sorted({n for n in out.class_names if out.class_names.count(n) > 1})
        if twice:
            raise SourceError(
                f"{where}: class names {', '.join(map(repr, twice[:5]))} appear more than once; give each class "
                "its own name (per-class metrics and predictions would merge them)."
            )
    else:
        # Without names, the labels themselves say how many classes there are (0..max). Mostly empty classes
        # are a mistake, not a dataset: a typo such as 10**9 would make a billion classes, {0, 7} six empty
        # ones that skew every per-class figure. A few gaps (a subset of MNIST's digits) stay allowed.
        present = np.unique(np.concatenate(list(out.labels.values())))
        if k - len(present) > len(present):
            missing = np.setdiff1d(np.arange(min(k, len(present) + 6)), present)[:5].tolist()
            raise SourceError(
                f"{where}: labels run up to {k - 1} but only {len(present)} distinct labels occur (no images for e.g. "
                f"{', '.join(map(str, missing))}); relabel them 0..{len(present) - 1}, or give class names for "
                "every index so empty classes are meant."
            )
        out.class_names = [str(i) for i in range(k)]
    return out


def _h5_datasets(f) -> list[str]:
    import h5py

    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def load_h5(path: Path, keys=None) -> ArraySet:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise SourceError(
            f"{path} is not a readable HDF5 file ({exc}); pass a .h5 file written by h5py."
        ) from None
    try:
        pairs, classes_key = _pairs_for(path, _h5_datasets(f), keys, what="dataset")
        images = {s: f[x] for s, (x, _) in pairs.items()}  # h5py datasets: rows are read on demand
        labels = {s: f[y][()] for s, (_, y) in pairs.items()}
        names = f[classes_key][()] if classes_key else None
        out = _finish(str(path), images, labels, names)
    except BaseException:
        f.close()
        raise
    out.handle = f
    return out


def load_npz(path: Path, keys=None) -> ArraySet:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path} is not a readable .npz file ({exc}); save it with numpy.savez.") from None
    with z:
        present = list(z.files)
        pairs, classes_key = _pairs_for(path, present, keys)
        try:
            images = {s: z[x] for s, (x, _) in pairs.items()}
            labels = {s: z[y] for s, (_, y) in pairs.items()}
            names = z[classes_key] if classes_key else None
        except ValueError as exc:  # object arrays need pickle, which could run code from the file
            raise SourceError(f"{path}: {exc}; store plain numeric arrays and string class names.") from None
    return _finish(str(path), images, labels, names)


def load_npy_dir(path: Path, keys=None) -> ArraySet:
    files = {p.stem: p for p in sorted(path.glob("*.npy"))}
    pairs, classes_key = _pairs_for(path, list(files), keys)

    def load(stem, mmap=None):
        try:
            return np.load(files[stem], mmap_mode=mmap, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SourceError(f"{files[stem]} is not a readable .npy file of plain arrays ({exc}).") from None

    images = {s: load(x, "r") for s, (x, _) in pairs.items()}  # memory-mapped: rows are read on demand
    labels = {s: load(y) for s, (_, y) in pairs.items()}
    names = load(classes_key) if classes_key else None
    return _finish(str(path), images, labels, names)


def _pairs_for(path: Path, present: list[str], keys, what: str = "array"):
    """({split: (images, labels)}, class names key or None) among the arrays (or h5 datasets) ``present``: the
    ones ``keys`` names, checked to exist, or the ones the naming rule finds."""
    shown = ", ".join(present[:30]) + (" ..." if len(present) > 30 else "")
    if keys is not None:
        pairs, classes_key = parse_keys(keys)
        missing = [k for pair in pairs.values() for k in pair if k not in present]
        if classes_key and classes_key not in present:
            missing.append(classes_key)
        if missing:
            raise SourceError(
                f"{path} has no {what} {', '.join(repr(m) for m in missing)}; it holds: {shown}. "
                f"Name existing ones with h5_keys=, e.g. {KEYS_EXAMPLE}."
            )
        return pairs, classes_key
    pairs = find_pairs(present)
    if not pairs:
        raise SourceError(
            f"{path} holds no image/label pair ({shown or 'nothing'}); name them x_train/y_train, "
            "train_set_x/train_set_y, train_images/train_labels (and the same for val, test) or images/labels, "
            f"or name them with h5_keys=, e.g. {KEYS_EXAMPLE}."
        )
    return pairs, next((k for k in present if k.lower() in CLASS_KEYS), None)


_IDX_NAME = re.compile(r"^(train|t10k|test)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$", re.IGNORECASE)
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_files(path: Path) -> dict[tuple[str, str], Path]:
    """{(split, "images"|"labels"): file} for MNIST-named IDX files in ``path`` (uncompressed preferred)."""
    found: dict[tuple[str, str], Path] = {}
    for p in sorted(path.iterdir(), key=lambda p: (p.name.lower().endswith(".gz"), p.name)):
        m = _IDX_NAME.match(p.name)
        if m and p.is_file():
            split = "train" if m.group(1).lower() == "train" else "test"
            found.setdefault((split, m.group(2).lower()), p)
    return found


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed or not, detected by content) as a numpy array of its declared shape."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{path}: broken gzip data ({exc}); download the file again.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise SourceError(
            f"{path} is not an IDX file (bad magic number {data[:4].hex()}); download it again."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(dims))
    if len(data) - header != count * dtype.itemsize:
        raise SourceError(
            f"{path}: header says {dims} but the file holds {len(data) - header} data bytes; it is truncated "
            "or corrupt, download it again."
        )
    return np.frombuffer(data, dtype, count=count, offset=header).reshape(dims)


def load_idx_dir(path: Path) -> ArraySet:
    files = idx_files(path)
    images, labels = {}, {}
    for split in ("train", "test"):
        have = {kind for s, kind in files if s == split}
        if have == {"images", "labels"}:
            images[split] = read_idx(files[split, "images"])
            labels[split] = read_idx(files[split, "labels"])
        elif have:
            missing = ({"images", "labels"} - have).pop()
            stem = "train" if split == "train" else "t10k"
            raise SourceError(
                f"{path} has {files[split, have.pop()].name} but no {stem}-{missing}-idx"
                f"{1 if missing == 'labels' else 3}-ubyte[.gz]; add the matching file."
            )
    if not images:
        raise SourceError(
            f"{path} has no complete IDX image/label pair; expected train-images-idx3-ubyte[.gz] etc."
        )
    names = FASHION_MNIST_CLASSES if is_fashion_mnist(labels) else None
    return _finish(str(path), images, labels, names)


def is_fashion_mnist(labels: dict) -> bool:
    """True when every split in ``{split: label array}`` holds exactly Fashion-MNIST's official labels."""
    for split, y in labels.items():
        n, digest = _FASHION_MNIST_LABELS.get(split, (None, None))
        # Shape and dtype first: other data is told apart without hashing its labels.
        if y.dtype != np.uint8 or y.shape != (n,):
            return False
        if hashlib.blake2b(np.ascontiguousarray(y).tobytes(), digest_size=16).hexdigest() != digest:
            return False
    return bool(labels)
