"""Everything bottleneck reads back is checked (issue #31 item 3): a saved head (head.json sealed, its model file's
sha256), a run's metrics.json (sealed, the files it is loaded from) and an exported file with its sidecar. One
flipped byte is one line naming the file and the fix, from the library and from every command that reads it; files
written before the seals existed still load."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cache
from PIL import Image
from typer.testing import CliRunner

from bottleneck.cache.integrity import seal_of
from bottleneck.cli import app
from bottleneck.errors import ExportError, HeadError

runner = CliRunner()
REFIT = "fit the head again."
REEXPORT = "export the run again with `bottleneck export`."


def flip(path: Path, at: int | None = None) -> None:
    """Flip one bit of one byte of ``path`` (the middle one by default)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x01
    path.write_bytes(bytes(data))


def edit_one_byte(path: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in ``path`` by ``new`` (the same length, one byte different)."""
    assert len(old) == len(new) and sum(a != b for a, b in zip(old, new, strict=True)) == 1
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def changed(path: Path, record: str, fix: str) -> str:
    return f"{path} was changed or damaged (its sha256 differs from the one {record} records); {fix}"


def cli_fails_with(args: list, line: str) -> None:
    """The command exits 2 with exactly ``error: line`` and nothing else (no traceback)."""
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    assert res.output.strip().splitlines() == [f"error: {line}"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A logreg run folder (on a blob cache named ant / bee / cow), an mlp head, and an image to predict."""
    from bottleneck.heads import make_head
    from bottleneck.runs import fit_head

    root = tmp_path_factory.mktemp("readback")
    cache = make_cache(root / "cache")
    run = fit_head(cache, "logreg", out=root / "run")
    X, y = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3
    mlp = make_head("mlp", epochs=2, random_state=0).fit(X, y).save(root / "mlp")
    image = root / "image.png"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(image)
    return {"run": run.path, "cache": cache.path, "mlp": mlp, "X": X, "image": image}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def unseal(path: Path, *keys: str) -> None:
    """``path`` (a JSON record) as written before records were sealed: ``seal`` and ``keys`` removed."""
    record = json.loads(path.read_text())
    for key in ("seal", *keys):
        del record[key]
    path.write_text(json.dumps(record, indent=2))


# -- saved heads ---------------------------------------------------------------------------------------------------
def test_a_saved_head_records_its_files_and_is_sealed(saved):
    from bottleneck._io import file_hash

    info = json.loads((saved["run"] / "head" / "head.json").read_text())
    assert info["files"] == {"logreg.npz": file_hash(saved["run"] / "head" / "logreg.npz")}
    assert info["seal"] == seal_of(info)
    mlp = json.loads((saved["mlp"] / "head.json").read_text())
    assert list(mlp["files"]) == ["model.keras"] and mlp["seal"] == seal_of(mlp)


@pytest.mark.parametrize(
    "at", [None, 0, 100, -30]
)  # the middle, the zip header, the first array, the directory
def test_a_flipped_byte_in_logreg_npz_is_one_line(saved, tmp_path, at):
    from bottleneck.heads import load_head

    head = copy(saved["run"] / "head", tmp_path / "head")
    npz = head / "logreg.npz"
    flip(npz, at if at is None or at >= 0 else npz.stat().st_size + at)
    with pytest.raises(HeadError, match=exactly(changed(npz, "head.json", REFIT))):
        load_head(head)


def test_a_flipped_byte_in_model_keras_is_one_line(saved, tmp_path):
    from bottleneck.heads import load_head

    head = copy(saved["mlp"], tmp_path / "mlp")
    flip(head / "model.keras")
    with pytest.raises(HeadError, match=exactly(changed(head / "model.keras", "head.json", REFIT))):
        load_head(head)


def test_an_edited_head_json_is_one_line(saved, tmp_path):
    from bottleneck.heads import load_head

    sealed = f"was edited or damaged after the head was saved (its seal does not match its content); {REFIT}"
    head = copy(saved["run"] / "head", tmp_path / "names")
    edit_one_byte(head / "head.json", '"bee"', '"bef"')
    with pytest.raises(HeadError, match=exactly(f"{head / 'head.json'} {sealed}")):
        load_head(head)

    # a seal taken away: the file digests it still claims say it was sealed
    head = copy(saved["run"] / "head", tmp_path / "no-seal")
    edit_one_byte(head / "head.json", '"seal"', '"seam"')
    with pytest.raises(HeadError, match=exactly(f"{head / 'head.json'} {sealed}")):
        load_head(head)

    # a digest pointing outside the head's folder is refused even when resealed
    head = copy(saved["run"] / "head", tmp_path / "outside")
    info = json.loads((head / "head.json").read_text())
    info["files"] = {"../metrics.json": "0" * 64}
    info["seal"] = seal_of(info)
    (head / "head.json").write_text(json.dumps(info))
    with pytest.raises(HeadError, match=exactly(f"{head / '../metrics.json'} is no file of a head; {REFIT}")):
        load_head(head)


def test_a_head_saved_before_head_json_was_sealed_still_loads(saved, tmp_path):
    from bottleneck.heads import load_head

    head = copy(saved["mlp"], tmp_path / "old")
    unseal(head / "head.json", "files")
    old = load_head(head)
    np.testing.assert_allclose(
        old.predict_proba(saved["X"]), load_head(saved["mlp"]).predict_proba(saved["X"])
    )

    # without digests a damaged file is still one line, from the reader (a BadZipFile before these checks)
    logreg = copy(saved["run"] / "head", tmp_path / "old-logreg")
    unseal(logreg / "head.json", "files")
    flip(logreg / "logreg.npz", 100)
    with pytest.raises(
        HeadError, match=r"logreg.npz is damaged \(BadZipFile: Bad CRC-32 for file 'coef.npy'\)"
    ):
        load_head(logreg)


# -- run folders ---------------------------------------------------------------------------------------------------
def test_metrics_json_is_sealed_and_names_the_head_it_was_written_with(saved):
    from bottleneck._io import file_hash

    summary = json.loads((saved["run"] / "metrics.json").read_text())
    assert summary["seal"] == seal_of(summary)
    assert summary["files"] == {"head/head.json": file_hash(saved["run"] / "head" / "head.json")}


def damaged_runs(saved, tmp_path) -> dict:
    """Copies of the run, each damaged one way, with the line every reader must give."""
    out = {}
    run = copy(saved["run"], tmp_path / "names")
    edit_one_byte(run / "metrics.json", '"cow"', '"cox"')
    out["names"] = (
        run,
        f"{run / 'metrics.json'} was edited or damaged after the run was written (its seal does not match its "
        f"content), so its class names and settings cannot be trusted; {REFIT}",
    )
    run = copy(saved["run"], tmp_path / "npz")
    flip(run / "head" / "logreg.npz")
    out["npz"] = (run, changed(run / "head" / "logreg.npz", "head.json", REFIT))
    run = copy(saved["run"], tmp_path / "head-json")
    edit_one_byte(run / "head" / "head.json", '"bee"', '"bef"')
    out["head-json"] = (run, changed(run / "head" / "head.json", "metrics.json", REFIT))
    return out


@pytest.mark.parametrize("damage", ["names", "npz", "head-json"])
def test_a_damaged_run_folder_is_one_line_from_load_run(saved, tmp_path, damage):
    from bottleneck.runs import load_run

    run, line = damaged_runs(saved, tmp_path)[damage]
    with pytest.raises(HeadError, match=exactly(line)):
        load_run(run)


@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "fine-tune"])
def test_a_damaged_run_folder_is_one_line_from_every_command(saved, tmp_path, command):
    for run, line in damaged_runs(saved, tmp_path).values():
        args = {
            "evaluate": ["evaluate", run, saved["cache"]],
            "predict": ["predict", run, saved["image"]],
            "export": ["export", run, "--format", "onnx", "--out", tmp_path / "x.onnx"],
            "fine-tune": ["fine-tune", run, "--out", tmp_path / "ft"],
        }[command]
        cli_fails_with(args, line)
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "ft").exists()


