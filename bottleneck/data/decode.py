"""Decoding any image file or array row to RGB uint8, and resizing it to the backbone's square input."""

from __future__ import annotations

import io
import re
import struct

import numpy as np
from PIL import Image, ImageOps

from bottleneck.config import RESIZES
from bottleneck.errors import one_of

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

# Only to name the format in messages when PIL fails before it knows the format itself.
_MAGIC = ((b"\xff\xd8", "JPEG"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"), (b"RIFF", "WEBP"))
_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
_16BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


class ImageDecodeError(Exception):
    """An image that cannot be decoded; ``reason`` is short ("truncated JPEG", "not an image", "empty file")."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_image(data: bytes, max_pixels: int | None = None, draft: int | None = None) -> np.ndarray:
    """Decode encoded image bytes (any format PIL reads, by content, not extension) to RGB uint8 (H, W, 3).

    EXIF orientation is applied and animated images give their first frame. Images with more than ``max_pixels``
    pixels (default: PIL.Image.MAX_IMAGE_PIXELS, ~89 Mpx, read at each call; 0 = no limit) are refused before they
    are decoded, so a decompression bomb cannot exhaust memory. PIL.Image.MAX_IMAGE_PIXELS itself is never changed,
    so a few PIL readers (WebP, TIFF, ICO, ...) that check sizes themselves still refuse images over twice it,
    whatever ``max_pixels`` says. ``draft`` (fast decoding): a JPEG is decoded at the smallest DCT scale (1/2,
    1/4 or 1/8) that keeps both sides at least ``draft`` pixels; other formats decode in full. Raises
    ImageDecodeError.
    """
    return pil_to_rgb(_decoded(data, max_pixels, draft))


def decode_resized(
    data: bytes, size: int, resize: str = "squash", max_pixels: int | None = None, draft: int | None = None
) -> np.ndarray:
    """``resize_image(decode_image(data, max_pixels, draft), size, resize)``, with the same bytes out, faster:
    an RGB image is resized as decoded, without a round trip through NumPy (what small images spend most on)."""
    im = _decoded(data, max_pixels, draft)
    if im.mode == "RGB":
        return _resize_pil(im, int(size), resize)
    return resize_image(pil_to_rgb(im), size, resize)


# Formats whose orientation tag can only come from an EXIF block that PIL puts in ``info["exif"]``; for them an
# image without one needs no exif_transpose (which parses the metadata again, a third of a small PNG's decode).
_EXIF_IN_INFO = {"JPEG", "PNG", "WEBP", "GIF", "BMP"}


def _decoded(data: bytes, max_pixels: int | None, draft: int | None) -> Image.Image:
    """The decoded PIL image, upright (EXIF orientation applied), in the mode it was stored in."""
    limit = pixel_limit(max_pixels)
    im = _checked_header(data, limit)
    fmt = im.format or "image"
    if draft and fmt == "JPEG":
        im.draft(None, (int(draft), int(draft)))  # libjpeg's scaled IDCT: most of the decoding work skipped
    try:
        im.load()  # decode now: truncated or corrupt data fails here (LOAD_TRUNCATED_IMAGES stays False)
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc, fmt, limit) from None
    except Exception as exc:
        msg = str(exc)
        if "truncat" in msg.lower() or isinstance(exc, EOFError):
            raise ImageDecodeError(f"truncated {fmt}") from None
        raise ImageDecodeError(f"corrupt {fmt}: {msg}") from None
    if fmt in _EXIF_IN_INFO and "exif" not in im.info:
        return im
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block only loses the orientation; the pixels themselves are fine
        return im


def pixel_limit(max_pixels: int | None) -> int:
    """The pixel limit decode_image applies for a ``max_pixels`` setting (None: PIL's, read now; 0: none)."""
    return (Image.MAX_IMAGE_PIXELS or 0) if max_pixels is None else int(max_pixels)


def inspect_image(data: bytes, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) from the header alone, with decode_image's checks that need no pixel data: empty file, not
    an image, a corrupt header, over the decompression-bomb limit. Raises ImageDecodeError with decode_image's
    reasons. Data that is damaged past its header (a truncated download) only fails when decoded."""
    return _checked_header(data, pixel_limit(max_pixels)).size


def _checked_header(data: bytes, limit: int) -> Image.Image:
    """The opened (not yet decoded) image, or ImageDecodeError for what its header already tells."""
    if not data:
        raise ImageDecodeError("empty file")
    try:
        im = _open_header(data)
    except _PilBomb as bomb:
        raise _bomb_error(bomb.exc, bomb.fmt, limit) from None
    except Exception as exc:  # a header so broken that the format plugin itself fails
        fmt = next((name for magic, name in _MAGIC if data.startswith(magic)), "image")
        if "truncat" in str(exc).lower() or isinstance(exc, EOFError):
            raise ImageDecodeError(f"truncated {fmt}") from None
        raise ImageDecodeError(f"corrupt {fmt} header: {exc}") from None
    if im is None:
        raise ImageDecodeError("not an image")
    over = pixel_limit_problem(*im.size, limit)
    if over:
        raise ImageDecodeError(over)
    return im


def pixel_limit_problem(w: int, h: int, limit: int) -> str | None:
    """decode_image's reason for a w x h image over the decompression-bomb ``limit`` (0: none), or None."""
    if limit > 0 and w * h > limit:
        return (
            f"{w}x{h} = {w * h} pixels, over the decompression-bomb limit of {limit}; "
            "raise it with max_image_pixels=N (0 = no limit) if the image is trusted"
        )
    return None


def _open_header(data: bytes) -> Image.Image | None:
    """``Image.open(io.BytesIO(data))`` without its decompression-bomb check; None when no format accepts the data.

    Image.open checks the size against the module global PIL.Image.MAX_IMAGE_PIXELS (a warning between the limit
    and twice it, an error above) and offers no per-call limit. decode_image applies its own limit instead, and a
    library must not lift that global: it is process-wide, so another thread could open an unchecked file
    meanwhile. So this is Image.open's format loop for an in-memory file, minus the check; it reads only the header.
    """
    fp = io.BytesIO(data)
    prefix = data[:16]
    Image.preinit()  # the common plugins (JPEG, PNG, GIF, BMP, PPM), as Image.open loads them
    tried: set[str] = set()
    for load_more in (None, Image.init):  # the rest of the plugins only when no common one accepts the data
        if load_more is not None:
            load_more()
        for fmt in [f for f in Image.ID if f not in tried]:
            tried.add(fmt)
            if fmt not in Image.OPEN:
                continue
            factory, accept = Image.OPEN[fmt]
            try:
                result = not accept or accept(prefix)
                if not result or isinstance(result, str):  # a str is PIL's "looks like X, unsupported" note
                    continue
                fp.seek(0)
                return factory(fp, "")
            except (SyntaxError, IndexError, TypeError, struct.error):  # Image.open's "not this format"
                continue
            except Image.DecompressionBombError as exc:
                raise _PilBomb(exc, fmt) from None
    return None


class _PilBomb(Exception):
    """PIL's DecompressionBombError from the reader of format ``fmt`` while opening."""

    def __init__(self, exc: Exception, fmt: str):
        super().__init__(str(exc))
        self.exc, self.fmt = exc, fmt


def _bomb_error(exc: Exception, fmt: str, limit: int) -> ImageDecodeError:
    # Some readers (WebP, ICO when opening; TIFF, GIF frames when loading) run PIL's own check, an error above twice
    # PIL.Image.MAX_IMAGE_PIXELS, which max_pixels cannot lift: only the program owning that global may. When
    # bottleneck's own limit refuses the image as well, its usual message says so.
    m = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
    if m and 0 < limit < int(m[1]):
        return ImageDecodeError(
            f"{m[1]} pixels, over the decompression-bomb limit of {limit}; "
            "raise it with max_image_pixels=N (0 = no limit) if the image is trusted"
        )
    what = f"{m[1]} pixels, over PIL's own limit of {m[2]}" if m else str(exc).rstrip(".")
    return ImageDecodeError(
        f"{what} (twice PIL.Image.MAX_IMAGE_PIXELS), which PIL's {fmt} reader applies itself; "
        "raise PIL.Image.MAX_IMAGE_PIXELS in the calling program if the image is trusted"
    )


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode to RGB uint8 (H, W, 3)."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode in _16BIT_MODES or mode == "I":
        # 16-bit samples keep their full range: the top byte, not a clip at 255 (which would turn most pixels white).
        a = np.asarray(im)
        if mode == "I":
            a = np.clip(a, 0, 65535)
        return _gray_to_rgb((a.astype(np.uint32) >> 8).astype(np.uint8))
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.max() <= 1.0:  # float images are usually 0..1; larger values are taken as 0..255
            a = a * 255.0
        return _gray_to_rgb(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        # Transparent pixels usually store black (or garbage) colour; logos, icons and product shots with an alpha
        # channel are meant to be seen on a white page, so compositing on white matches what a person sees,
        # while dropping alpha would invent dark backgrounds the backbone would then describe.
        a = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        alpha = a[..., 3:4]
        rgb = (a[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)  # L, 1, P, CMYK (JPEG too), YCbCr, ...
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(f"unsupported image mode {mode}: {exc}") from None


def _gray_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=2)


def array_to_rgb(a: np.ndarray) -> np.ndarray:
    """One image from an array source, (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8, to RGB uint8 (H, W, 3).

    Alpha in arrays is dropped, not composited: array datasets with 4 channels are rarely real transparency.
    """
    a = np.asarray(a)
    if a.ndim == 2:
        return _gray_to_rgb(a)
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    if a.shape[2] == 4:
        return np.ascontiguousarray(a[..., :3])
    return np.ascontiguousarray(a)


def draft_size(size: int, fast: bool) -> int | None:
    """The ``draft`` argument of decode_image for a ``size`` input: None unless fast decoding is on."""
    return int(size) if fast else None


def resize_image(img: np.ndarray, size: int, policy: str = "squash") -> np.ndarray:
    """Resize RGB uint8 (H, W, 3) to (size, size, 3) uint8 with bilinear (antialiased) resampling.

    ``squash`` stretches to the square, ignoring aspect; ``crop`` takes the centred square of the short side;
    ``pad`` scales the long side to ``size`` and letterboxes with zeros, centred.
    """
    if policy not in RESIZES:
        raise one_of("resize", policy, RESIZES)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"resize_image needs RGB uint8 (H, W, 3); got {img.dtype} {img.shape}")
    size = int(size)
    if img.shape[:2] == (size, size):
        return img
    return _resize_pil(Image.fromarray(img), size, policy)


def _resize_pil(im: Image.Image, size: int, policy: str) -> np.ndarray:
    """resize_image on an RGB PIL image."""
    if policy not in RESIZES:
        raise one_of("resize", policy, RESIZES)
    w, h = im.size
    if (h, w) == (size, size):
        return np.asarray(im)
    if policy == "squash" or h == w:
        return np.asarray(im.resize((size, size), Image.BILINEAR))
    if policy == "crop":
        s = min(h, w)
        left, top = (w - s) // 2, (h - s) // 2
        return np.asarray(im.resize((size, size), Image.BILINEAR, box=(left, top, left + s, top + s)))
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = np.asarray(im.resize((nw, nh), Image.BILINEAR))
    return out
