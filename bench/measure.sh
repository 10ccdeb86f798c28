#!/usr/bin/env bash
# Launch-digest benchmark, side by side in one run, with ratios:
#   umbra-attest measure  vs  sev-snp-measure (whole process, hyperfine)
#   umbra-attest measure  vs  the hashing bound: `openssl dgst -sha384` over the
#                             same number of bytes the digest hashes (firmware
#                             pages + 2 distinct VMSA pages + one 112-byte
#                             PAGE_INFO per launch update), whole process
#   umbra library         vs  the `sev` crate's snp_calc_launch_digest
#                             (in-process, `cargo bench --bench measure`)
# Inputs: Debian's OVMF.fd, 64 vCPUs EPYC-v4, QEMU, guest features 0x1.
# Targets: >= 5x faster than sev-snp-measure, ahead of the sev crate,
# within 1.3x of the hashing bound.
#
# Usage: bench/measure.sh [OVMF] [VCPUS]   (needs hyperfine, sev-snp-measure, openssl)
set -euo pipefail

cd "$(dirname "$0")/.."
OVMF=${1:-/usr/share/ovmf/OVMF.fd}
VCPUS=${2:-64}
RUNS=${UMBRA_BENCH_RUNS:-50}

for tool in hyperfine sev-snp-measure openssl python3; do
    command -v "$tool" >/dev/null || { echo "bench/measure.sh: $tool is not installed" >&2; exit 1; }
done
[ -f "$OVMF" ] || { echo "bench/measure.sh: $OVMF is absent (apt-get install ovmf)" >&2; exit 1; }

cargo build --release -p umbra-attestation --bin umbra-attest >&2
UMBRA=$PWD/target/release/umbra-attest
ARGS="--mode snp --vcpus $VCPUS --vcpu-type EPYC-v4 --ovmf $OVMF --guest-features 0x1"

ours=$("$UMBRA" measure $ARGS)
theirs=$(sev-snp-measure $ARGS)
if [ "$ours" != "$theirs" ]; then
    echo "digest mismatch: umbra $ours, sev-snp-measure $theirs" >&2
    exit 1
fi
echo "digest (both tools): $ours"

# Bytes hashed by the launch digest: every firmware byte, two distinct VMSA
# pages (APs share one digest), and one 112-byte PAGE_INFO per update.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
updates=$("$UMBRA" measure $ARGS --show-plan | python3 -c '
import sys
print(sum(int(l.split()[2], 16) // 4096 for l in sys.stdin))')
bound="$work/bound.bin"
{ cat "$OVMF"; head -c $((2 * 4096 + updates * 112)) /dev/zero; } > "$bound"
echo "launch updates: $updates; bound input: $(stat -c %s "$bound") bytes"

hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$work/h.json" \
    -n umbra "$UMBRA measure $ARGS" \
    -n sev-snp-measure "sev-snp-measure $ARGS" \
    -n "openssl dgst (bound)" "openssl dgst -sha384 $bound"

python3 - "$work/h.json" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
u, s, b = r["umbra"], r["sev-snp-measure"], r["openssl dgst (bound)"]
ms = lambda x: x * 1e3
print()
print(f"umbra-attest measure : mean {ms(u['mean']):7.2f} ms  median {ms(u['median']):7.2f} ms")
print(f"sev-snp-measure      : mean {ms(s['mean']):7.2f} ms  median {ms(s['median']):7.2f} ms")
print(f"openssl dgst (bound) : mean {ms(b['mean']):7.2f} ms  median {ms(b['median']):7.2f} ms")
print(f"sev-snp-measure / umbra = {s['median'] / u['median']:.1f}x  (target >= 5x)")
print(f"umbra / hashing bound   = {u['median'] / b['median']:.2f}x  (target <= 1.3x)")
# CPU time is steadier than wall time on a shared machine.
cpu = lambda x: x["user"] + x["system"]
print(f"CPU time (user+sys, mean): umbra {ms(cpu(u)):.2f} ms, sev-snp-measure {ms(cpu(s)):.2f} ms, "
      f"bound {ms(cpu(b)):.2f} ms -> {cpu(s) / cpu(u):.1f}x, {cpu(u) / cpu(b):.2f}x")
EOF

echo
echo "In-process: umbra library vs the sev crate (cargo bench --bench measure):"
UMBRA_BENCH_OVMF=$OVMF cargo bench -p umbra-attestation --bench measure 2>/dev/null | sed -n '/^inputs:/,$p'
