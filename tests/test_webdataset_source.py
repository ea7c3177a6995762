"""WebDataset sources: .tar shards in img2dataset's layout (key.jpg/png + key.cls/json/txt), written with tarfile
and PIL; extracted end to end with the pixels backbone, through the Python API and the CLI."""

import io
import json
import os
import tarfile
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bottleneck import extract
from bottleneck.cli import app
from bottleneck.data import open_source
from bottleneck.data import webdataset_source as wds
from bottleneck.data.decode import decode_image
from bottleneck.data.source import open_reader
from bottleneck.errors import BadImageError, SourceError
from bottleneck.report.thumbnails import source_problem

HOUR_AGO = time.time() - 3600
LABELS = [0, 1, 10]  # ints: class names sorted numerically ("10" after "1" and "0", not between)


def _image(i: int, fmt: str) -> bytes:
    rng = np.random.default_rng(i)
    pixels = rng.integers(0, 256, (24 + i % 5, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(HOUR_AGO)
    tar.addfile(info, io.BytesIO(data))


def write_shards(folder, prefix: str, samples: list, per_shard: int = 4, label_as: str = "cls"):
    """img2dataset's layout: shards ``{prefix}-{000000..}.tar``, each sample key.jpg|png, key.txt (a caption),
    key.json (metadata) and key.cls (unless labels are a JSON field). ``samples``: (image bytes, ext, label)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(0, len(samples), per_shard):
        path = folder / f"{prefix}-{s // per_shard:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i, (data, ext, label) in enumerate(samples[s : s + per_shard], start=s):
                key = f"{s // per_shard:05d}{i:04d}"
                _add(tar, f"{key}.{ext}", data)
                _add(tar, f"{key}.txt", f"a caption of picture {i}".encode())
                meta = {"url": f"http://example.com/{i}.{ext}", "key": key, "status": "success"}
                if label_as == "json":
                    meta["category"] = label
                _add(tar, f"{key}.json", json.dumps(meta).encode())
                if label_as == "cls":
                    _add(tar, f"{key}.cls", str(label).encode())
        os.utime(path, (HOUR_AGO, HOUR_AGO))  # an old dataset: fresh shards are scanned again (racy)
        paths.append(path)
    return paths


def _samples(n: int, offset: int = 0, labels=LABELS) -> list:
    return [
        (_image(offset + i, "PNG" if i % 2 else "JPEG"), "png" if i % 2 else "jpg", labels[i % len(labels)])
        for i in range(n)
    ]


@pytest.fixture
def shards(tmp_path):
    data = tmp_path / "shards"
    train = _samples(10)
    val = _samples(3, offset=100)
    write_shards(data, "train", train)
    write_shards(data, "val", val)
    return data, train, val


def test_extract_shards_end_to_end_then_a_hit_without_reading_images(shards, tmp_path, monkeypatch):
    data, train, val = shards
    before = sorted(p.name for p in data.iterdir())
    first = extract(data, backbone="pixels", cache_dir=tmp_path / "c")
    cache = first.cache
    assert not first.hit and first.computed == 13
    assert cache.n("train") == 10 and cache.n("val") == 3
    assert cache.class_names == ["0", "1", "10"]
    names = [cache.class_names[i] for i in cache.labels("train")]
    ids = list(cache.ids("train"))
    by_id = dict(zip(ids, names, strict=True))
    assert by_id["train-000000/000000000"] == "0" and by_id["train-000002/000020009"] == "0"
    assert by_id["train-000000/000000001"] == "1"
    assert by_id["train-000000/000000002"] == "10"
    assert sorted(p.name for p in data.iterdir()) == before  # nothing written beside the user's shards
    assert list((tmp_path / "c" / "index").glob("*.shards/*.npz"))  # the member indexes live in the cache
    real, scans = wds.scan_shard, []
    monkeypatch.setattr(
        wds, "scan_shard", lambda shard, *a, **k: scans.append(shard.name) or real(shard, *a, **k)
    )
    hit = extract(data, backbone="pixels", cache_dir=tmp_path / "c")
    assert hit.hit and scans == [] and hit.cache.key == cache.key
    again = extract(data, backbone="pixels", cache_dir=tmp_path / "c", rehash=True)
    assert again.hit and len(scans) == 4  # --rehash reads every shard again
    scans.clear()
    write_shards(data, "val", _samples(3, offset=200))  # one shard changed: only it is read again
    changed = extract(data, backbone="pixels", cache_dir=tmp_path / "c")
    assert scans == ["val-000000.tar"] and changed.computed == 3 and changed.reused == 10


def test_an_undecodable_image_is_skipped_and_named(tmp_path):
    samples = _samples(4)
    samples[1] = (b"not a picture at all", "jpg", 1)
    write_shards(tmp_path / "d", "train", samples)
    with pytest.raises(BadImageError, match=r"train-000000/000000001 \(not an image\)"):
        extract(tmp_path / "d", backbone="pixels", cache_dir=tmp_path / "c")
    r = extract(tmp_path / "d", backbone="pixels", cache_dir=tmp_path / "c", on_bad_image="skip")
    assert r.cache.n("train") == 3 and [s["id"] for s in r.skipped] == ["train-000000/000000001"]


def test_features_equal_the_same_images_as_class_folders(shards, tmp_path):
    data, train, val = shards
    folder = tmp_path / "folders"
    for i, (img, ext, label) in enumerate(
        train + val
    ):  # all of them: the pixels side follows the smallest image
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        (folder / str(label) / f"{i:04d}.{ext}").write_bytes(img)
    files = extract(folder, backbone="pixels", cache_dir=tmp_path / "c").cache
    shard = extract(data, backbone="pixels", cache_dir=tmp_path / "c", split="train").cache
    assert shard.n("train") == 13 and shard.class_names == files.class_names
    want = dict(zip(files.ids("train"), files.load("train")[0], strict=True))
    got = dict(zip(shard.ids("train"), shard.load("train")[0], strict=True))
    assert len(want) == len(got) == 13
    for ident, row in got.items():
        shard_name, key = ident.split("/")
        i = int(key[-4:]) + (10 if shard_name.startswith("val") else 0)
        label = (train + val)[i][2]
        np.testing.assert_array_equal(row, want[f"{label}/{i:04d}.{(train + val)[i][1]}"])


def test_one_item_reads_back_by_its_member_offset(shards):
    data, train, _ = shards
    with open_source(data) as src:
        manifest = src.manifest
    row = next(i for i, ident in enumerate(manifest.id.tolist()) if ident == "train-000001/000010005")
    item = manifest.item(row)
    assert item.path.endswith("train-000001.tar") and item.row > 0
    assert wds.read_member(item.path, item.row) == train[5][0]
    with open_reader(manifest) as reader:
        np.testing.assert_array_equal(reader.read(item), decode_image(train[5][0]))
        assert reader.load(item, 16).shape == (16, 16, 3)
    assert source_problem(manifest, [row]) is None  # inspect's thumbnails can read it
    moved = data.rename(data.parent / "moved")
    assert "missing" in source_problem(manifest, [row]) and moved.is_dir()


def test_cli_brace_pattern_json_label_key_and_split(tmp_path):
    data = tmp_path / "web"
    samples = _samples(6, labels=["dog", "cat", "bird"])
    write_shards(data, "part", samples, per_shard=2, label_as="json")
    write_shards(data, "part-extra", _samples(1))  # outside the pattern: left out
    args = [
        "extract",
        str(data / "part-{000000..000002}.tar"),
        "--backbone",
        "pixels",
        "--label-key",
        "category",
    ]
    args += ["--split", "test", "--cache-dir", str(tmp_path / "c"), "--json", "-q"]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["hit"] is False and out["splits"] == {
        "test": {"n": 6, "feature_shape": out["splits"]["test"]["feature_shape"]}
    }
    assert json.loads(runner.invoke(app, args).stdout)["hit"] is True
    info = json.loads(runner.invoke(app, ["info", out["path"], "--json"]).stdout)
    assert info["class_names"] == ["bird", "cat", "dog"]
    missing = runner.invoke(app, [*args[:-2], "--label-key", "nope"])
    assert missing.exit_code != 0 and "has no label" in missing.output and "--label-key" in missing.output
    bad_split = runner.invoke(app, [*args[:4], "--split", "dev"])
    assert bad_split.exit_code != 0 and "dev" in bad_split.output


def _tar(path, members: dict) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            _add(tar, name, data)


def test_bad_shards_name_the_shard_and_the_sample(tmp_path):
    png = _image(1, "PNG")
    (tmp_path / "a").mkdir()
    _tar(tmp_path / "a" / "train-0.tar", {"k1.png": png})
    with pytest.raises(SourceError, match=r"train-0.tar: sample 'k1' has no label"):
        open_source(tmp_path / "a")
    (tmp_path / "b").mkdir()
    _tar(tmp_path / "b" / "train-0.tar", {"k1.png": png, "k1.cls": b"1", "k2.cls": b"0"})
    with pytest.raises(SourceError, match=r"train-0.tar: sample 'k2' has no image"):
        open_source(tmp_path / "b")
    (tmp_path / "c").mkdir()
    whole = tmp_path / "c" / "train-0.tar"
    _tar(whole, {"k1.png": png, "k1.cls": b"1", "k2.png": png, "k2.cls": b"0"})
    padded = -(-len(png) // 512) * 512
    whole.write_bytes(whole.read_bytes()[: 512 + padded + 1024 + 512 + 100])  # cut inside k2.png
    with pytest.raises(SourceError, match=r"train-0.tar: truncated or damaged tar at sample 'k2'"):
        open_source(tmp_path / "c")
    with pytest.raises(SourceError, match=r"shard\(s\) of .* do not exist \(train-1.tar"):
        open_source(tmp_path / "c" / "train-{0..1}.tar")
    with pytest.raises(SourceError, match="split and label_key apply to WebDataset shards"):
        open_source(_folder(tmp_path), split="train")


def _folder(tmp_path):
    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(_image(0, "PNG"))
    return tmp_path / "imgs"


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_and_header_formats_read_as_tarfile_reads_them(tmp_path, fmt):
    key = "sub/" + "k" * (120 if fmt != tarfile.USTAR_FORMAT else 90)  # past ustar's 100-byte name: pax / GNU
    png, jpg = _image(3, "PNG"), _image(4, "JPEG")
    (tmp_path / "d").mkdir()
    shard = tmp_path / "d" / "test-000.tar"
    with tarfile.open(shard, "w", format=fmt) as tar:
        folder = tarfile.TarInfo("sub")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)  # a folder member: skipped
        for name, data in ((f"{key}.png", png), (f"{key}.cls", b"3"), ("é2.jpg", jpg), ("é2.cls", b"1")):
            _add(tar, name, data)
    scan = wds.scan_shard(shard, "label")
    with tarfile.open(shard) as tar:
        offsets = {m.name: m.offset for m in tar.getmembers()}
    assert scan.keys == [key, "é2"] and scan.labels == ["3", "1"]
    assert scan.offsets == [offsets[f"{key}.png"], offsets["é2.jpg"]]
    assert wds.read_member(str(shard), scan.offsets[0]) == png
    assert wds.read_member(str(shard), scan.offsets[1]) == jpg
