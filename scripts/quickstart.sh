#!/usr/bin/env bash
# The quick start: builds `cairn`, runs a small word count that writes real
# checkpoints with heap state and filesystem storage, then lists, inspects and
# verifies them. Installs what it needs first.
#
#   scripts/quickstart.sh [DIR]     # DIR defaults to a fresh temp dir
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

dir="${1:-$(mktemp -d -t cairn-quickstart.XXXXXX)}"
cargo build -q -p cairn-cli
cairn="$CARGO_TARGET_DIR/debug/cairn"

"$cairn" example --dir "$dir" --force
job="$dir/example"
latest=$(ls -d "$job"/chk-* | sort -t- -k2 -n | tail -1)
echo
echo "\$ cairn checkpoints list $job"
"$cairn" checkpoints list "$job"
echo
echo "\$ cairn checkpoints inspect $latest"
"$cairn" checkpoints inspect "$latest"
echo
echo "\$ cairn checkpoints verify $job"
"$cairn" checkpoints verify "$job"
