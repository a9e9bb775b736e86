#!/usr/bin/env bash
# Sets up and runs Doppel's whole test suite. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export DOPPEL_TEST_PYTHON=$PWD/.venv/worker/bin/python
export DOPPEL_TEST_DVP=$PWD/.venv/dvp/bin/dvp
cargo build --workspace --all-targets --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole workspace: cargo prints one per test binary.
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) == "passed;") p += $i; if ($(i+1) == "failed;") f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
