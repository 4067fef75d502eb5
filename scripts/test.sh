#!/usr/bin/env bash
# Runs cairn's whole test suite: unit, conformance, model (proptest), cross-crate
# scenarios, CLI and doc tests. Installs what it needs first.
#
#   scripts/test.sh                       # everything
#   PROPTEST_CASES=1000 scripts/test.sh   # longer model tests
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo test --workspace --all-features --doc
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features --no-fail-fast
else
    cargo test --workspace --all-features --no-fail-fast --lib --bins --tests
fi
