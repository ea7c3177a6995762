#!/usr/bin/env bash
# Set up a virtual environment (once) and run the main job end to end on an embedded default:
# Fashion-MNIST subset -> EfficientNet-Lite0 features (offline weights) -> heads compared. Usage: bash scripts/demo.sh [demo.py args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
# Fashion-MNIST from Debian when we can install it; otherwise demo.py downloads the official files.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || \
    echo "note: could not install dataset-fashion-mnist; trying the official download" >&2
fi
exec .venv/bin/python scripts/demo.py "$@"
