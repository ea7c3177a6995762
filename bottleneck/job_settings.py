"""The declared settings of the jobs whose parameters are not a dataclass of their own: extract's run options,
fit-head, evaluate, compare, fine-tune's run options, export, classify, the cache tools, datasets and doctor.

``ExtractConfig`` (config.py), ``TuneSettings`` (tuning/recipe.py), ``INSPECT`` (inspection/options.py) declare
theirs beside their job. A setting taken by several
jobs is declared once (``bottleneck.settings``) and reused, in a job's own words where it means it differently.
"""

from __future__ import annotations

from pathlib import Path

from bottleneck.config import SETTINGS as EXTRACT
from bottleneck.constraints import (
    BATCH_SIZE,
    EPOCHS,
    FRACTION,
    LEARNING_RATE,
    PATIENCE,
    Boolean,
    Interval,
    Options,
)
from bottleneck.settings import (
    BATCH_SIZE_SETTING,
    CACHE_ARG,
    CACHE_DIR,
    CLASS_WEIGHT_SETTING,
    FORCE,
    IMAGE_SIZE_SETTING,
    MOVED_SOURCE,
    OUT,
    RUN_ARG,
    RUNS_DIR,
    SEED_SETTING,
    TOP_SETTING,
    Setting,
    Settings,
)

SOURCE_ARG = Setting(
    "source",
    ...,
    help="Image folder, .h5, .npz, .npy folder, IDX folder, CSV, Parquet file(s) or WebDataset .tar shards (folder "
    "or brace pattern); or its s3:// (gs://, ...) URL.",
    argument=True,
    type=str,
)
CACHE_URL_ARG = CACHE_ARG.but(help="A cache folder made by `bottleneck extract` (or its URL).")
URL_CACHE_DIR = CACHE_DIR.but(
    default="cache",
    type=str,
    help="Where caches live: a folder, or an s3:// (gs://, ...) URL (staged locally, published when complete).",
)

# ``extract(source, config, ...)``: how the run goes, besides the ExtractConfig it computes.
EXTRACT_RUN = Settings(
    Setting(
        "val_fraction",
        None,
        [None, FRACTION],
        "Make a stratified validation split of this fraction of train.",
        type=float,
    ),
    SEED_SETTING.but(help="Seed for --val-fraction."),
    Setting(
        "h5_keys", None, help="Other h5 keys, e.g. 'train=X_train:y_train,test=X_test:y_test'.", type=str
    ),
    Setting(
        "split",
        None,
        [None, Options(("train", "val", "validation", "test"))],
        "WebDataset shards: the split of every shard (default: from each shard's name, else train).",
        type=str,
    ),
    Setting(
        "label_key",
        None,
        help="WebDataset shards: the .json field holding the label (default: label).",
        type=str,
    ),
    Setting(
        "image_column",
        None,
        help="Parquet sources: the column of encoded images (default: found by type).",
        type=str,
    ),
    Setting("label_column", None, help="Parquet sources: the label column (default: 'label').", type=str),
    URL_CACHE_DIR,
    FORCE.but(help="Recompute even when a complete cache exists."),
    Setting(
        "rehash",
        False,
        Boolean(),
        "Read and hash every image file, also those whose size and times are unchanged since the last "
        "run (which are otherwise taken from the source's hash index under --cache-dir).",
    ),
    Setting(
        "cluster",
        None,
        help="Compute on Dask: local:N starts N worker processes here; tcp://HOST:8786 uses a running "
        "scheduler whose workers share --cache-dir and the source. Same features, bit for bit; zarr only.",
        type=str,
        envvar="BOTTLENECK_DASK_SCHEDULER",
    ),
    Setting(
        "exclude",
        None,
        help="A CSV with an id column (inspect's leaks.csv, label_errors.csv ...): leave those images out. The "
        "list's digest is part of the cache key.",
        type=Path,
    ),
)

BACKBONES = Settings(
    Setting("pattern", "*", help="Shell-style name pattern.", argument=True, type=str),
    Setting("layers", False, Boolean(), "List the layers of the one matching backbone.", flags=("--layers",)),
    IMAGE_SIZE_SETTING.but(help="Input side for --layers shapes (default: the backbone's)."),
)

# The training options every Keras head takes (``None``: the head's own default); the head checks them
# (``_parameter_constraints``), here they are named for the command line.
HEAD_TRAINING = Settings(
    Setting("epochs", None, [None, EPOCHS], "Keras heads: maximum epochs.", type=int),
    Setting("batch_size", None, [None, BATCH_SIZE], "Keras heads: batch size.", type=int),
    Setting("lr", None, [None, LEARNING_RATE], "Keras heads: Adam learning rate.", type=float),
    Setting("patience", None, [None, PATIENCE], "Keras heads: early-stopping patience.", type=int),
    CLASS_WEIGHT_SETTING,
)
FIT_TRAINING = Settings(
    HEAD_TRAINING["epochs"].but(help="Keras heads: maximum epochs (default: 50)."),
    HEAD_TRAINING["batch_size"].but(help="Keras heads: batch size (default: rows/32 within 16..256)."),
    HEAD_TRAINING["lr"].but(help="Keras heads: Adam learning rate (default: 1e-3)."),
    HEAD_TRAINING["patience"].but(help="Keras heads: epochs without better val loss before stopping."),
    CLASS_WEIGHT_SETTING,
)

