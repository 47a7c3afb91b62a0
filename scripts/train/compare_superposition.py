#!/usr/bin/env python3
"""Time `interplab toy superposition` against the PyTorch reference
(scripts/train/superposition_torch.py) on the same computation, in one run:
10 instances, n = 20, m = 5, batch 1024, 10k steps, 2 threads. Each side runs --repeats times,
alternating, and the medians are compared.

    cargo build --release -p interplab-cli
    .venv-peer/bin/python scripts/train/compare_superposition.py --steps 10000 --repeats 3
(the binary is $CARGO_TARGET_DIR/release/interplab, default target/release/interplab; or --exe)
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPARSITIES = "0,0.7,0.9,0.97,0.99,0.997,0.999,0.9,0.99,0.5"


def ours(exe, steps, threads):
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = subprocess.run([exe, "--threads", str(threads), "toy", "superposition", "--steps", str(steps),
                              "--sparsities", SPARSITIES, "--out", d], check=True, capture_output=True, text=True).stdout
        total = time.perf_counter() - t0
    return float(re.search(r"in ([0-9.]+) s", out).group(1)), total


def torch_run(steps, threads):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train", "superposition_torch.py"),
                          "--steps", str(steps), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["wall_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exe", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                                                  "release", "interplab"))
    a = ap.parse_args()
    train, total, torch_s = [], [], []
    for _ in range(a.repeats):
        tr, to = ours(a.exe, a.steps, a.threads)
        train.append(tr)
        total.append(to)
        torch_s.append(torch_run(a.steps, a.threads))
        print(f"  interplab {tr:.2f} s (command {to:.2f} s), PyTorch {torch_s[-1]:.2f} s", flush=True)
    mt, mo, mp = statistics.median(train), statistics.median(total), statistics.median(torch_s)
    print(f"interplab: training {mt:.2f} s median of {a.repeats} (whole command incl. figures {mo:.2f} s)")
    print(f"PyTorch:   training {mp:.2f} s median of {a.repeats}")
    print(f"speed-up (training): {mp / mt:.1f}x")


if __name__ == "__main__":
    main()
