#!/usr/bin/env python3
"""Time `interplab toy superposition` against the PyTorch reference
(scripts/train/superposition_torch.py) on the same computation, in one run:
10 instances, n = 20, m = 5, batch 1024, 10k steps, 2 threads.

    cargo build --release -p interplab-cli
    .venv-peer/bin/python scripts/train/compare_superposition.py --steps 10000
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPARSITIES = "0,0.7,0.9,0.97,0.99,0.997,0.999,0.9,0.99,0.5"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    exe = os.path.join(ROOT, "target", "release", "interplab")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = subprocess.run([exe, "--threads", str(a.threads), "toy", "superposition", "--steps", str(a.steps),
                              "--sparsities", SPARSITIES, "--out", d], check=True, capture_output=True, text=True).stdout
        ours_total = time.perf_counter() - t0
    ours_train = float(re.search(r"in ([0-9.]+) s", out).group(1))
    torch_out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train", "superposition_torch.py"),
                                "--steps", str(a.steps), "--threads", str(a.threads)],
                               check=True, capture_output=True, text=True).stdout
    t = json.loads(torch_out.strip().splitlines()[-1])
    print(f"interplab: training {ours_train:.2f} s (whole command incl. figures {ours_total:.2f} s)")
    print(f"PyTorch:   training {t['wall_s']:.2f} s")
    print(f"speed-up (training): {t['wall_s'] / ours_train:.1f}x")


if __name__ == "__main__":
    main()
