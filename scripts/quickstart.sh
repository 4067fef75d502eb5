#!/usr/bin/env bash
# The quick start: builds `cairn` and runs `cairn demo` — the WordCount
# failure-and-recovery walk-through: a checkpoint, a poison record, three
# restarts, FAILED, and recovery from the retained checkpoint — then lists and
# verifies the checkpoints it kept. Installs what it needs first.
#
# The demo runs on heap state, so this builds `cairn` without the RocksDB
# backend (its C++ is most of a cold build); scripts/test.sh, or
# `cargo build -p cairn-cli --features rocks`, builds the full binary.
#
#   scripts/quickstart.sh [DIR]     # DIR (kept afterwards) defaults to a fresh temp dir
set -euo pipefail
cd "$(dirname "$0")/.."
CAIRN_SETUP=demo source scripts/setup.sh

dir="${1:-$(mktemp -d -t cairn-quickstart.XXXXXX)}"
cargo build -q -p cairn-cli --no-default-features
cairn="$CARGO_TARGET_DIR/debug/cairn"

echo "\$ cairn demo --dir $dir"
"$cairn" demo --dir "$dir"
job="$dir/checkpoints/word-count"
echo
echo "\$ cairn checkpoints list $job"
"$cairn" checkpoints list "$job"
echo
echo "\$ cairn checkpoints verify $job"
"$cairn" checkpoints verify "$job"
