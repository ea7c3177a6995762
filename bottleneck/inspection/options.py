"""The declared options of ``inspect_cache`` (and ``bottleneck inspect``): default, constraint and help, once."""

from __future__ import annotations

from pathlib import Path

from bottleneck.constraints import Boolean, Interval
from bottleneck.inspection.duplicates import DEFAULT_THRESHOLD, NEIGHBOURS
from bottleneck.settings import FORCE, MOVED_SOURCE, OUT, Setting, Settings

# The options of ``inspect_cache`` (and ``bottleneck inspect``), declared once. ``threshold`` and ``neighbours`` are
# checked by ``duplicates.check_threshold`` and ``check_neighbours`` (whose messages say what the numbers mean), the
# method names where they are resolved; the rest before the cache is read.
INSPECT = Settings(
    Setting(
        "run", None, help="A run folder: show its predictions and mistakes.", flags=("--run",), type=Path
    ),
    Setting("split", None, help="Split of the predictions and confusion matrix (default: test).", type=str),
    OUT.but(help="Output folder (default: runs/inspect-<cache>)."),
    MOVED_SOURCE.but(help="Where the cache's source images are now, if they moved."),
    Setting(
        "threshold",
        DEFAULT_THRESHOLD,
        help="Cosine similarity, (0, 1], of near duplicates by the features alone; with the pixel check, pairs "
        "this close are always compared.",
    ),
    Setting(
        "pixel_check",
        True,
        Boolean(),
        "Confirm near duplicates by comparing their images.",
        flags=("--pixel-check/--no-pixel-check",),
    ),
    Setting("neighbours", NEIGHBOURS, help="Nearest neighbours of each image compared by pixels."),
    Setting(
        "label_errors",
        True,
        Boolean(),
        "Find likely label errors.",
        flags=("--label-errors/--no-label-errors",),
    ),
    Setting(
        "label_method",
        "estimate",
        help="estimate (the estimated number of wrong labels) | cleanlab (needs cleanlab).",
    ),
    Setting("folds", 5, Interval(int, 2, None, example=5), "Folds of the out-of-fold logistic regression."),
    Setting(
        "map_method",
        "auto",
        help="auto (t-SNE up to 1 000 points, above that UMAP where installed, else PCA) | umap | tsne | pca.",
    ),
    Setting("page", True, Boolean(), "Write index.html with thumbnails.", flags=("--page/--no-page",)),
    FORCE,
)
