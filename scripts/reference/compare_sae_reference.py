#!/usr/bin/env python3
"""Compare a reference-check run: interplab-sae (rust.json, rust_final.safetensors) against the
plain-PyTorch reference trainer (reference.json, reference_final.safetensors) in RUN_DIR.

    python scripts/reference/compare_sae_reference.py RUN_DIR [RUN_DIR ...]

Prints, per run: the largest relative difference of the per-step loss over all steps
(|a − b| / max(|b|, 1e-8)), the same over the first 50 steps, each final tensor's largest
absolute difference and its size relative to the tensor's largest entry, and the held-out FVU and
L0 of both. Exit status 1 when a run misses the stated tolerances: held-out FVU and L0 within
0.01 (the issue's acceptance), first-50-step losses within 1e-3 relative.
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def compare(run):
    r = json.load(open(os.path.join(run, "rust.json")))
    p = json.load(open(os.path.join(run, "reference.json")))
    cfg = json.load(open(os.path.join(run, "config.json")))
    la, lb = np.array(r["loss"]), np.array(p["loss"])
    rel = np.abs(la - lb) / np.maximum(np.abs(lb), 1e-8)
    wr = load_file(os.path.join(run, "rust_final.safetensors"))
    wp = load_file(os.path.join(run, "reference_final.safetensors"))
    tensors = {}
    for name in sorted(wr):
        if name not in wp:
            continue
        a, b = wr[name].astype(np.float64), wp[name].astype(np.float64)
        diff = float(np.abs(a - b).max())
        tensors[name] = {"max_abs": diff, "rel_to_max": diff / max(float(np.abs(b).max()), 1e-30)}
    hr, hp = r["heldout"], p["heldout"]
    out = {
        "run": run, "architecture": cfg["architecture"], "steps": len(la), "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"], "batch": cfg["batch_size"],
        "loss_rel_max_first50": float(rel[:50].max()), "loss_rel_max": float(rel.max()),
        "final_loss": [float(la[-1]), float(lb[-1])],
        "tensors": tensors,
        "heldout_fvu": [hr["fvu"], hp["fvu"]], "heldout_l0": [hr["l0"], hp["l0"]],
    }
    out["ok"] = (abs(hr["fvu"] - hp["fvu"]) <= 0.01 and abs(hr["l0"] - hp["l0"]) <= 0.01 * max(1.0, hp["l0"])
                 and out["loss_rel_max_first50"] <= 1e-3)
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    ok = True
    for run in sys.argv[1:]:
        c = compare(run)
        ok &= c["ok"]
        t = ", ".join(f"{k} {v['max_abs']:.2e} ({v['rel_to_max']:.1e} of max)" for k, v in c["tensors"].items())
        print(f"{c['architecture']:9s} {c['steps']} steps: loss rel diff ≤ {c['loss_rel_max_first50']:.1e} "
              f"(first 50), ≤ {c['loss_rel_max']:.1e} (all); final loss {c['final_loss'][0]:.5f} vs "
              f"{c['final_loss'][1]:.5f}; held-out FVU {c['heldout_fvu'][0]:.4f} vs {c['heldout_fvu'][1]:.4f}, "
              f"L0 {c['heldout_l0'][0]:.3f} vs {c['heldout_l0'][1]:.3f}; {t}; {'ok' if c['ok'] else 'MISSED'}")
        print(json.dumps(c))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
