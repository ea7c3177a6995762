"""Every bad-image fixture of the robustness issue, end to end through extract: fail names them all before any
compute, skip records them, and the awkward-but-valid files (CMYK, 16-bit, alpha, palette, EXIF, GIF) decode."""

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import CFG, PixelEngine
from PIL import Image
from typer.testing import CliRunner

from bottleneck.cache.meta import read_manifest
from bottleneck.cli import app
from bottleneck.errors import BadImageError
from bottleneck.inference.runner import run_extraction

RED, BLUE = (255, 0, 0), (0, 0, 255)


def engines(built):
    def make(config):
        built.append(PixelEngine())
        return built[-1]

    return make


def encode(im, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds almost no data: a decompression bomb's first bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def noise_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)), "JPEG")


# id -> expected RGB of the 8x8 input (uniform images), or None for the EXIF check below
GOOD = {
    "a/animated.gif": RED,  # first frame of two
    "a/cmyk.jpg": RED,
    "a/deep16.png": (0x80, 0x80, 0x80),
    "a/gray.png": (77, 77, 77),
    "a/palette.png": RED,
    "a/png_named.jpg": (5, 6, 7),  # wrong extension: decoded by content
    "b/big.png": (9, 9, 9),  # 120 x 100: fine under the default limit
    "b/rgba.png": BLUE,
    "b/rotated.jpg": None,
}
BAD = {
    "a/empty.png": "empty file",
    "a/text.jpg": "not an image",
    "b/bomb.png": "20000x20000 = 400000000 pixels, over the decompression-bomb limit",
    "b/truncated.jpg": "truncated JPEG",
}


def make_fixtures(root):
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, (0, 255, 0))]
    frames[0].save(root / "a/animated.gif", save_all=True, append_images=frames[1:])
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(root / "a/cmyk.jpg", quality=95)
    Image.fromarray(np.full((12, 16), 0x8000, np.uint16)).save(root / "a/deep16.png")
    Image.new("L", (16, 12), 77).save(root / "a/gray.png")
    p = Image.new("P", (16, 12), 1)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.save(root / "a/palette.png")
    (root / "a/png_named.jpg").write_bytes(encode(Image.new("RGB", (16, 12), (5, 6, 7)), "PNG"))
    Image.new("RGB", (120, 100), (9, 9, 9)).save(root / "b/big.png")
    Image.new("RGBA", (16, 12), (*BLUE, 255)).save(root / "b/rgba.png")
    stored = np.zeros((16, 32, 3), np.uint8)  # stored landscape: left half red, right half blue
    stored[:, :16], stored[:, 16:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the left (red) half ends up on top
    Image.fromarray(stored).save(root / "b/rotated.jpg", exif=exif, quality=95)
    (root / "a/empty.png").write_bytes(b"")
    (root / "a/text.jpg").write_text("a text file with an image extension")
    (root / "b/bomb.png").write_bytes(png_header_only(20000, 20000))
    (root / "b/truncated.jpg").write_bytes(noise_jpeg()[:400])
    return root


@pytest.fixture
def fixtures(tmp_path):
    return make_fixtures(tmp_path / "data")


def test_fail_names_every_bad_file_before_any_compute(fixtures, tmp_path):
    built = []
    with pytest.raises(BadImageError) as e:
        run_extraction(fixtures, CFG, cache_dir=tmp_path / "c", engine_factory=engines(built))
    msg = str(e.value)
    assert msg.startswith("4 unreadable image(s): ") and "on_bad_image='skip'" in msg
    for name, reason in BAD.items():
        assert f"{name} ({reason}" in msg
    assert sorted(e.value.paths) == sorted(str(fixtures / n) for n in BAD)
    assert built == []  # no engine was even built
    assert not any((tmp_path / "c").glob("*/meta.json"))


def test_skip_records_bad_files_and_decodes_the_rest(fixtures, tmp_path):
    r = run_extraction(
        fixtures, CFG.replace(on_bad_image="skip"), cache_dir=tmp_path / "c", engine_factory=engines([])
    )
    features, labels = r.cache.load("train")
    ids = list(r.cache.ids("train"))
    assert ids == sorted(GOOD) and features.shape == (len(GOOD), 192)
    assert list(labels) == [0 if i.startswith("a/") else 1 for i in ids]
    for row, name in zip(features.reshape(-1, 8, 8, 3), ids, strict=True):
        if GOOD[name] is not None:
            np.testing.assert_allclose(row, np.broadcast_to(GOOD[name], row.shape), atol=3, err_msg=name)
    rotated = features[ids.index("b/rotated.jpg")].reshape(8, 8, 3)
    assert rotated.shape == (8, 8, 3)
    np.testing.assert_allclose(rotated[1, 4], RED, atol=20)  # EXIF applied: red on top, blue below
    np.testing.assert_allclose(rotated[6, 4], BLUE, atol=20)
    skipped = {s["id"]: s["reason"] for s in read_manifest(r.path)[1]}
    assert sorted(skipped) == sorted(BAD) and len(r.skipped) == len(BAD)
    for name, reason in BAD.items():
        assert skipped[name].startswith(reason)
    assert r.summary()["skipped"] == 4 and r.summary()["splits"]["train"]["n"] == len(GOOD)


def test_pixel_limit_can_be_lowered_and_lifted(fixtures, tmp_path):
    for name in BAD:
        (fixtures / name).unlink()
    low = CFG.replace(max_image_pixels=10_000)
    with pytest.raises(
        BadImageError,
        match=r"1 unreadable image\(s\): b/big.png \(120x100 = 12000 pixels.*max_image_pixels=N",
    ):
        run_extraction(fixtures, low, cache_dir=tmp_path / "c", engine_factory=engines([]))
    (fixtures / "b/bomb.png").write_bytes(png_header_only(20000, 20000))
    lifted = run_extraction(
        fixtures,
        CFG.replace(max_image_pixels=0, on_bad_image="skip"),
        cache_dir=tmp_path / "c",
        engine_factory=engines([]),
    )
    # With no limit the bomb's header passes and its missing pixel data is what fails: it is still left out.
    assert [(s["id"], s["reason"]) for s in lifted.skipped] == [("b/bomb.png", "truncated PNG")]
    assert lifted.cache.n("train") == len(GOOD)


def test_cli_fail_is_one_line_without_traceback(fixtures, tmp_path):
    res = CliRunner().invoke(
        app, ["extract", str(fixtures), "--weights", "none", "--cache-dir", str(tmp_path / "c")]
    )
    assert res.exit_code != 0
    out = res.output.strip()
    assert "Traceback" not in out and out.startswith("error: 4 unreadable image(s)")
    assert len(out.splitlines()) == 1
