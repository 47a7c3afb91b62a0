#!/usr/bin/env python3
"""Load every .safetensors file under the given run (or tour) directories with
`safetensors.numpy.load_file`, as a Python user would, and print what each holds.

    python3 -m pip install safetensors numpy
    python3 scripts/check/load_run_tensors.py runs/tour-<time>

Exits non-zero if a file fails to load, holds no tensors, or holds a NaN or an infinity
(except the -inf of masked positions in `attn.hook_attn_scores`, as in TransformerLens).
"""
import pathlib
import sys

import numpy as np
from safetensors.numpy import load_file


def main(dirs):
    files = sorted(f for d in dirs for f in pathlib.Path(d).rglob("*.safetensors"))
    if not files:
        sys.exit(f"no .safetensors under {' '.join(dirs)}")
    bad = 0
    for f in files:
        try:
            tensors = load_file(str(f))
        except Exception as e:  # noqa: BLE001 - report any failure to load
            print(f"FAIL {f}: {e}")
            bad += 1
            continue
        nonfinite = 0
        for name, a in tensors.items():
            if not np.issubdtype(a.dtype, np.floating):
                continue
            bad_values = ~np.isfinite(a)
            if name.endswith("attn.hook_attn_scores"):
                bad_values &= ~np.isneginf(a)
            nonfinite += int(bad_values.sum())
        if not tensors or nonfinite:
            print(f"FAIL {f}: {len(tensors)} tensors, {nonfinite} non-finite values")
            bad += 1
            continue
        n = sum(a.size for a in tensors.values())
        print(f"ok   {f}: {len(tensors)} tensors, {n} values")
    print(f"{len(files) - bad} of {len(files)} files load")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(sys.argv[1:] or ["runs"])
