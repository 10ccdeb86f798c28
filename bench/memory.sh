#!/usr/bin/env bash
# Memory setup time and peak RSS, umbra vs QEMU microvm, 1/4/16 GiB anon and
# THP, 1/4 GiB hugetlb; balloon inflation rate. Reserves the hugetlb pool
# for the run and gives it back.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p umbra-vmm
exec python3 bench/memory.py "$@"
