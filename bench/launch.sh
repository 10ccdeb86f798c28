#!/usr/bin/env bash
# Time to first serial byte and peak RSS, umbra vs QEMU microvm, 1 GiB guest.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p umbra-vmm
exec python3 bench/launch.py "$@"