FIT = Settings(
    Setting("head", "logreg", help="logreg | linear | mlp | sigmoid | pool-dense.", flags=("--head",)),
    OUT.but(help="Run folder (default: RUNS_DIR/<cache>-<head>, made unique)."),
    RUNS_DIR,
    FIT_TRAINING,
    SEED_SETTING.but(help="random_state of the head, for reproducible runs."),
    Setting(
        "layers",
        None,
        help="Fit on these layers of a multi-layer cache: names (a,b), top or multiscale.",
        type=str,
    ),
    Setting(
        "param",
        None,
        help="Other head parameter, KEY=VALUE (repeatable), e.g. width=512.",
        flags=("--param",),
        type=list[str],
    ),
    Setting(
        "report", False, Boolean(), "Also write RUN/report/index.html (offline page).", flags=("--report",)
    ),
    FORCE,
)

EVALUATE = Settings(
    RUN_ARG,
    Setting(
        "cache",
        ...,
        help="A cache with the same backbone settings and classes (or its URL).",
        argument=True,
        type=str,
    ),
    Setting("split", "test", help="Split to score."),
    Setting(
        "report",
        None,
        help="Also write an offline page (index.html + thumbnails) into this folder.",
        flags=("--report",),
        type=Path,
    ),
    FORCE,
)

COMPARE = Settings(
    Setting(
        "caches",
        ...,
        help="Cache folders (e.g. one per backbone), or their URLs.",
        argument=True,
        type=list[str],
    ),
    Setting("heads", "logreg,linear,mlp", help="Comma-separated head names."),
    Setting("seeds", "1", help="How many seeds (3 = 0,1,2) or a list (0,1,2)."),
    OUT.but(default=Path("runs/compare"), help="Where the table, CSV, JSON and plot are saved."),
    HEAD_TRAINING,
    FIT["param"].but(help="KEY=VALUE for every head that has it, or HEAD.KEY=VALUE."),
    Setting(
        "layers",
        None,
        help="A layer subset to score (a,b | top | multiscale); repeat for several rows.",
        flags=("--layers",),
        type=list[str],
    ),
    Setting(
        "layer_search",
        None,
        help="greedy: add the layer set chosen by forward selection on val (its path is printed).",
        type=str,
    ),
    Setting(
        "baseline",
        True,
        Boolean(),
        "Add a logreg row on the raw pixels of the same images.",
        flags=("--baseline/--no-baseline",),
    ),
    FIT["report"].but(help="Also write OUT/report/index.html: the table and the best row's predictions."),
    FORCE,
)

# fine_tune(run, ...): where the run's inputs and outputs are, besides its TuneSettings.
FINE_TUNE_RUN = Settings(
    MOVED_SOURCE,
    Setting(
        "cache_dir",
        None,
        help="Where cached activations go (default: beside the run's cache).",
        type=Path,
    ),
    OUT.but(help="Run folder (default: RUNS_DIR/<run>-fine-tuned)."),
    RUNS_DIR,
    FORCE,
)

EXPORT = Settings(
    RUN_ARG.but(help="A run folder (fit-head or fine-tune)."),
    Setting("format", "keras", help="keras | onnx | savedmodel | tflite.", flags=("--format",)),
    OUT.but(help="Output file (default: RUN/export/model.<ext>)."),
    FORCE,
    MOVED_SOURCE.but(help="Where the run's images are now, if they moved."),
)

CLASSIFY = Settings(
    Setting("images", ..., help="Image files.", argument=True, type=list[Path]),
    EXTRACT["backbone"].but(help="Registry name (see `bottleneck backbones`) or a saved Keras classifier."),
    TOP_SETTING.but(default=5),
    EXTRACT["weights"].but(help="imagenet | none | PATH to a local weights file."),
    EXTRACT["image_size"],
    EXTRACT["resize"],
    EXTRACT["preprocess"],
    BATCH_SIZE_SETTING.but(cli=False),
)

FASHION_MNIST = Settings(
    Setting("out_dir", ..., help="A new, empty folder.", argument=True, type=Path),
    Setting(
        "per_class",
        None,
        [None, Interval(int, 1, None, example=100)],
        "Keep the first N images of each class in each split.",
        type=int,
    ),
    MOVED_SOURCE.but(help="Folder with the four IDX files (default: Debian's, else the download)."),
    Setting("download", True, Boolean(), "Allow the official download.", flags=("--download/--no-download",)),
)

