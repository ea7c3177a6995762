"""Unreadable image files during extraction: the ones headers show before any compute, and the ones met while
decoding (damaged past their header), which ``fail`` names all at once and ``skip`` drops from their split."""

from __future__ import annotations

import dataclasses

import numpy as np

from bottleneck import _tf
from bottleneck.config import ExtractConfig
from bottleneck.data import ImageDecodeError, find_bad_images
from bottleneck.errors import BadImageError

MAX_BAD_LISTED = 20


def rows_without(manifest, skipped: list[dict]):
    """The manifest whose items get rows: without the ``skipped`` ones (indices into ``manifest``)."""
    if not skipped:
        return manifest
    kept = manifest.without([s["index"] for s in skipped])
    if not len(kept):
        raise BadImageError("every image was unreadable; nothing to extract.", [s["id"] for s in skipped])
    return kept


def header_bad_files(src, config: ExtractConfig, progress) -> list[dict]:
    """The image files whose header already shows them unreadable, found while hashing (no decode): an error,
    or the rows to skip. Files damaged past their header are found when decoded (``drop_late``)."""
    bad = src.header_problems()
    if bad and config.on_bad_image == "fail":
        # Failing anyway: decode the others too, so that one error names every bad file before any compute.
        flagged = np.zeros(len(src.manifest), dtype=bool)
        flagged[[it.index for it, _ in bad]] = True
        rest = src.manifest.items_at(np.flatnonzero(~flagged))
        more = _decode_check(src, config, rest, progress)
        raise _bad_image_error(sorted(bad + more, key=lambda b: b[0].index))
    return [{"index": it.index, "id": it.id, "reason": reason} for it, reason in bad]


def _decode_check(src, config: ExtractConfig, items, progress) -> list:

    return find_bad_images(src, items, workers=config.workers or _tf.cpu_count(), progress=progress)


def _bad_image_error(bad) -> BadImageError:
    listed = "; ".join(f"{it.id} ({reason})" for it, reason in bad[:MAX_BAD_LISTED])
    more = f" and {len(bad) - MAX_BAD_LISTED} more" if len(bad) > MAX_BAD_LISTED else ""
    return BadImageError(
        f"{len(bad)} unreadable image(s): {listed}{more}. Fix or remove them, "
        "or pass on_bad_image='skip' to leave them out.",
        [it.path or it.id for it, _ in bad],
    )


class LateBadImage(Exception):
    """An image whose header passed but whose data failed to decode during the pass."""

    def __init__(self, item, reason: str):
        super().__init__(reason)
        self.item, self.reason = item, reason


def load_or_late(src, item, size: int, config: ExtractConfig):
    """The image as the engine gets it; an image that fails to decode raises LateBadImage (see ``drop_late``)."""

    try:
        return src.load(item, size, config.resize, config.fast_decode)
    except ImageDecodeError as exc:
        raise LateBadImage(item, exc.reason) from None


def drop_late(plan, src, writer, late: LateBadImage, progress):
    """A file damaged past its header, met while computing. ``fail``: decode the images not yet reached and
    raise one error naming every bad one (rows committed so far stay, for a resume or for reuse by a fixed
    source's run). ``skip``: record it, shrink its split (committed rows stay) and go on from the last commit."""
    if plan.config.on_bad_image == "fail":
        after = plan.manifest.items[late.item.index + 1 :]
        raise _bad_image_error([(late.item, late.reason), *_decode_check(src, plan.config, after, progress)])
    index = int(np.flatnonzero(src.manifest.id == late.item.id)[0])  # in the full manifest
    skipped = sorted(
        [*plan.skipped, {"index": index, "id": late.item.id, "reason": late.reason}], key=lambda s: s["index"]
    )
    manifest = rows_without(src.manifest, skipped)
    rows = manifest.rows_of(late.item.split)
    writer.shrink_split(
        late.item.split, manifest.label[rows], manifest.id[rows].tolist(), skipped, src.manifest
    )
    return dataclasses.replace(plan, manifest=manifest, skipped=skipped)
