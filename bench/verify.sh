#!/bin/sh
# Report verification throughput vs `openssl speed ecdsap384`, in one run.
# Usage: bench/verify.sh [seconds]   (UMBRA_VECTORS defaults to ../shared/vectors)
set -eu
cd "$(dirname "$0")/.."
: "${UMBRA_VECTORS:=$(cd .. && pwd)/shared/vectors}"
export UMBRA_VECTORS
BENCH_SECONDS="${1:-3}" exec cargo bench -p umbra-attestation --bench verify