CACHE_VERIFY = Settings(
    Setting("cache", ..., help="A cache folder.", argument=True, type=Path),
    Setting(
        "recompute",
        0,
        Interval(int, 0, None, example=8),
        "Re-extract this many random rows per split and compare.",
    ),
)
CACHE_RM = Settings(
    Setting("caches", ..., help="Cache folders to delete.", argument=True, type=list[Path]),
    FORCE.but(
        help="Also delete a cache whose folder holds files bottleneck did not write: the cache's own files go, "
        "those files and the folder stay."
    ),
)
CACHE_GC = Settings(
    CACHE_DIR,
    Setting(
        "older_than_hours",
        24.0,
        Interval(float, 0, None, example=24.0),
        "Only incomplete caches untouched for this long.",
    ),
    Setting("dry_run", False, Boolean(), "Show what would be removed.", flags=("--dry-run",)),
)
DOCTOR = Settings(URL_CACHE_DIR.but(help="The cache folder (or URL) whose free space to show."))

# predict_images (and `bottleneck predict`): declared here, not beside the job, so the CLI reads it without
# importing the heads (scikit-learn) at start-up.
PREDICT = Settings(TOP_SETTING, BATCH_SIZE_SETTING)

# advise (and `bottleneck advise`): here, like PREDICT, so that the CLI starts without the heads.
MIN_TRAIN_PER_CLASS = 5  # the pilot needs this many train images of every class
ADVISE = Settings(
    EXTRACT["backbone"].but(default=None, help="Backbone to measure (default: efficientnet_lite0)."),
    Setting(
        "per_class",
        100,
        Interval(int, MIN_TRAIN_PER_CLASS, None, example=100),
        "Pilot train images per class (at most).",
    ),
    IMAGE_SIZE_SETTING.but(help="Input side in pixels (default: the backbone's)."),
    EXTRACT["weights"].but(help="imagenet | none | path to a weights file."),
    EXTRACT["engine"].but(help="auto | tensorflow | onnx."),
    Setting(
        "fine_tune",
        None,
        [None, Boolean()],
        "Also fine-tune the top blocks on the pilot (default: when it has at least 500 train images per class).",
        flags=("--fine-tune/--no-fine-tune",),
        type=bool,
    ),
    EXTRACT["preprocess"],
    EXTRACT["mean"],
    EXTRACT["std"],
    EXTRACT["channels"],
    SEED_SETTING.but(help="Seed of the pilot sample and the heads."),
    CACHE_DIR.but(help="Where the pilot caches go."),
    RUNS_DIR.but(help="Where the advice folder goes when --out is not given."),
    OUT.but(help="Advice folder (default runs/advise-<source>-<backbone>)."),
    FORCE,
)

# cache.verify_cache's recomputation: the rows of `cache verify --recompute`, and the library's tolerance and seed.
RECOMPUTE = Settings(
    CACHE_VERIFY["recompute"],
    Setting(
        "tolerance", 1e-4, Interval(float, 0, None, example=1e-4), "Largest relative difference of a row."
    ),
    SEED_SETTING.but(help="Seed of the rows drawn."),
)

# `cache export` (``cache.export.export_cache``): a cache's rows as Parquet tables or NumPy files.
EXPORT_FORMATS = ("parquet", "npy")
CACHE_EXPORT = Settings(
    CACHE_URL_ARG,
    Setting(
        "out",
        ...,
        help="A new folder: SPLIT.parquet per split (or SPLIT.features.npy ...).",
        argument=True,
        type=Path,
    ),
    Setting(
        "to",
        "parquet",
        Options(EXPORT_FORMATS),
        "parquet: one table per split (id, split, label, class_name, features); npy: SPLIT.features.npy, "
        "SPLIT.labels.npy, SPLIT.ids.npy.",
        flags=("--to",),
    ),
    Setting(
        "splits",
        None,
        help="Only these splits, comma-separated (default: all).",
        flags=("--split",),
        type=str,
    ),
    FORCE,
)

# `bottleneck similar` (``inspection.similar.find_similar``): a cache's nearest images to a query.
SIMILAR = Settings(
    CACHE_URL_ARG,
    Setting(
        "image",
        None,
        help="A query image file (embedded with the cache's backbone).",
        argument=True,
        type=Path,
    ),
    Setting(
        "id", None, help="Query by a cached image's id instead of an image file.", flags=("--id",), type=str
    ),
    Setting("k", 10, Interval(int, 1, None, example=10), "How many nearest images.", flags=("--k", "-k")),
    Setting(
        "split", None, help="Search only this split (default: every split).", flags=("--split",), type=str
    ),
    CACHE_DIR.but(help="Where a verified ONNX engine of the cache's backbone may be found."),
    Setting(
        "report",
        None,
        help="Also write an offline HTML page (REPORT/index.html) with thumbnails of the query's neighbours.",
        flags=("--report",),
        type=Path,
    ),
    MOVED_SOURCE.but(help="Where the cache's images are now, if they moved (for --report thumbnails)."),
    FORCE,
)
