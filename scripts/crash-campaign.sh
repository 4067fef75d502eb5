#!/usr/bin/env bash
# The kill -9 campaign at scale: runs the tests of cli/tests/crash_resume.rs
# with KILLS SIGKILLs per backend (RocksDB incremental and fs), each process
# killed at a seeded random moment (anywhere, during a checkpoint's upload, or
# right after a _metadata appeared) and started again with --resume; after the
# input ends, every word's count must equal a fault-free count. Prints one
# `crash campaign:` line of figures per backend (kills, restores, fallbacks,
# empty starts, counts lost and counted twice); exits non-zero on any loss,
# duplicate or leftover file.
#
#   scripts/crash-campaign.sh [KILLS_PER_BACKEND] [SEED]   # defaults: 500, random
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

kills="${1:-500}"
seed="${2:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
echo "crash campaign: $kills kills per backend, seed $seed"
log="$(mktemp -t cairn-crash-campaign.XXXXXX)"
status=0
CAIRN_CRASH_KILLS="$kills" CAIRN_CRASH_SEED="$seed" \
  cargo nextest run -p cairn-cli --features rocks --test crash_resume \
    --no-capture --test-threads 1 >"$log" 2>&1 || status=$?
grep -E '^crash campaign:' "$log" || true
if [ "$status" -ne 0 ]; then
  grep -E 'panicked|left:|right:' -A2 "$log" | head -40 || true
  echo "crash campaign FAILED (exit $status); full log: $log"
else
  rm -f "$log"
fi
exit "$status"
