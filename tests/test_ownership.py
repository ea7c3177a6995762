"""Nothing a user owns is replaced or deleted: the sealed ownership records of ``_io`` and every writer that uses
them (run folders, pages, comparisons, inspections, advice, fine-tuned runs, cache gc / rm)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import MeanColor, make_image_folder
from typer.testing import CliRunner

from bottleneck import _io, _ownership
from bottleneck.cache.manage import gc_caches, remove_cache
from bottleneck.cli import app
from bottleneck.config import ExtractConfig
from bottleneck.errors import BottleneckError, CacheError
from bottleneck.inference.runner import run_extraction
from bottleneck.runs import fit_head


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    src = make_image_folder(root / "data", {"a": 4, "b": 4}, splits=["train", "val", "test"])
    cfg = ExtractConfig(weights="none", batch_size=4)
    return run_extraction(src, cfg, cache_dir=root / "c", engine_factory=lambda c: MeanColor()).cache


def _built(path: Path, files: dict[str, str], kind: str = "run") -> Path:
    with _ownership.atomic_dir(path, kind) as tmp:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
    return path


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


# -- the record ------------------------------------------------------------------------------------------------------
def test_a_folder_built_by_atomic_dir_is_recorded_and_replaceable(tmp_path):
    out = _built(tmp_path / "out", {"metrics.json": "{}", "head/w.npz": "x"})
    record = json.loads((out / _ownership.RECORD).read_text())
    assert record["kind"] == "run" and record["writer"] == "bottleneck" and len(record["id"]) == 32
    assert set(record["files"]) == {"metrics.json", "head/w.npz"}
    assert record["files"]["head/w.npz"] == _io.file_hash(out / "head" / "w.npz")
    assert not (out / _ownership.BUILDING).exists()
    assert _ownership.replace_problem(out) is None
    _built(out, {"metrics.json": "{2}"})  # ours: replaced whole, no leftovers beside it
    assert _tree(out).keys() == {"metrics.json", _ownership.RECORD}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda p: (p / "notes.txt").write_text("mine"), "it holds files bottleneck did not write: notes.txt"),
        (lambda p: (p / "head" / "mine.py").write_text("x"), "did not write: head/mine.py"),
        (lambda p: (p / "metrics.json").write_text("edited"), "files changed since bottleneck wrote them: metrics.json"),
        (lambda p: (p / _ownership.RECORD).unlink(), "it has no record of files bottleneck wrote"),
        (lambda p: (p / _ownership.RECORD).write_text((p / _ownership.RECORD).read_text().replace("run", "rum")), "was edited"),
        (lambda p: (p / _ownership.RECORD).write_text("[]"), "was edited or damaged"),
        (lambda p: os.symlink("/etc", p / "link"), "did not write: link/"),
    ],
)  # fmt: skip
def test_any_file_not_ours_makes_the_folder_the_users(tmp_path, change, problem):
    out = _built(tmp_path / "out", {"metrics.json": "{}", "head/w.npz": "x"})
    change(out)
    assert problem in _ownership.replace_problem(out)
    before = _tree(out)
    with pytest.raises(
        BottleneckError, match=r"refusing to replace .*out: .* or force=True to move it aside"
    ):
        _built(out, {"metrics.json": "new"})
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left either


def test_a_marker_file_is_no_proof(tmp_path):
    for marker in ("metrics.json", "index.html", "comparison.json", "summary.json", "saved_model.pb"):
        folder = tmp_path / marker
        folder.mkdir()
        (folder / marker).write_text("{}")
        (folder / "thesis.tex").write_text("years of work")
        assert "no record" in _ownership.replace_problem(folder)


def test_force_moves_the_users_folder_aside_whole(tmp_path):
    user = tmp_path / "project"
    (user / "src").mkdir(parents=True)
    (user / "src" / "main.py").write_text("print(1)")
    (user / "metrics.json").write_text("theirs")
    before = _tree(user)
    lines = []
    with _ownership.atomic_dir(user, "run", force=True, notify=lines.append) as tmp:
        (tmp / "metrics.json").write_text("ours")
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("project.replaced-")]
    assert _tree(aside) == before
    assert (user / "metrics.json").read_text() == "ours" and _ownership.replace_problem(user) is None
    assert lines == [f"{user} was not bottleneck's (it has no record of files bottleneck wrote ({_ownership.RECORD})): "
                     f"moved it aside to {aside}."]  # fmt: skip


def test_a_nested_folder_of_ours_counts_as_ours(tmp_path):
    run = _built(tmp_path / "run", {"metrics.json": "{}"})
    _built(run / "report", {"index.html": "<html>"}, kind="page")
    assert _ownership.replace_problem(run) is None
    (run / "report" / "mine.txt").write_text("x")  # the inner record no longer covers it: the whole is theirs
    assert "report/mine.txt" in _ownership.replace_problem(run)


def test_reseal_records_only_the_files_named(tmp_path):
    run = _built(tmp_path / "run", {"metrics.json": "{}"})
    (run / "metrics.json").write_text('{"path": 1}')
    (run / "notes.txt").write_text("theirs")
    _ownership.reseal(run, ["metrics.json"])
    assert _ownership.replace_problem(run) == "it holds files bottleneck did not write: notes.txt"


def test_a_killed_writers_folder_is_collected_and_a_users_lookalike_is_not(tmp_path):
    dead = tmp_path / ".out.999999.tmp"  # no such process
    dead.mkdir()
    (dead / _ownership.BUILDING).write_text("x")
    (dead / "metrics.json").write_text("{}")
    lookalike = tmp_path / ".out.999998.tmp"
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("mine")
    _built(tmp_path / "out", {"metrics.json": "{}"})
    assert not dead.exists() and (lookalike / "keep.txt").read_text() == "mine"


# -- every writer, pointed at a user's folder ----------------------------------------------------------------------
def _plant(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.txt").write_text("do not lose")
    for marker in ("metrics.json", "index.html", "comparison.json", "summary.json", "advice.json"):
        (folder / marker).write_text('{"mine": true}')
    return _tree(folder)


def _refused(args: list[str], folder: Path, before: dict) -> None:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: refusing to replace") and "--force" in line and folder.name in line, line
    assert _tree(folder) == before


def test_every_writer_refuses_a_users_folder_before_the_work_and_force_keeps_it(cache, tmp_path):
    run = fit_head(cache, "logreg", out=tmp_path / "run")
    c = str(cache.path)
    commands = {
        "fit-head": (["fit-head", c, "--out", "{}"], "metrics.json"),
        "evaluate --report": (["evaluate", str(run.path), c, "--report", "{}"], "index.html"),
        "compare": (["compare", c, "--heads", "logreg", "--no-baseline", "--out", "{}"], "comparison.json"),
        "inspect": (["inspect", c, "--no-label-errors", "--no-page", "--out", "{}"], "summary.json"),
    }
    for name, (args, made) in commands.items():
        folder = tmp_path / name.replace(" ", "_")
        before = _plant(folder)
        _refused([a.format(folder) for a in args], folder, before)
        res = CliRunner().invoke(app, [a.format(folder) for a in args] + ["--force"])
        assert res.exit_code == 0, (name, res.output)
        (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith(f"{folder.name}.replaced-")]
        assert _tree(aside) == before, name
        assert (folder / made).is_file() and _ownership.replace_problem(folder) is None, name
        assert f"moved it aside to {aside}" in res.stderr, name
        # ... and the same command again replaces its own folder, with nothing moved aside this time.
        res = CliRunner().invoke(app, [a.format(folder) for a in args])
        assert res.exit_code == 0, (name, res.output)
        assert len([p for p in tmp_path.iterdir() if p.name.startswith(f"{folder.name}.replaced-")]) == 1


def test_commands_that_run_for_minutes_refuse_before_they_start(cache, tmp_path, monkeypatch):
    """advise and fine-tune check their --out before any extraction or epoch (the work would fail the test)."""
    import bottleneck.inference.runner as runner

    def no_work(*a, **kw):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(runner, "run_extraction", no_work)
    monkeypatch.setattr(runner, "extract", no_work)
    run = fit_head(cache, "logreg", out=tmp_path / "run")
    data = make_image_folder(tmp_path / "data", {"a": 6, "b": 6})
    for args in (
        ["advise", str(data), "--no-fine-tune", "--weights", "none", "--out", "{}"],
        ["fine-tune", str(run.path), "--out", "{}"],
        ["fit-head", str(cache.path), "--report", "--out", "{}"],
    ):
        folder = tmp_path / args[0]
        before = _plant(folder)
        _refused([a.format(folder) for a in args], folder, before)


def test_the_default_folder_of_an_older_version_is_refused_too(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "runs" / f"inspect-{cache.name}"  # what inspect wrote before records existed
    before = _plant(old)
    _refused(["inspect", str(cache.path), "--no-label-errors", "--no-page"], old, before)


def test_compare_report_inside_a_users_folder(cache, tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(cache.path), "--heads", "logreg", "--out", str(out)])
    assert res.exit_code == 0
    before = _plant(out / "report")
    _refused(
        ["compare", str(cache.path), "--heads", "logreg", "--out", str(out), "--report"], out, _tree(out)
    )
    assert _tree(out / "report") == before


# -- cache gc / rm -------------------------------------------------------------------------------------------------
def test_gc_refuses_a_folder_that_is_no_cache_root_and_touches_nothing(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    for name in (".config.123.tmp", ".notes.tmp", ".x.damaged-1"):
        (home / name).mkdir()
        (home / name / "keep").write_text("mine")
        old = time.time() - 10 * 86400
        os.utime(home / name, (old, old))
    (home / ".draft.42.tmp").write_text("mine")
    before = _tree(home)
    res = CliRunner().invoke(app, ["cache", "gc", "--cache-dir", str(home)])
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert line == (
        f"error: refusing to collect anything in {home}: it has no .bottleneck-root.json (the record `bottleneck "
        "extract` writes in a cache folder), so it is no cache folder by bottleneck's record. Pass --cache-dir "
        "FOLDER, the folder `bottleneck extract` writes caches to."
    )
    assert _tree(home) == before


def test_gc_in_a_cache_root_leaves_the_users_files(cache, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(cache.path.parent, root)
    mine = root / ".mine.tmp"
    mine.mkdir()
    (mine / "keep").write_text("mine")
    (root / ".draft.txt").write_text("mine")
    alive = root / f".{cache.path.name}.{os.getpid()}.tmp"
    alive.write_text("being written")  # a living writer's temp file
    inside = cache.path.name
    (root / inside / "notes.txt").write_text("mine")  # a user's file inside a cache: the cache stays
    meta = json.loads((root / inside / "meta.json").read_text())
    meta["complete"] = False  # incomplete and old: collectable, were it not for notes.txt
    from bottleneck.cache.integrity import write_meta

    write_meta(root / inside, meta)
    old = time.time() - 10 * 86400
    for p in (mine, root / ".draft.txt", alive, root / inside / "meta.json"):
        os.utime(p, (old, old))
    before = _tree(root)
    assert gc_caches(root, older_than_s=0) == []
    assert _tree(root) == before


def test_rm_keeps_a_users_files_inside_a_cache(cache, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(cache.path.parent, root)
    folder = root / cache.path.name
    (folder / "notes.txt").write_text("mine")
    res = CliRunner().invoke(app, ["cache", "rm", str(folder)])
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert "it also holds files bottleneck did not write (notes.txt)" in line and "--force" in line
    assert (folder / "meta.json").is_file()
    res = CliRunner().invoke(app, ["cache", "rm", str(folder), "--force"])
    assert res.exit_code == 0
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (
        folder / "notes.txt"
    ).read_text() == "mine"


def test_rm_refuses_a_cache_whose_sealed_metadata_was_edited(cache, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(cache.path.parent, root)
    folder = root / cache.path.name
    meta = json.loads((folder / "meta.json").read_text())
    meta["source"] = "/home/someone"
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="was changed after bottleneck wrote it"):
        remove_cache(folder)
    assert folder.is_dir()


def test_extract_force_never_deletes_a_users_file_inside_the_cache(tmp_path):
    src = make_image_folder(tmp_path / "data", {"a": 2, "b": 2})
    cfg = ExtractConfig(weights="none", batch_size=4)
    first = run_extraction(src, cfg, cache_dir=tmp_path / "c", engine_factory=lambda c: MeanColor()).cache
    (first.path / "notes.txt").write_text("mine")
    with pytest.raises(
        CacheError, match=r"holds files bottleneck did not write \(notes.txt\); move them out"
    ):
        run_extraction(src, cfg, cache_dir=tmp_path / "c", force=True, engine_factory=lambda c: MeanColor())
    assert (first.path / "notes.txt").read_text() == "mine"
    (first.path / "notes.txt").unlink()
    again = run_extraction(
        src, cfg, cache_dir=tmp_path / "c", force=True, engine_factory=lambda c: MeanColor()
    )
    assert again.computed == 4 and again.cache.path == first.path
    assert (tmp_path / "c" / _ownership.ROOT_RECORD).is_file()  # extract made it a cache root by its record


def test_export_replaces_only_its_own_file_and_force_moves_a_users_aside(tmp_path):
    from bottleneck import extract
    from bottleneck.export import export_run

    src = make_image_folder(tmp_path / "data", {"a": 4, "b": 4}, splits=["train", "val", "test"])
    real = extract(src, backbone="pixels", image_size=16, cache_dir=tmp_path / "c").cache  # exportable
    run = fit_head(real, "logreg", out=tmp_path / "run")
    target = tmp_path / "m.keras"
    target.write_bytes(b"someone's model")
    res = CliRunner().invoke(app, ["export", str(run.path), "--out", str(target)])
    (line,) = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and line == (
        f"error: refusing to replace {target}: no sealed m.keras.json beside it proves bottleneck exported it as "
        "it is now. Pass another --out PATH, or --force to move it aside (to m.keras.replaced-<time>) and export anew."
    )
    assert target.read_bytes() == b"someone's model"
    lone = tmp_path / "n.keras.json"  # a user's file where the record would go
    lone.write_text("{}")
    with pytest.raises(
        BottleneckError, match=r"n.keras.json, where the export's record goes, is a file bottleneck"
    ):
        export_run(run, tmp_path / "n.keras")
    assert lone.read_text() == "{}"

    res = CliRunner().invoke(app, ["export", str(run.path), "--out", str(target), "--force"])
    assert res.exit_code == 0, res.output
    (aside,) = tmp_path.glob("m.keras.replaced-*")
    assert aside.read_bytes() == b"someone's model" and f"aside to {aside}" in res.stderr
    first = target.read_bytes()
    record = export_run(run, target)  # its own export: replaced without force, nothing moved aside
    assert "moved_aside" not in record and len(list(tmp_path.glob("m.keras.replaced-*"))) == 1
    assert target.read_bytes() != b"someone's model" and len(first) > 1000

    # An export into the run folder (its default place) keeps the run folder bottleneck's own.
    export_run(run, format="keras")
    assert (run.path / "export" / "model.keras").is_file() and _ownership.replace_problem(run.path) is None
    (run.path / "export" / "model.keras").write_bytes(b"edited")
    assert "export/model.keras" in _ownership.replace_problem(run.path)