def test_run_folders_written_before_metrics_json_was_sealed_still_load(saved, tmp_path):
    from bottleneck.runs import evaluate_run, load_run

    run = copy(saved["run"], tmp_path / "old")
    unseal(run / "metrics.json", "files")
    unseal(run / "head" / "head.json", "files")
    old = evaluate_run(run, saved["cache"])
    assert old["metrics"] == evaluate_run(saved["run"], saved["cache"])["metrics"]

    # digests without a seal: edited, not old
    run = copy(saved["run"], tmp_path / "no-seal")
    unseal(run / "metrics.json")
    with pytest.raises(HeadError, match=r"metrics.json was edited or damaged after the run was written"):
        load_run(run)

    # old files on both sides that disagree on the class names are refused too
    run = copy(saved["run"], tmp_path / "old-names")
    unseal(run / "metrics.json", "files")
    edit_one_byte(run / "metrics.json", '"cow"', '"cox"')
    with pytest.raises(
        HeadError, match=r"names the classes \['ant', 'bee', 'cox'\] but its head was trained on"
    ):
        load_run(run)


def test_a_fine_tuned_run_checks_its_model_file(saved, tmp_path):
    """A fine-tuned run's metrics.json lists model.keras (what ``save_fine_tuned`` records)."""
    from bottleneck import _tf
    from bottleneck._io import file_hash
    from bottleneck.runs import load_run
    from bottleneck.runs.folders import write_metrics

    keras = _tf.keras()
    run = tmp_path / "tuned"
    run.mkdir()
    inputs = keras.Input((8, 8, 3))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))).save(
        run / "model.keras"
    )
    summary = {
        "kind": "fine-tune",
        "classes": [0, 1, 2],
        "class_names": ["ant", "bee", "cow"],
        "image_size": 8,
        "cache": {"class_names": ["ant", "bee", "cow"], "config": {"resize": "squash"}},
        "files": {"model.keras": file_hash(run / "model.keras")},
    }
    write_metrics(run, summary)
    assert load_run(run).head.class_names == ["ant", "bee", "cow"]
    flip(run / "model.keras")
    with pytest.raises(
        HeadError, match=exactly(changed(run / "model.keras", "metrics.json", "fine-tune the run again."))
    ):
        load_run(run)


