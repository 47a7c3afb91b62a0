#!/usr/bin/env python3
"""Load an SAE directory (cfg.json + sae_weights.safetensors, e.g. written by interplab-sae) with
SAELens' own loader and check its encode/decode against stored values.

    .venv-peer/bin/python scripts/reference/check_sae_roundtrip.py DIR [--atol 1e-5]

Reads DIR/io.safetensors: `x` [n, d_in], `feature_acts` [n, d_sae], `sae_out` [n, d_out]. When DIR
has no io.safetensors but DIR/../io.safetensors exists, that file's `x`, `<name>.feature_acts`,
`<name>.sae_out` are used, with <name> = DIR's base name (the layout of
crates/sae/tests/fixtures/saelens/, so the script also checks those fixtures).

Checks, one line each: SAELens loads DIR (SAE.load_from_disk); shapes; the nonzero pattern of
SAELens' encode(x) equals the stored one; max |encode(x) − feature_acts|; max
|decode(encode(x)) − sae_out|; max |decode(feature_acts) − sae_out|. A value passes when
|Δ| ≤ atol·max(1, |stored|). Exit status 1 if any check fails.
"""
import argparse
import os
import sys
import warnings

import torch
from safetensors.torch import load_file

warnings.filterwarnings("ignore")
from sae_lens import SAE  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--atol", type=float, default=1e-5)
    a = ap.parse_args()
    d = a.dir.rstrip("/")
    io_path, prefix = os.path.join(d, "io.safetensors"), ""
    if not os.path.exists(io_path):
        io_path, prefix = os.path.join(os.path.dirname(d) or ".", "io.safetensors"), os.path.basename(d) + "."
    ok = True

    def report(name, good, detail):
        nonlocal ok
        ok &= bool(good)
        print(f"{'ok  ' if good else 'FAIL'} {name}: {detail}")

    try:
        io = load_file(io_path)
        x, fa, so = io["x"], io[prefix + "feature_acts"], io[prefix + "sae_out"]
    except Exception as e:  # noqa: BLE001
        report("io", False, f"{io_path}: {type(e).__name__}: {e}")
        sys.exit(1)
    try:
        sae = SAE.load_from_disk(d)
        sae.eval()
        report("load", True, f"SAE.load_from_disk -> {type(sae).__name__} (architecture "
               f"{sae.cfg.architecture()!r}, d_in {sae.cfg.d_in}, d_sae {sae.cfg.d_sae}, dtype {sae.cfg.dtype})")
    except Exception as e:  # noqa: BLE001
        report("load", False, f"SAE.load_from_disk({d!r}): {type(e).__name__}: {e}")
        sys.exit(1)

    def close(name, got, want):
        if got.shape != want.shape:
            report(name, False, f"shape {tuple(got.shape)} != stored {tuple(want.shape)}")
            return
        diff = (got.double() - want.double()).abs()
        tol = a.atol * want.double().abs().clamp(min=1.0)
        bad = int((diff > tol).sum())
        report(name, bad == 0, f"max |Δ| {float(diff.max()) if diff.numel() else 0.0:.3e}"
               + (f", {bad} of {diff.numel()} beyond tolerance" if bad else ""))

    with torch.no_grad():
        f = sae.encode(x.to(sae.dtype))
        report("shapes", f.shape == fa.shape and tuple(so.shape[:-1]) == tuple(x.shape[:-1]),
               f"x {tuple(x.shape)}, encode {tuple(f.shape)}, stored feature_acts {tuple(fa.shape)}, "
               f"sae_out {tuple(so.shape)}")
        if f.shape == fa.shape:
            mism = int(((f != 0) != (fa != 0)).sum())
            report("support", mism == 0, f"nonzero {int((f != 0).sum())} vs stored {int((fa != 0).sum())}, "
                   f"{mism} positions differ")
        close("encode", f, fa)
        close("decode(encode(x))", sae.decode(f), so)
        close("decode(feature_acts)", sae.decode(fa.to(sae.dtype)), so)
    print("PASS" if ok else "FAIL", d)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
