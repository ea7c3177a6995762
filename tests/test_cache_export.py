"""`cache export`: Parquet tables read back by pandas, polars, DuckDB and Hugging Face datasets equal the cache
exactly; npy files too; an existing folder that is not ours is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_cache
from typer.testing import CliRunner

from bottleneck.cache import open_cache
from bottleneck.cache.export import METADATA_KEY, export_cache
from bottleneck.cli import app
from bottleneck.errors import BottleneckError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cache = make_cache(root / "c", dim=6, sizes={"train": 50, "val": 7, "test": 3})
    written = export_cache(cache, root / "out")
    return open_cache(root / "c"), root / "out", written


def _expected(cache, split):
    return (
        np.asarray(cache.features(split)[:], np.float32),
        np.asarray(cache.labels(split)),
        [str(i) for i in np.asarray(cache.ids(split)).tolist()],
    )


def test_the_files_and_their_schema(exported):
    cache, out, written = exported
    assert sorted(p.name for p in written) == ["export.json", "test.parquet", "train.parquet", "val.parquet"]
    schema = pq.read_schema(out / "train.parquet")
    assert schema.names == ["id", "split", "label", "class_name", "features"]
    assert pa.types.is_fixed_size_list(schema.field("features").type)
    assert schema.field("features").type.list_size == 6
    assert schema.field("features").type.value_type == pa.float32()
    meta = json.loads(schema.metadata[METADATA_KEY])
    assert meta["key"] == cache.key and meta["split"] == "train" and meta["class_names"] == cache.class_names


def test_pandas_reads_the_cache_exactly(exported):
    pd = pytest.importorskip("pandas")
    cache, out, _ = exported
    for split in cache.splits:
        X, y, ids = _expected(cache, split)
        df = pd.read_parquet(out / f"{split}.parquet")
        np.testing.assert_array_equal(np.stack(df["features"].to_numpy()), X)
        np.testing.assert_array_equal(df["label"].to_numpy(), y)
        assert df["id"].tolist() == ids and set(df["split"]) == {split}
        assert df["class_name"].tolist() == [cache.class_names[i] for i in y]


def test_polars_reads_the_cache_exactly(exported):
    pl = pytest.importorskip("polars")
    cache, out, _ = exported
    X, y, ids = _expected(cache, "train")
    df = pl.read_parquet(out / "train.parquet")
    np.testing.assert_array_equal(np.asarray(df["features"].to_list(), np.float32), X)
    np.testing.assert_array_equal(df["label"].to_numpy(), y)
    assert df["id"].to_list() == ids


def test_duckdb_reads_the_cache_exactly(exported):
    duckdb = pytest.importorskip("duckdb")
    cache, out, _ = exported
    X, y, ids = _expected(cache, "val")
    rows = duckdb.sql(f"SELECT id, label, features FROM '{out / 'val.parquet'}'").fetchall()
    assert [r[0] for r in rows] == ids
    assert [r[1] for r in rows] == y.tolist()
    np.testing.assert_array_equal(np.asarray([r[2] for r in rows], np.float32), X)


def test_hugging_face_datasets_reads_the_cache_exactly(exported, tmp_path):
    datasets = pytest.importorskip("datasets")
    cache, out, _ = exported
    X, y, ids = _expected(cache, "train")
    files = {s: str(out / f"{s}.parquet") for s in cache.splits}
    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
    train = ds["train"].with_format("numpy")
    np.testing.assert_array_equal(np.asarray(train["features"], np.float32), X)
    np.testing.assert_array_equal(np.asarray(train["label"]), y)
    assert list(ds["train"]["id"]) == ids
    assert ds["train"].features["label"].names == cache.class_names  # a ClassLabel, from the schema metadata


def test_float16_caches_stay_float16(tmp_path):
    cache = make_cache(tmp_path / "c", dim=4, sizes={"train": 5, "val": 2, "test": 2}, dtype="float16")
    export_cache(cache, tmp_path / "out", splits="train")
    table = pq.read_table(tmp_path / "out" / "train.parquet")
    assert table.schema.field("features").type.value_type == pa.float16()
    np.testing.assert_array_equal(
        np.asarray(table["features"].to_pylist(), np.float16), np.asarray(cache.features("train")[:])
    )
    assert not (tmp_path / "out" / "val.parquet").exists()


def test_npy_export(tmp_path):
    cache = make_cache(tmp_path / "c", dim=3, sizes={"train": 9, "val": 2, "test": 2})
    export_cache(cache, tmp_path / "out", to="npy")
    for split in cache.splits:
        X, y, ids = _expected(cache, split)
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{split}.features.npy"), X)
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{split}.labels.npy"), y)
        assert np.load(tmp_path / "out" / f"{split}.ids.npy").tolist() == ids


def test_a_folder_of_the_users_is_refused_and_ours_is_replaced(tmp_path):
    cache = make_cache(tmp_path / "c", dim=3, sizes={"train": 9, "val": 2, "test": 2})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(BottleneckError, match="refusing to replace.*force"):
        export_cache(cache, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    user_file = tmp_path / "table.parquet"
    user_file.write_text("mine")
    with pytest.raises(BottleneckError, match="refusing to replace"):
        export_cache(cache, user_file)
    assert user_file.read_text() == "mine"
    export_cache(cache, tmp_path / "ours")
    export_cache(cache, tmp_path / "ours", to="npy")  # our own earlier export is replaced
    assert (tmp_path / "ours" / "train.features.npy").exists()
    assert not (tmp_path / "ours" / "train.parquet").exists()


def test_cli_export_and_its_errors(tmp_path):
    make_cache(tmp_path / "c", dim=3, sizes={"train": 9, "val": 2, "test": 2})
    runner = CliRunner()
    r = runner.invoke(
        app, ["cache", "export", str(tmp_path / "c"), str(tmp_path / "out"), "--to", "parquet", "-q"]
    )
    assert r.exit_code == 0, r.output
    assert str(tmp_path / "out" / "train.parquet") in r.output
    r = runner.invoke(app, ["cache", "export", str(tmp_path / "c"), str(tmp_path / "x"), "--to", "csv"])
    assert r.exit_code != 0 and "--to" in r.output
    r = runner.invoke(app, ["cache", "export", str(tmp_path / "c"), str(tmp_path / "y"), "--split", "nope"])
    assert r.exit_code != 0 and "no split 'nope'" in r.output


def test_many_small_blocks_give_the_same_tables(tmp_path, monkeypatch):
    from bottleneck.cache import export

    cache = make_cache(tmp_path / "c", dim=5, sizes={"train": 40, "val": 3, "test": 3})
    monkeypatch.setattr(export, "_BLOCK_BYTES", 5 * 4 * 7)  # 7 rows a block at most
    assert len(list(export.blocks(open_cache(cache.path), "train"))) > 10
    export_cache(cache, tmp_path / "out", splits=["train"])
    table = pq.read_table(tmp_path / "out" / "train.parquet")
    np.testing.assert_array_equal(
        np.asarray(table["features"].to_pylist(), np.float32), np.asarray(cache.features("train")[:])
    )
    assert table.num_rows == cache.n("train")
