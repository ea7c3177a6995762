"""ARCHITECTURE.md's rules, checked on the code: imports point down the flow, and what may compose a later stage."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bottleneck"

# The flow, first to last (ARCHITECTURE.md): a stage may import the stages before it, never one after it.
ORDER = (
    "data",
    "backbones",
    "cache",
    "inference",
    "heads",
    "report",
    "runs",
    "inspection",
    "tuning",
    "export",
    "cli",
)

# The only imports that run back up the flow: jobs in runs/ that compose a later stage, imported lazily inside the
# function that needs it (ARCHITECTURE.md names each).
COMPOSING = {
    ("runs/advise.py", "bottleneck.tuning"),  # advise runs a short fine-tune
    ("runs/fit.py", "bottleneck.tuning.images"),  # evaluate scores a fine-tuned run on images
    ("runs/predict.py", "bottleneck.export.loaded"),  # predict with an exported file
}


def _imports(path: Path):
    """(module imported, at module level?) for every import of bottleneck inside ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "bottleneck":  # `from bottleneck import storage` names a module
                names = [f"bottleneck.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("bottleneck."):
                yield name, id(node) in top


def _stage(parts) -> str | None:
    return parts[0] if parts and parts[0] in ORDER else None


def test_imports_point_down_the_flow():
    back = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        here = _stage(rel.parts[:-1])
        for name, module_level in _imports(path):
            there = _stage(name.split(".")[1:])
            if here is None or there is None or ORDER.index(there) <= ORDER.index(here):
                continue
            if module_level or (rel.as_posix(), name) not in COMPOSING:
                back.append(f"{rel.as_posix()} -> {name}{' (module level)' if module_level else ''}")
    assert back == [], "imports that run back up the flow:\n" + "\n".join(back)


def test_modules_beside_the_stages_import_no_stage_at_module_level():
    """errors, config, callbacks, _io, _tf, storage ...: every stage may import them, so they import no stage at
    module level (config names the layer presets and an ONNX file's settings, leaf modules of backbones; ``__main__`` is the CLI's door;
    ``doctor`` reports on the engines and nothing but the CLI imports it)."""
    allowed = {
        ("config.py", "bottleneck.backbones.presets"),
        ("config.py", "bottleneck.backbones.onnx_preprocess"),
        ("__main__.py", "bottleneck.cli"),
        ("doctor.py", "bottleneck.inference.engines"),
        ("doctor.py", "bottleneck.inference.quantize"),
    }
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        for name, module_level in _imports(path):
            if module_level and _stage(name.split(".")[1:]) is not None and path.name != "__init__.py":
                if (path.name, name) not in allowed:
                    found.append(f"{path.name} -> {name}")
    assert found == []


def test_the_documented_order_is_the_checked_one():
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    listed = [
        line.split("->", 1)[1].split("/", 1)[0].strip()
        for line in text.splitlines()
        if "->" in line and "/ " in line
    ]
    assert tuple(s for s in listed if s in ORDER) == ORDER


def test_only_the_cache_package_writes_cache_metadata():
    """A cache's meta.json is written by cache/ alone (sealed, through cache.integrity.write_meta): no other
    package assigns into a cache's ``meta`` or writes a file named by ``META``."""
    import re

    assigns = re.compile(r"\.meta\[[^\]]*\]\s*=[^=]")
    writes = re.compile(r"write_\w*\([^)]*\bMETA\b")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("cache/"):
            continue
        text = path.read_text()
        offenders += [f"{rel}: {m.group(0)}" for m in assigns.finditer(text)]
        offenders += [f"{rel}: {m.group(0)}" for m in writes.finditer(text)]
    assert offenders == []


# Modules that import each other, even inside a function: none.
MUTUAL: set[frozenset] = set()


def test_no_two_modules_import_each_other():
    imports = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imports[module] = {name for name, _ in _imports(path)}
    pairs = {
        frozenset({a, b})
        for a, names in imports.items()
        for b in names
        if a != b and a in imports.get(b, ()) and not (b.startswith(a + ".") or a.startswith(b + "."))
    }
    assert sorted(map(sorted, pairs - MUTUAL)) == []


# Every function-local import of our own modules, with its reason (ARCHITECTURE.md lists the same). Anything else
# goes at the top of its module: a local import hides a dependency and, when it breaks a cycle, a design problem.
# (module, imported module) -> why it must wait until the function runs
LOCAL_IMPORTS = {
    # Modules that subclass Keras classes when imported are Keras itself: imported where Keras is needed anyway.
    ("bottleneck.backbones.build", "bottleneck.backbones.preprocess"): "builds a Keras layer class at import",
    (
        "bottleneck.heads.keras_heads",
        "bottleneck.heads.streaming",
    ): "subclasses keras.utils.PyDataset at import",
    (
        "bottleneck.tuning.fine_tuning",
        "bottleneck.tuning.batches",
    ): "subclasses keras.utils.PyDataset at import",
    ("bottleneck.tuning.results", "bottleneck.tuning.batches"): "subclasses keras.utils.PyDataset at import",
    # The compositions that run back up the flow (COMPOSING above).
    ("bottleneck.runs.advise", "bottleneck.tuning"): "advise runs a short fine-tune (a later stage)",
    ("bottleneck.runs.fit", "bottleneck.tuning.images"): "evaluate scores a fine-tuned run on images",
    ("bottleneck.runs.predict", "bottleneck.export.loaded"): "predict with an exported file (a later stage)",
    # config sits beside the stages and imports none at module level; backbones.build imports config.
    ("bottleneck.config", "bottleneck.backbones.model_file"): "'top' in a layer list named by the backbone",
    ("bottleneck.config", "bottleneck.backbones.registry"): "'top' in a layer list named by the backbone",
    # The CLI starts in 0.4 s: a job that imports scikit-learn or Keras loads when its command runs (the others are
    # reached through lazy packages: `runs.compare`, `tuning.fine_tune`, `inspection.inspect_cache`).
    ("bottleneck.cli.advise", "bottleneck.runs.advise"): "the job loads when its command runs",
    ("bottleneck.cli.export", "bottleneck.export"): "the job loads when its command runs",
}


def _local_imports():
    """(module, imported module) for every import of our own modules inside a function."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.level:
                    yield module, f"(relative import at line {node.lineno})"
                for name in _names_of(node):
                    if name != "bottleneck._tf":
                        yield module, name


def _names_of(node):
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "bottleneck"]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "bottleneck":
        return [f"bottleneck.{a.name}" for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] == "bottleneck":
        return [node.module]
    return []


def test_own_modules_are_imported_at_the_top():
    found = set(_local_imports())
    unlisted = sorted(f"{m} -> {t}" for m, t in found - set(LOCAL_IMPORTS))
    assert unlisted == [], "function-local imports of our own modules not in LOCAL_IMPORTS:\n" + "\n".join(
        unlisted
    )
    assert sorted(set(LOCAL_IMPORTS) - found) == []  # a reason left behind for an import that moved
    assert len(LOCAL_IMPORTS) <= 30


def test_every_local_import_is_listed_in_architecture_md():
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    missing = [
        f"{m} -> {t}"
        for m, t in LOCAL_IMPORTS
        if f"`{m.removeprefix('bottleneck.')}` -> `{t.removeprefix('bottleneck.')}`" not in text
    ]
    assert missing == []


def test_no_lazy_name_is_also_a_submodule():
    """A package's lazy name (``_lazy``) must not be a submodule's name too: once the submodule is imported,
    Python sets it as the package's attribute and ``from bottleneck.runs import compare`` would give the module."""
    import re

    clashes = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        text = init.read_text()
        if "lazy_names" not in text:
            continue
        for name, _ in re.findall(r'"(\w+)": "([\w.]+)"', text):
            if (init.parent / f"{name}.py").exists() or (init.parent / name).is_dir():
                clashes.append(f"{init.parent.relative_to(PACKAGE)}: {name}")
    assert clashes == []
