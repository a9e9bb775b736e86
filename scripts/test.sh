#!/usr/bin/env bash
# Sets up and runs Doppel's whole test suite. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export DOPPEL_TEST_PYTHON=$PWD/.venv/worker/bin/python
export DOPPEL_TEST_DVP=$PWD/.venv/dvp/bin/dvp
# Formatting drift fails fast, before the long build.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt >/dev/null 2>&1 || true
if cargo fmt --version >/dev/null 2>&1; then
    if ! cargo fmt --all --check >/dev/null; then
        echo "error: the code is not formatted; run cargo fmt --all" >&2
        exit 1
    fi
else
    echo "notice: rustfmt is not available; formatting not checked" >&2
fi
# Lints are part of the suite (STYLE.md): any warning fails it.
cargo clippy --workspace --all-targets --quiet -- -D warnings
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
