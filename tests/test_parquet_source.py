"""Parquet sources, written by the real libraries (datasets with a ClassLabel, pyarrow with Hugging Face
metadata): manifest, labels, class names, ids, the features of the same images as a class-folder source, a hit
that reads no image bytes, the CLI options, and one-line errors for bad input."""

import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bottleneck import extract
from bottleneck.cli import app
from bottleneck.config import ExtractConfig
from bottleneck.data import parquet_source
from bottleneck.data.source import open_source
from bottleneck.errors import SourceError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

PIXELS = ExtractConfig(backbone="pixels", image_size=16, batch_size=4)
NAMES = ["cat", "dog", "fox"]
HOUR_AGO = time.time() - 3600


def _image(i: int, fmt: str) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20 + i % 3, 24, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _images(n: int, offset: int = 0) -> list[bytes]:
    return [_image(offset + i, "PNG" if i % 2 else "JPEG") for i in range(n)]


def _hf_dataset(root, splits=(("train", 10), ("test", 5))):
    """The Hugging Face hub layout written by ``datasets``: data/{split}-00000-of-00001.parquet, Image + ClassLabel."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    written = {}
    for k, (split, n) in enumerate(splits):
        images, labels = _images(n, 100 * k), [i % 3 for i in range(n)]
        ds = datasets.Dataset.from_dict(
            {"image": [{"bytes": b, "path": None} for b in images], "label": labels}, features=features
        )
        ds = ds.cast_column("image", datasets.Image())
        (root / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
        written[split] = (images, labels)
    return written


def _folder_copy(root, written):
    """The same images as a class-folder source: train/<class>/<row>.png ..."""
    for split, (images, labels) in written.items():
        for i, (data, y) in enumerate(zip(images, labels, strict=True)):
            d = root / split / NAMES[y]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:03d}.img").with_suffix(".png" if data[:4] == b"\x89PNG" else ".jpg").write_bytes(data)
    return root


def _aged(root):
    for p in root.rglob("*.parquet"):
        os.utime(p, (HOUR_AGO, HOUR_AGO))
    return root


def test_hf_layout_extracts_as_the_same_images_in_class_folders(tmp_path):
    written = _hf_dataset(tmp_path / "hf")
    got = extract(tmp_path / "hf", PIXELS, cache_dir=tmp_path / "c")
    cache = got.cache
    assert not got.hit and cache.class_names == NAMES
    assert (cache.n("train"), cache.n("test")) == (10, 5)
    assert list(cache.ids("train")) == [f"data/train-00000-of-00001.parquet:{i}" for i in range(10)]
    np.testing.assert_array_equal(cache.labels("train"), written["train"][1])
    folders = extract(_folder_copy(tmp_path / "f", written), PIXELS, cache_dir=tmp_path / "c").cache
    for split in ("train", "test"):
        by_id = dict(zip(folders.ids(split), np.asarray(folders.features(split)), strict=True))
        x = np.asarray(cache.features(split))
        for row, (y, data) in enumerate(zip(written[split][1], written[split][0], strict=True)):
            ext = ".png" if data[:4] == b"\x89PNG" else ".jpg"
            np.testing.assert_array_equal(x[row], by_id[f"{split}/{NAMES[y]}/{row:03d}{ext}"])
    again = extract(tmp_path / "hf", PIXELS, cache_dir=tmp_path / "c")
    assert again.hit and again.cache.key == cache.key


def test_a_hit_on_unchanged_files_reads_no_image_bytes(tmp_path, monkeypatch):
    _hf_dataset(tmp_path / "hf")
    _aged(tmp_path / "hf")
    first = extract(tmp_path / "hf", PIXELS, cache_dir=tmp_path / "c")

    def no_reads(*a, **k):
        raise AssertionError("image bytes read on a hit of unchanged files")

    monkeypatch.setattr(parquet_source, "_file_hashes", no_reads)
    again = extract(tmp_path / "hf", PIXELS, cache_dir=tmp_path / "c")
    assert again.hit and again.cache.key == first.cache.key
    monkeypatch.undo()
    # A changed file is read again (its stamp differs): another label order gives another cache.
    table = pq.read_table(tmp_path / "hf/data/test-00000-of-00001.parquet")
    table = table.set_column(1, "label", pa.array([2, 2, 2, 2, 2], pa.int64()))
    pq.write_table(table, tmp_path / "hf/data/test-00000-of-00001.parquet")
    changed = extract(tmp_path / "hf", PIXELS, cache_dir=tmp_path / "c")
    assert not changed.hit and changed.cache.labels("test").tolist() == [2] * 5


def _hf_metadata(features: dict) -> dict:
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def test_pyarrow_file_with_row_groups_binary_column_and_string_labels(tmp_path):
    images = _images(9)
    labels = ["zebra", "ant", "moth"] * 3
    table = pa.table(
        {"name": [f"n{i}" for i in range(9)], "jpg": pa.array(images, pa.binary()), "kind": labels}
    )
    pq.write_table(table, tmp_path / "animals.parquet", row_group_size=2)  # five row groups
    with open_source(tmp_path / "animals.parquet", label_column="kind") as src:
        m = src.manifest
        assert m.class_names == ("ant", "moth", "zebra") and m.splits() == ["train"]
        assert m.id.tolist() == [f"animals.parquet:{i}" for i in range(9)]
        assert m.label.tolist() == [2, 0, 1] * 3
        for item in reversed(list(m.items)):  # any order: each row group is read when needed
            np.testing.assert_array_equal(
                src.read(item), np.asarray(Image.open(io.BytesIO(images[item.row])))
            )


def test_class_names_come_from_the_classlabel_of_pyarrow_metadata(tmp_path):
    schema = pa.schema(
        [("img", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("y", pa.int64())],
        metadata=_hf_metadata({"img": {"_type": "Image"}, "y": {"names": NAMES, "_type": "ClassLabel"}}),
    )
    rows = [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(_images(4))]
    for split in ("train", "validation"):
        pq.write_table(
            pa.table({"img": rows, "y": [0, 2, 2, 0]}, schema=schema), tmp_path / f"{split}-0.parquet"
        )
    for options in ({"label_column": "y"}, {}):  # without --label-column: the one ClassLabel column
        with open_source(tmp_path, **options) as src:
            assert src.manifest.class_names == tuple(NAMES) and src.manifest.splits() == ["train", "val"]
            assert src.manifest.label.tolist() == [0, 2, 2, 0] * 2


def test_cli_extracts_with_named_columns_and_hits_the_second_time(tmp_path):
    table = pa.table(
        {"pic": pa.array(_images(6), pa.binary()), "thumb": pa.array(_images(6, 50)), "cls": [0, 1] * 3}
    )
    pq.write_table(table, tmp_path / "train-0.parquet")
    args = ["extract", str(tmp_path / "train-0.parquet"), "--backbone", "pixels", "--image-size", "16"]
    args += ["--image-column", "pic", "--label-column", "cls", "--cache-dir", str(tmp_path / "c"), "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["hit"] is False
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["hit"] is True
    two = CliRunner().invoke(app, args[:6] + args[8:])  # two image columns and none named
    assert two.exit_code == 2 and "--image-column" in two.stderr and len(two.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "columns, options, expected",
    [
        ({"path": ["a.png"], "label": [0]}, {}, "has no image column"),
        ({"image": [b"x"], "y": [0]}, {}, "name the label column with --label-column"),
        ({"image": [b"x"], "label": [0]}, {"label_column": "cls"}, "has no column 'cls'"),
        ({"image": [b"x"], "label": [0]}, {"image_column": "label"}, "not encoded images"),
        ({"image": [b"x"], "label": [None]}, {}, "label every image"),
    ],
)
def test_bad_tables_are_one_clear_line(tmp_path, columns, options, expected):
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    with pytest.raises(SourceError, match=expected) as err:
        open_source(tmp_path / "t.parquet", **options)
    assert "\n" not in str(err.value)


def test_mixed_schemas_and_unnamed_files_are_refused(tmp_path):
    pq.write_table(pa.table({"image": [b"x"], "label": [0]}), tmp_path / "train-0.parquet")
    pq.write_table(pa.table({"image": [b"x"], "label": ["a"]}), tmp_path / "test-0.parquet")
    with pytest.raises(SourceError, match="mixed schemas"):
        open_source(tmp_path)
    (tmp_path / "test-0.parquet").unlink()
    pq.write_table(pa.table({"image": [b"x"], "label": [0]}), tmp_path / "extra.parquet")
    with pytest.raises(SourceError, match="not named for a split"):
        open_source(tmp_path)


def test_column_options_apply_to_parquet_sources_only(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(SourceError, match="apply to Parquet sources"):
        open_source(tmp_path, image_column="image")


def test_a_val_split_keeps_file_order_so_row_groups_are_read_once(tmp_path):
    table = pa.table({"image": pa.array(_images(12), pa.binary()), "label": [0, 1, 2] * 4})
    pq.write_table(table, tmp_path / "train-0.parquet", row_group_size=3)
    with open_source(tmp_path, val_fraction=0.25) as src:
        m = src.manifest
        assert m.splits() == ["train", "val"] and len(m.rows_of("val")) == 3
        for split in ("train", "val"):
            rows = m.row[m.rows_of(split)]
            assert (np.diff(rows) > 0).all()
    got = extract(tmp_path, PIXELS, cache_dir=tmp_path / "c", val_fraction=0.25)
    assert (got.cache.n("train"), got.cache.n("val")) == (9, 3)


def test_unreadable_and_missing_image_bytes_are_bad_images(tmp_path):
    images = _images(6)
    images[2], images[4] = b"garbage", None
    pq.write_table(
        pa.table({"image": pa.array(images, pa.binary()), "label": [0, 1] * 3}), tmp_path / "t.parquet"
    )
    got = extract(tmp_path / "t.parquet", PIXELS, cache_dir=tmp_path / "c", on_bad_image="skip")
    assert got.cache.n("train") == 4
    assert [(s["id"], s["reason"]) for s in got.skipped] == [
        ("t.parquet:2", "not an image"),
        ("t.parquet:4", "no image bytes in the row"),
    ]
