#!/usr/bin/env python3
"""Memory benchmark: umbra and QEMU microvm side by side in one run.

1. Memory setup: for 1, 4 and 16 GiB guests with anonymous and THP backing,
   and 1 and 4 GiB with hugetlb (the pool is reserved for the run and given
   back), the wall time from process start to the firmware's first serial
   byte and the peak RSS (bench/peak_rss.c), umbra against QEMU booting the
   same image (`-m SIZE`, `-mem-path /dev/hugepages` for hugetlb, THP by
   `-machine memory-backend` defaults left to the kernel).
2. Balloon: the firmware's `balloon` scenario (touch 256 MiB, inflate 192
   MiB with `pages=49152`) under umbra and under QEMU's virtio-balloon-device:
   MiB/s of inflation (the run's time minus the same run inflating nothing).
Prints medians and ratios umbra/QEMU.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import measure  # noqa: E402

RUNS = int(os.environ.get("RUNS", "5"))


def hugepages(n):
    with open("/proc/sys/vm/nr_hugepages", "w") as f:
        f.write(str(n))
    with open("/proc/sys/vm/nr_hugepages") as f:
        return int(f.read())


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    umbra = os.environ.get("UMBRA", os.path.join(root, "target", "release", "umbra"))
    qemu = shutil.which("qemu-system-x86_64")
    if not os.path.exists(umbra) or not qemu:
        sys.exit("needs target/release/umbra and qemu-system-x86_64")
    scratch = tempfile.mkdtemp()
    launcher = os.path.join(scratch, "peak_rss")
    subprocess.run(["gcc", "-O2", "-o", launcher, os.path.join(root, "bench", "peak_rss.c")], check=True)
    fw = os.path.join(scratch, "umbra-firmware.fd")
    subprocess.run([umbra, "export-firmware", fw], check=True)
    qemu_base = [qemu, "-M", "microvm", "-enable-kvm", "-bios", fw, "-nodefaults", "-no-user-config",
                 "-display", "none", "-serial", "stdio", "-no-reboot",
                 "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    cases = [(s, b) for s in ("1G", "4G", "16G") for b in ("anon", "thp")] + [("1G", "hugetlb"), ("4G", "hugetlb")]
    print(f"memory setup: {RUNS} runs each, medians; time to first serial byte (ms) and peak RSS (MiB)")
    print(f"{'guest':>6} {'backing':>8} {'umbra ms':>9} {'qemu ms':>9} {'ratio':>6} {'umbra MiB':>10} {'qemu MiB':>9} {'ratio':>6}")
    saved = open("/proc/sys/vm/nr_hugepages").read().strip()
    try:
        for size, backing in cases:
            gib = int(size[:-1])
            # QEMU maps a little beyond the guest's RAM from the pool too.
            if backing == "hugetlb" and hugepages(gib * 512 + 512) < gib * 512:
                print(f"{size:>6} {backing:>8}  (no hugetlb pool: skipped)")
                continue
            u_cmd = [umbra, "run", "--memory", size, "--memory-backing", backing]
            q_cmd = qemu_base + ["-m", size] + (["-mem-path", "/dev/hugepages"] if backing == "hugetlb" else [])
            ut, ur, qt, qr = [], [], [], []
            for _ in range(RUNS):
                t, r = measure(launcher, u_cmd)
                ut.append(t); ur.append(r)
                try:
                    t, r = measure(launcher, q_cmd)
                    qt.append(t); qr.append(r)
                except SystemExit:
                    pass
            m = statistics.median
            if not qt:
                print(f"{size:>6} {backing:>8} {m(ut):9.1f} {'failed':>9} {'-':>6} {m(ur):10.1f} {'-':>9} {'-':>6}")
                continue
            print(f"{size:>6} {backing:>8} {m(ut):9.1f} {m(qt):9.1f} {m(ut)/m(qt):6.2f} {m(ur):10.1f} {m(qr):9.1f} {m(ur)/m(qr):6.2f}")
            if backing == "hugetlb":
                hugepages(0)
    finally:
        hugepages(int(saved))
    def run_time(cmd):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    def umbra_balloon(pages):
        return run_time([umbra, "run", "--memory", "512M", "--balloon", "size=0M",
                         "--cmdline", f"scenario=balloon pages={pages}"])
    def qemu_balloon(pages):
        return run_time(qemu_base + ["-m", "512M", "-global", "virtio-mmio.force-legacy=false",
                                     "-device", "virtio-balloon-device", "-fw_cfg",
                                     f"name=opt/umbra/cmdline,string=scenario=balloon pages={pages} ram=512M"])
    m = statistics.median
    u = m(umbra_balloon(49152) for _ in range(RUNS)) - m(umbra_balloon(0) for _ in range(RUNS))
    q = m(qemu_balloon(49152) for _ in range(RUNS)) - m(qemu_balloon(0) for _ in range(RUNS))
    print(f"balloon: 192 MiB inflated (the run minus the same run inflating nothing): "
          f"umbra {192 / max(u, 1e-6):.0f} MiB/s, QEMU {192 / max(q, 1e-6):.0f} MiB/s, "
          f"ratio umbra/QEMU {q / max(u, 1e-6):.2f} (higher is faster)")


if __name__ == "__main__":
    main()