# -- exports -------------------------------------------------------------------------------------------------------
EXPORTS = {"keras": "model.keras", "onnx": "model.onnx", "tflite": "model.tflite"}


@pytest.fixture(scope="module")
def exported(frozen_run, tmp_path_factory):
    """The conftest's frozen run exported in three formats (each verified on write), and a test image."""
    from bottleneck.export import export_run

    run, cache, data, _ = frozen_run
    root = tmp_path_factory.mktemp("exports")
    for fmt, name in EXPORTS.items():
        export_run(run, root / name, format=fmt)
    return root, sorted((data / "test").rglob("*.png"))[0], list(cache.class_names)


def export_copy(exported, fmt: str, tmp_path: Path) -> Path:
    root = exported[0]
    out = tmp_path / EXPORTS[fmt]
    shutil.copy(root / EXPORTS[fmt], out)
    shutil.copy(root / f"{EXPORTS[fmt]}.json", tmp_path / f"{EXPORTS[fmt]}.json")
    return out


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_an_export_records_its_sha256_and_is_sealed(exported, fmt):
    from bottleneck._io import file_hash
    from bottleneck.export import load_exported

    out = exported[0] / EXPORTS[fmt]
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert record["sha256"] == file_hash(out) and record["seal"] == seal_of(record)
    assert load_exported(out).class_names == exported[2]


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_a_flipped_byte_in_an_exported_file_is_one_line(exported, tmp_path, fmt):
    from bottleneck.export import load_exported

    out = export_copy(exported, fmt, tmp_path)
    flip(out)
    line = changed(out, f"{out.name}.json", REEXPORT)
    with pytest.raises(ExportError, match=exactly(line)):
        load_exported(out)
    cli_fails_with(["predict", out, exported[1]], line)


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_an_edited_sidecar_is_one_line(exported, tmp_path, fmt):
    from bottleneck.export import load_exported

    out = export_copy(exported, fmt, tmp_path)
    side = out.with_name(out.name + ".json")
    names = json.loads(side.read_text())["class_names"]
    edit_one_byte(side, json.dumps(names[0]), json.dumps(names[0][:-1] + chr(ord(names[0][-1]) ^ 1)))
    line = (
        f"{side} was edited or damaged after the export was written (its seal does not match its content); "
        f"{REEXPORT}"
    )
    with pytest.raises(ExportError, match=exactly(line)):
        load_exported(out)
    cli_fails_with(["predict", out, exported[1]], line)

    side.unlink()
    with pytest.raises(
        ExportError, match=re.escape(f"{side} is missing: {out} cannot be checked for damage")
    ):
        load_exported(out)


@pytest.mark.parametrize("fmt", ["keras", "onnx"])
def test_metadata_inside_the_file_must_agree_with_the_sidecar(exported, tmp_path, fmt):
    """A sidecar resealed with other class names (another export's, or edited by hand and resealed) does not
    describe the file: the names stored inside it say otherwise."""
    from bottleneck.export import load_exported

    out = export_copy(exported, fmt, tmp_path)
    side = out.with_name(out.name + ".json")
    record = json.loads(side.read_text())
    record["class_names"] = list(reversed(record["class_names"]))
    record["seal"] = seal_of(record)
    side.write_text(json.dumps(record))
    with pytest.raises(ExportError, match=r"the metadata inside .* and .*\.json disagree on class_names"):
        load_exported(out)


def test_an_export_written_before_sidecars_were_sealed_still_loads(exported, tmp_path):
    from bottleneck.export import load_exported

    out = export_copy(exported, "onnx", tmp_path)
    unseal(out.with_name(out.name + ".json"), "sha256")
    assert load_exported(out).class_names == exported[2]
