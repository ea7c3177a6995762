"""`cache verify --recompute`: a cache's own checks, then random rows extracted again with the engine the cache was
made with and compared with the stored ones (inference composes the cache's checks, never the other way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bottleneck.cache.manage import VerifyReport
from bottleneck.cache.manage import verify_cache as check_cache_folder
from bottleneck.data import open_source
from bottleneck.errors import CacheError
from bottleneck.inference.chooser import choose_engine
from bottleneck.job_settings import RECOMPUTE


def verify_cache(
    path, *, recompute: int = 0, tolerance: float = 1e-4, seed: int = 0, progress=None
) -> VerifyReport:
    """``cache.manage.verify_cache`` (every checksum), then ``recompute`` random rows per split re-extracted and
    compared, when the checksums found nothing.

    ``tolerance`` bounds the max abs difference of recomputed rows relative to the feature scale (the larger of
    the stored and recomputed rows' max |x|), on top of the rounding of the stored dtype: a recomputed row is
    rounded to that dtype before the comparison and may differ from the stored one by one unit in the last place
    (eps of float16 is 9.8e-4).
    """
    RECOMPUTE.validate({"recompute": recompute, "tolerance": tolerance, "seed": seed}, CacheError)

    def then(cache, report):
        recompute_rows(cache, report, recompute, tolerance, seed)

    return check_cache_folder(path, progress=progress, then=then if recompute else None)


def recompute_rows(cache, report: VerifyReport, k: int, tolerance: float, seed: int) -> None:
    """Re-extract ``k`` random rows per split of ``cache`` from its source and record rows that differ."""

    source = cache.meta.get("source")
    if not source or not Path(source).exists():
        raise CacheError(
            f"cannot recompute rows: the source {source!r} of {cache.path} is not available here."
        )
    rng = np.random.default_rng(seed)
    # The engine extraction would choose (the verified ONNX model when there is one), never another copy of it.
    engine = choose_engine(cache.config, cache.path.parent, int8_meta=cache.meta)
    with open_source(source, **cache.meta.get("source_options", {})) as src:
        by_id = {(it.split, it.id): it for it in src.manifest.items}
        diffs = []
        for split in cache.splits:
            n = cache.n(split)
            ids = cache.ids(split)
            feats = cache.features(split)
            for row in rng.choice(n, size=min(k, n), replace=False):
                item = by_id.get((split, str(ids[row])))
                if item is None:
                    report.bad.append(
                        {"split": split, "start": int(row), "stop": int(row) + 1, "reason": "not in source"}
                    )
                    continue
                img = src.load(item, engine.input_size, cache.config.resize, cache.config.fast_decode)
                stored = np.asarray(feats[int(row)])
                # Round the recomputed row as extraction did before storing it, then compare in float32.
                new = np.asarray(engine(img[None])[0]).astype(stored.dtype).astype(np.float32)
                old = stored.astype(np.float32)
                # Relative to the larger of the two rows: features all zero where the recomputed ones are not (or
                # the other way round) differ by 100 %, however small the features are.
                scale = max(
                    float(np.abs(old).max()), float(np.abs(new).max()), float(np.finfo(np.float32).tiny)
                )
                diff = float(np.abs(new - old).max()) / scale
                diffs.append(diff)
                report.recomputed += 1
                if diff > tolerance + _rounding_allowance(stored.dtype, scale):
                    report.bad.append(
                        {
                            "split": split,
                            "start": int(row),
                            "stop": int(row) + 1,
                            "reason": f"recomputed differs ({diff:.2e})",
                        }
                    )
        report.max_abs_diff = max(diffs) if diffs else None


def _rounding_allowance(dtype, scale: float) -> float:
    """How far, relative to ``scale``, two values that differ by less than the tolerance can end up once both are
    rounded to ``dtype``.

    A value near a rounding boundary can round to the neighbouring representable number while its recomputation
    rounds to this one: one unit in the last place of the row's largest value, eps * scale (or the fixed spacing
    of subnormals, for rows that small). It is negligible for float32 (1.2e-7) and what float16 needs (9.8e-4):
    float16 rounding alone exceeds the default 1e-4 tolerance, and comparing without it reported good float16
    caches as bad. A real change (other weights, decoding or resizing) moves features far more than one ulp.
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        return 0.0
    info = np.finfo(dtype)
    return max(float(info.eps) * scale, float(info.smallest_subnormal)) / scale
