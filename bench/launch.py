#!/usr/bin/env python3
"""Launch benchmark: umbra vs QEMU microvm booting the same firmware image.

For each VMM, runs the embedded umbra firmware (`hello` scenario) in a
1 GiB guest N times and measures, per run, the wall time from process start
to the first byte on the guest's serial console, and the process's peak RSS,
taken by a small C launcher (bench/peak_rss.c) so that Python's own RSS is
not folded into the child's ru_maxrss. Prints medians side by side and the
ratios umbra/QEMU. Both run in the same invocation, alternating, on the same
image.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

RUNS = int(os.environ.get("RUNS", "20"))
MEMORY = os.environ.get("MEMORY", "1G")


def measure(launcher, cmd):
    rss_file = tempfile.NamedTemporaryFile(delete=False).name
    start = time.perf_counter()
    proc = subprocess.Popen([launcher, rss_file] + cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - start
    proc.stdout.read()
    proc.wait()
    if not first:
        sys.exit(f"no serial output from {' '.join(cmd)} (exit {proc.returncode})")
    with open(rss_file) as f:
        rss_kib = int(f.read())
    os.unlink(rss_file)
    return t_first * 1000.0, rss_kib / 1024.0


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    umbra = os.environ.get("UMBRA", os.path.join(root, "target", "release", "umbra"))
    qemu = shutil.which("qemu-system-x86_64")
    if not os.path.exists(umbra):
        sys.exit(f"build umbra first: {umbra} is missing (cargo build --release)")
    if not qemu:
        sys.exit("qemu-system-x86_64 is missing (apt-get install qemu-system-x86)")
    scratch = tempfile.mkdtemp()
    launcher = os.path.join(scratch, "peak_rss")
    subprocess.run(["gcc", "-O2", "-o", launcher, os.path.join(root, "bench", "peak_rss.c")], check=True)
    fw = os.path.join(scratch, "umbra-firmware.fd")
    subprocess.run([umbra, "export-firmware", fw], check=True)
    cmds = {
        "umbra": [umbra, "run", "--memory", MEMORY],
        "qemu": [qemu, "-M", "microvm", "-enable-kvm", "-m", MEMORY, "-bios", fw, "-nodefaults",
                 "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
                 "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
    }
    results = {name: ([], []) for name in cmds}
    for _ in range(RUNS):
        for name, cmd in cmds.items():
            t, rss = measure(launcher, cmd)
            results[name][0].append(t)
            results[name][1].append(rss)
    print(f"launch benchmark: {RUNS} runs each, {MEMORY} guest, same firmware image, medians")
    print(f"{'vmm':8} {'first serial byte (ms)':>24} {'peak RSS (MiB)':>16}")
    med = {}
    for name, (times, rss) in results.items():
        med[name] = (statistics.median(times), statistics.median(rss))
        print(f"{name:8} {med[name][0]:24.2f} {med[name][1]:16.2f}")
    t_ratio = med["umbra"][0] / med["qemu"][0]
    r_ratio = med["umbra"][1] / med["qemu"][1]
    print(f"ratio umbra/qemu: time to first byte {t_ratio:.3f} (target <= 0.35), peak RSS {r_ratio:.3f}")
    print(f"umbra peak RSS {med['umbra'][1]:.2f} MiB (target < 8 MiB)")


if __name__ == "__main__":
    main()
