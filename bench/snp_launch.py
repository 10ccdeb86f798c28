#!/usr/bin/env python3
"""SNP-model launch time vs guest RAM: `umbra run --platform snp-model` to the
first guest instruction with 1 GiB and 64 GiB of (sparse) RAM, side by side in
one run, medians of N runs, and the ratio. The kernel's memslot registration
(KVM_SET_USER_MEMORY_REGION, which on shadow-paging KVM allocates per-page
metadata) is reported separately, as is umbra's launch work without it."""
import json, os, statistics, subprocess, sys, tempfile

RUNS = int(os.environ.get("RUNS", "15"))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    umbra = os.environ.get("UMBRA", os.path.join(root, "target", "release", "umbra"))
    work = tempfile.mkdtemp()
    keys = os.path.join(work, "keys")
    rows = {}
    for _ in range(RUNS):
        for mem in ("1G", "64G"):
            m = os.path.join(work, "m.json")
            subprocess.run([umbra, "run", "--platform", "snp-model", "--model-keys", keys, "--memory", mem,
                            "--serial", "null", "--metrics-json", m], check=True, stderr=subprocess.DEVNULL)
            t = json.load(open(m))["timings"]
            r = rows.setdefault(mem, ([], []))
            r[0].append(t["to_first_instruction_ms"])
            r[1].append(t["to_first_instruction_ms"] - t["memslots_ms"])
    print(f"snp-model launch to first guest instruction, {RUNS} runs each, medians (ms)")
    print(f"{'RAM':6} {'total':>10} {'without kernel memslot setup':>30}")
    med = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in rows.items()}
    for k, (a, b) in med.items():
        print(f"{k:6} {a:10.2f} {b:30.2f}")
    print(f"ratio 64G/1G: total {med['64G'][0] / med['1G'][0]:.2f}, "
          f"umbra's own work {med['64G'][1] / med['1G'][1]:.2f} (target < 1.2)")


if __name__ == "__main__":
    sys.exit(main())
