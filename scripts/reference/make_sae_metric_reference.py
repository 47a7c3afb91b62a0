#!/usr/bin/env python3
"""numpy reference values for interplab-sae's evaluation metrics (docs/sae.md §Metrics).

    python scripts/reference/make_sae_metric_reference.py CASE.safetensors OUT.json

CASE.safetensors holds f32 tensors x [N, d] (targets), x_hat [N, d] (reconstructions) and
codes [N, d_sae] (dense latent activations), e.g. written by

    cargo run --release -p interplab-sae --example export_metric_case -- CASE.safetensors

OUT.json gets the metrics computed here, independently of the Rust code, straight from the
definitions; crates/sae/tests/metrics_reference.rs recomputes them from the same file with
`interplab_sae::metrics::Accumulator` and compares. Only numpy is needed (the safetensors file
is parsed by hand: an 8-byte little-endian header length, a JSON header, raw little-endian data).

Definitions (every sum in float64, after converting the f32 tensors):
  l0                  number of nonzero codes / N (mean nonzero latents per row)
  fvu                 sum_b ||x_b - x_hat_b||^2 / sum_b ||x_b - mean(x)||^2, mean over the N rows
                      (the variance about the mean, computed here in two passes)
  explained_variance  1 - fvu
  mse                 sum_b ||x_b - x_hat_b||^2 / N (summed over the feature dimension,
                      averaged over rows)
  dead                fraction of latents nonzero on no row
  dense               fraction of latents nonzero on more than 10% of rows (count / N > 0.1)
  shrinkage           mean_b ||x_hat_b|| / mean_b ||x_b||
  log_density         histogram of log10(count / N) over the latents that fired (count > 0):
                      bin lower edges -8 + 0.25 i, i = 0..32; bin floor((log10 + 8) / 0.25),
                      clamped to [0, 32] (the last bin also takes everything >= 0)
Also written, for information: fvu_about_zero = sum ||x - x_hat||^2 / sum ||x||^2, the variance
about zero that `fvu` deliberately is not.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


def read_safetensors(path):
    """{name: array} and the metadata dict of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        dt = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
        lo, hi = info["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], dtype=dt).reshape(info["shape"])
    return out, meta


def metrics(x, x_hat, codes):
    x = x.astype(np.float64)
    x_hat = x_hat.astype(np.float64)
    n = x.shape[0]
    sq_err = float(((x - x_hat) ** 2).sum())
    total_var = float(((x - x.mean(axis=0)) ** 2).sum())
    fvu = sq_err / total_var
    fires = (codes != 0).sum(axis=0).astype(np.int64)
    freq = fires / n
    edges = [-8.0 + 0.25 * i for i in range(33)]
    counts = np.zeros(len(edges), dtype=np.int64)
    alive = fires > 0
    bins = np.clip(np.floor((np.log10(freq[alive]) + 8.0) / 0.25), 0, len(edges) - 1).astype(int)
    np.add.at(counts, bins, 1)
    d_sae = codes.shape[1]
    return {
        "tokens": n,
        "l0": float(np.count_nonzero(codes)) / n,
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "mse": sq_err / n,
        "dead": float((fires == 0).sum()) / d_sae,
        "dense": float((freq > 0.1).sum()) / d_sae,
        "shrinkage": float(np.sqrt((x_hat**2).sum(axis=1)).mean() / np.sqrt((x**2).sum(axis=1)).mean()),
        "log_density_edges": edges,
        "log_density_counts": [int(c) for c in counts],
        "fvu_about_zero": sq_err / float((x**2).sum()),
    }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    t, meta = read_safetensors(src)
    x, x_hat, codes = t["x"], t["x_hat"], t["codes"]
    assert x.ndim == 2 and x_hat.shape == x.shape and codes.ndim == 2 and codes.shape[0] == x.shape[0]
    m = metrics(x, x_hat, codes)
    doc = {
        "case": src.replace("\\", "/").split("/")[-1],
        "case_source": meta.get("source", ""),
        "n": int(x.shape[0]),
        "d": int(x.shape[1]),
        "d_sae": int(codes.shape[1]),
        "numpy": np.__version__,
        "metrics": m,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(json.dumps({k: v for k, v in m.items() if not k.startswith("log_density")}, indent=1))
    print("log_density_counts", m["log_density_counts"])


if __name__ == "__main__":
    main()
