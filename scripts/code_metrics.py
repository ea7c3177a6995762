"""Print the code-shape figures issue #32 targets: local imports of our own modules, long functions, big modules, import circles."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "bottleneck"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def own_import(node: ast.AST, module: str, is_pkg: bool) -> str | None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "bottleneck":
                return alias.name
        return None
    if isinstance(node, ast.ImportFrom):
        if node.level == 0 and node.module == "bottleneck":  # `from bottleneck import _tf` names a module
            return ",".join(f"bottleneck.{a.name}" for a in node.names)
        if node.level == 0:
            return node.module if (node.module or "").split(".")[0] == "bottleneck" else None
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))
    return None


def walk(verbose: bool = False):
    local, long_funcs, big = [], [], []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        mod = module_name(path)
        is_pkg = path.name == "__init__.py"
        n = len(text.splitlines())
        if n > 450:
            big.append((n, mod))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long_funcs.append((length, f"{mod}.{node.name}"))
                for inner in ast.walk(node):
                    target = own_import(inner, mod, is_pkg)
                    if target and target != "bottleneck._tf":  # TensorFlow/Keras are lazy by design
                        local.append((mod, node.name, target, inner.lineno))
    return local, long_funcs, big


if __name__ == "__main__":
    local, long_funcs, big = walk()
    seen = {(m, f, t, ln) for m, f, t, ln in local}
    print(f"function-local imports of our own modules: {len(seen)}")
    if "-v" in sys.argv:
        for m, f, t, ln in sorted(seen):
            print(f"  {m}:{ln} {f} -> {t}")
    print(f"functions over 80 lines: {len(long_funcs)}")
    for n, name in sorted(long_funcs, reverse=True):
        print(f"  {n:4d} {name}")
    print(f"modules over 450 lines: {len(big)}")
    for n, name in sorted(big, reverse=True):
        print(f"  {n:4d} {name}")
