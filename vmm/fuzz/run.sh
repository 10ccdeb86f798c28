#!/bin/sh
# Runs every cargo-fuzz target of this folder for SECONDS each (default 60)
# and prints one line per target: executions, libFuzzer's `cov:` count and
# whether it found a crash. cargo-fuzz needs nightly features; on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it use them.
set -eu
seconds=${1:-60}
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
for target in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
  mkdir -p "fuzz/corpus/$target"
  log=$(mktemp)
  status=ok
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 >"$log" 2>&1 || status=CRASH
  line=$(grep -E '^#[0-9]+.*DONE' "$log" | tail -1 || true)
  execs=$(echo "$line" | sed -E 's/^#([0-9]+).*/\1/')
  cov=$(echo "$line" | sed -E 's/.*cov: ([0-9]+).*/\1/')
  echo "$target: ${execs:-?} executions in ${seconds} s, cov ${cov:-?}, $status"
  [ "$status" = ok ] || tail -20 "$log"
  rm -f "$log"
done
