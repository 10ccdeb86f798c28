#!/bin/sh
# Runs every cargo-fuzz target (vmm/fuzz, attestation/fuzz, guest-agent/fuzz)
# for SECONDS each (default 60), seeding each corpus with the real vectors
# under $UMBRA_VECTORS (every file under 64 KiB), and prints one line per
# target: executions, libFuzzer's `cov:` count, crashes. Exit status 1 if
# any target crashed. cargo-fuzz needs nightly features; on the stable
# toolchain RUSTC_BOOTSTRAP=1 lets it use them. `JOBS=2` runs two targets
# at once (one per core).
set -eu
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
vectors=${UMBRA_VECTORS:-$root/../shared/vectors}
command -v cargo-fuzz >/dev/null || cargo install -q cargo-fuzz
export RUSTC_BOOTSTRAP=1
results=$(mktemp -d)
run_one() {
  crate=$1 target=$2
  corpus="$root/$crate/fuzz/corpus/$target"
  mkdir -p "$corpus"
  if [ -d "$vectors" ] && [ -z "$(ls -A "$corpus")" ]; then
    find "$vectors" -type f -size -64k | while read -r f; do
      cp "$f" "$corpus/seed-$(echo "$f" | sha256sum | cut -c1-16)"
    done
  fi
  log="$results/$target.log"
  status=0
  (cd "$root/$crate" && cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1) >"$log" 2>&1 || status=1
  line=$(grep -E '^#[0-9]+.*DONE' "$log" | tail -1 || true)
  execs=$(echo "$line" | sed -E 's/^#([0-9]+).*/\1/')
  cov=$(echo "$line" | sed -E 's/.*cov: ([0-9]+).*/\1/')
  crashes=$([ "$status" = 0 ] && echo 0 || echo 1)
  echo "| $crate/$target | ${execs:-?} | ${cov:-?} | $crashes | $(date +%F) |" > "$results/$target.row"
  [ "$status" = 0 ] || tail -30 "$log" >&2
}
jobs=${JOBS:-1}
for crate in vmm attestation guest-agent; do
  (cd "$root/$crate/fuzz" && cargo fuzz build >/dev/null 2>&1) || { echo "building $crate/fuzz failed" >&2; exit 1; }
  for target in $(cd "$root/$crate" && cargo fuzz list); do
    run_one "$crate" "$target" &
    while [ "$(jobs -p | wc -l)" -ge "$jobs" ]; do sleep 1; done
  done
done
wait
echo "| target | executions | cov | crashes | date |"
echo "|---|---|---|---|---|"
cat "$results"/*.row
! grep -q '| 1 |' "$results"/*.row
