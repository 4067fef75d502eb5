#!/usr/bin/env bash
# The quick start: builds `cairn` and runs `cairn demo` — seed 000's WordCount
# with a checkpoint, a poison record, three restarts, FAILED, and recovery from
# the retained checkpoint — then lists and verifies the checkpoints it kept.
# Installs what it needs first.
#
#   scripts/quickstart.sh [DIR]     # DIR (kept afterwards) defaults to a fresh temp dir
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

dir="${1:-$(mktemp -d -t cairn-quickstart.XXXXXX)}"
cargo build -q -p cairn-cli
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
