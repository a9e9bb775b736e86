#!/usr/bin/env bash
# Sets up and runs Doppel's whole test suite. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export DOPPEL_TEST_PYTHON=$PWD/.venv/worker/bin/python
export DOPPEL_TEST_DVP=$PWD/.venv/dvp/bin/dvp
cargo build --workspace --all-targets --quiet
cargo test --workspace "$@"
