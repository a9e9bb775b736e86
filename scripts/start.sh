#!/usr/bin/env bash
# Sets up and starts the Doppel engine with its embedded defaults.
# Extra arguments go to `doppel serve` (e.g. --listen 0.0.0.0:7878 --data-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet -p doppel
export DOPPEL_PYTHON=${DOPPEL_PYTHON:-$PWD/.venv/worker/bin/python}
export DOPPEL_PYTHON27=${DOPPEL_PYTHON27:-$PWD/.venv/python27/bin/python}
exec target/release/doppel serve "$@"
