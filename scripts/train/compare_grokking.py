#!/usr/bin/env python3
"""Time `interplab toy grokking` against TransformerLens (scripts/train/grokking_torch.py) on the
same computation, in one run: p = 113, full-batch training epochs, 2 threads. Interplab's time is
its whole training loop, including the metric logging at the first and last epoch (test loss,
Fourier analysis of all p² inputs), which the PyTorch timing leaves out.

    cargo build --release -p interplab-cli
    .venv-peer/bin/python scripts/train/compare_grokking.py --epochs 300
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exe", default=os.path.join(ROOT, "target", "release", "interplab"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([a.exe, "--threads", str(a.threads), "toy", "grokking", "--epochs", str(a.epochs),
                        "--log-every", str(a.epochs), "--out", d], check=True, capture_output=True, text=True)
        ours = json.load(open(os.path.join(d, "results.json")))
    t = json.loads(subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train", "grokking_torch.py"),
                                   "--epochs", str(a.epochs), "--threads", str(a.threads)],
                                  check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    ours_per_1000 = 1000 * ours["wall_s"] / ours["epochs"]
    print(f"interplab:        {ours_per_1000:.1f} s per 1,000 epochs ({ours['epochs_per_s']:.1f} epochs/s)")
    print(f"TransformerLens:  {t['s_per_1000_epochs']:.1f} s per 1,000 epochs "
          f"(+ {1000 * t['test_eval_s_per_epoch']:.1f} s if the test loss is evaluated every epoch)")
    print(f"speed-up (epochs/s): {t['s_per_1000_epochs'] / ours_per_1000:.1f}x")


if __name__ == "__main__":
    main()
