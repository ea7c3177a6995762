#!/usr/bin/env bash
# The wheel outside the checkout: build it from a copy of the sources, check that every file of the package is
# in it, install it (not editable, with its dependencies from the registry) into a fresh virtual environment, and
# run the command from an empty folder: --version, backbones, doctor, classify (the ImageNet class list is
# package data), and a tiny extract + fit-head. Usage: bash scripts/wheel_check.sh   (PYTHON=python3.12 ...)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
say() { echo "wheel check: $*" >&2; }

# A copy holds only what a wheel is built from, so stale build/ output of the checkout cannot slip in.
mkdir -p "$work/src"
cp pyproject.toml README.md "$work/src/"
cp -r bottleneck "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +

"$PY" -m venv "$work/venv"
venv="$work/venv/bin"
"$venv/python" -m pip wheel -q --no-deps -w "$work/dist" "$work/src" >"$work/pip.log" 2>&1 ||
  { cat "$work/pip.log" >&2; exit 1; }
wheel=$(ls "$work"/dist/bottleneck_features-*.whl)
say "built $(basename "$wheel")"

# Every file of the package (modules and the data read at run time) must be in the wheel.
"$venv/python" - "$wheel" "$work/src" <<'EOF'
import sys, zipfile
from pathlib import Path

wheel, src = sys.argv[1], Path(sys.argv[2])
inside = set(zipfile.ZipFile(wheel).namelist())
files = [p.relative_to(src).as_posix() for p in (src / "bottleneck").rglob("*") if p.is_file()]
missing = sorted(f for f in files if f not in inside)
if missing:
    sys.exit(f"wheel check: not in the wheel (add them to [tool.setuptools.package-data]): {', '.join(missing)}")
print(f"wheel check: all {len(files)} package files are in the wheel", file=sys.stderr)
EOF

# pip's output only when it fails (a registry's warnings would bury the checks' lines).
"$venv/python" -m pip install -q "$wheel" >"$work/pip.log" 2>&1 || { cat "$work/pip.log" >&2; exit 1; }
"$venv/python" -m pip check >/dev/null
say "installed into a fresh venv"

mkdir "$work/run"
cd "$work/run"  # not the checkout: `import bottleneck` must find the installed files
bn="$venv/bottleneck"
version=$(basename "$wheel" | cut -d- -f2)
test "$("$bn" --version)" = "bottleneck-features $version" || { say "--version says $("$bn" --version)"; exit 1; }
"$venv/python" - "$work/venv" <<'EOF'
import sys
from pathlib import Path

import bottleneck

where = Path(bottleneck.__file__).resolve()
if not where.is_relative_to(Path(sys.argv[1]).resolve()):
    sys.exit(f"wheel check: bottleneck imported from {where}, not from the fresh venv")
EOF
# Into a file, not a pipe: under pipefail, `grep -q` quitting at its first match makes the writer's next line
# fail with EPIPE (click exits 1), and the check failed or passed by timing.
"$bn" backbones >backbones.txt
grep -q "^efficientnet_lite0 " backbones.txt || { cat backbones.txt >&2; say "backbones does not list efficientnet_lite0"; exit 1; }

set +e
"$bn" doctor --cache-dir cache >doctor.txt
rc=$?
set -e
cat doctor.txt >&2
# 1 = problems found (a nearly full disk, say): reported, not a broken install.
[ "$rc" -le 1 ] || { say "doctor failed ($rc)"; exit 1; }
grep -q "^clashes     none$" doctor.txt || { say "doctor reports a clash in a fresh venv"; exit 1; }

# Generated class folders; classify reads the ImageNet class list from the wheel's package data and the
# Lite0 weights from their registry package.
"$venv/python" - <<'EOF'
from pathlib import Path

import numpy as np
from PIL import Image

rng = np.random.default_rng(0)
for c, (name, base) in enumerate({"dark": 40, "light": 200}.items()):
    Path("data", name).mkdir(parents=True)
    for i in range(8):
        pixels = np.clip(base + rng.normal(0, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(f"data/{name}/{i}.png")
EOF
"$bn" classify data/light/0.png --top 1 --json >classify.json
"$venv/python" -c "
import json, sys
[r] = json.load(open('classify.json'))
[top] = r['top']
assert top['name'] and not top['name'].isdigit(), top
print('wheel check: classify ->', top['name'], file=sys.stderr)"

cache=$("$bn" extract data --backbone pixels --image-size 16 --val-fraction 0.25 --cache-dir cache --quiet)
"$bn" fit-head "$cache" --head logreg --runs-dir runs
ls runs/*-logreg/metrics.json >/dev/null || { say "fit-head wrote no metrics.json"; exit 1; }
say "ok"
