#!/usr/bin/env bash
# SNP-model launch time at 1 GiB vs 64 GiB of guest RAM.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p umbra-vmm
exec python3 bench/snp_launch.py "$@"
