#!/usr/bin/env python3
"""Time `interplab toy superposition` against the PyTorch reference
(scripts/train/superposition_torch.py) on the same computation, in one run:
10 instances, n = 20, m = 5, batch 1024, 10k steps, 2 threads. Each side runs --repeats times,
alternating, and the medians are compared: training wall time, and the CPU time of the whole
processes (less sensitive to a machine shared with other jobs; PyTorch's includes its start-up
and import, ours the figures).

    cargo build --release -p interplab-cli
    .venv-peer/bin/python scripts/train/compare_superposition.py --steps 10000 --repeats 3
(the binary is $CARGO_TARGET_DIR/release/interplab, default target/release/interplab; or --exe)
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPARSITIES = "0,0.7,0.9,0.97,0.99,0.997,0.999,0.9,0.99,0.5"


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ours(exe, steps, threads):
    with tempfile.TemporaryDirectory() as d:
        t0, c0 = time.perf_counter(), child_cpu()
        out = subprocess.run([exe, "--threads", str(threads), "toy", "superposition", "--steps", str(steps),
                              "--sparsities", SPARSITIES, "--checkpoint-every", str(steps), "--out", d],
                             check=True, capture_output=True, text=True).stdout
        total, cpu = time.perf_counter() - t0, child_cpu() - c0
    return float(re.search(r"in ([0-9.]+) s", out).group(1)), total, cpu


def torch_run(steps, threads):
    c0 = child_cpu()
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train", "superposition_torch.py"),
                          "--steps", str(steps), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["wall_s"], child_cpu() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exe", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                                                  "release", "interplab"))
    a = ap.parse_args()
    train, total, cpu, torch_s, torch_cpu = [], [], [], [], []
    for _ in range(a.repeats):
        tr, to, c = ours(a.exe, a.steps, a.threads)
        train.append(tr)
        total.append(to)
        cpu.append(c)
        tw, tc = torch_run(a.steps, a.threads)
        torch_s.append(tw)
        torch_cpu.append(tc)
        print(f"  interplab {tr:.2f} s (command {to:.2f} s, CPU {c:.2f} s), "
              f"PyTorch {tw:.2f} s (process CPU {tc:.2f} s), load {os.getloadavg()[0]:.1f}", flush=True)
    med = statistics.median
    print(f"interplab: training {med(train):.2f} s median of {a.repeats} "
          f"(whole command incl. figures {med(total):.2f} s, CPU {med(cpu):.2f} s)")
    print(f"PyTorch:   training {med(torch_s):.2f} s median of {a.repeats} (process CPU {med(torch_cpu):.2f} s)")
    print(f"speed-up (training wall time): {med(torch_s) / med(train):.1f}x; "
          f"CPU time (whole processes): {med(torch_cpu) / med(cpu):.1f}x")


if __name__ == "__main__":
    main()
