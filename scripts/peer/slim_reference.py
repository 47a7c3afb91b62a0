#!/usr/bin/env python3
"""Copy the shared real-model reference data into the test fixtures, slimming the logits.

The shared reference (/work/shared/reference, see its MODELS.md) holds transformers logits for
every position over the full vocabulary: 7.9 MB (SmolLM2), 17 MB (Gemma 3), 15 MB (Qwen2.5-Coder
0.5B). Tests need far
less, so for each `hf_logits.safetensors` this writes `hf_logits_slim.safetensors` with, per
prompt i:
  tokens_{i}            int64 [pos]       the prompt's token ids (as in the source)
  logits_last_{i}       f32   [K, vocab]  logits of the last K positions (K=4 SmolLM2, 1 Gemma, 1 Qwen2)
  argmax_{i}            int64 [pos]       argmax id at every position
  max_{i}               f32   [pos]       max logit at every position
  max_abs_{i}           f32   [pos]       max |logit| at every position
  mean_{i}, std_{i}     f64   [pos]       mean and (population) std of the logits per position
  logsumexp_{i}         f64   [pos]       log-sum-exp of the logits per position (f64)
and `hf_logits_slim.json` saying so, with the source json's content and the source's sha256.
TransformerLens files (tl_*.safetensors/.json) are copied unchanged.

Usage: .venv-peer/bin/python scripts/peer/slim_reference.py [--src DIR] [--dst DIR]
"""
import argparse
import hashlib
import json
import os
import re
import shutil

import numpy as np
from safetensors.numpy import load_file, save_file

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAST_K = {"smollm2": 4, "gemma3": 1, "qwen2": 1}  # Gemma, Qwen2: 262,144- and 151,936-wide rows


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def slim(src_st, k, src_json):
    """`src_json`: the source's json; its `prompts[i].token_ids` stand in for a missing
    `tokens_{i}` tensor (the Qwen2 reference keeps its ids only there)."""
    d = load_file(src_st)
    idx = sorted(int(m.group(1)) for m in (re.fullmatch(r"logits_(\d+)", n) for n in d) if m)
    out = {}
    for i in idx:
        lg = d[f"logits_{i}"]
        assert lg.dtype == np.float32 and lg.ndim == 2, (lg.dtype, lg.shape)
        lg64 = lg.astype(np.float64)
        mx = lg64.max(-1, keepdims=True)
        if f"tokens_{i}" in d:
            out[f"tokens_{i}"] = d[f"tokens_{i}"].astype(np.int64)
        else:
            out[f"tokens_{i}"] = np.array(src_json["prompts"][i]["token_ids"], dtype=np.int64)
            assert out[f"tokens_{i}"].shape[0] == lg.shape[0], (i, lg.shape)
        out[f"logits_last_{i}"] = np.ascontiguousarray(lg[-k:])
        out[f"argmax_{i}"] = lg.argmax(-1).astype(np.int64)
        out[f"max_{i}"] = lg.max(-1)
        out[f"max_abs_{i}"] = np.abs(lg).max(-1)
        out[f"mean_{i}"] = lg64.mean(-1)
        out[f"std_{i}"] = lg64.std(-1)
        out[f"logsumexp_{i}"] = (mx[:, 0] + np.log(np.exp(lg64 - mx).sum(-1)))
    return idx, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default="/work/shared/reference")
    ap.add_argument("--dst", default=os.path.join(REPO_ROOT, "crates", "core", "tests", "fixtures", "reference"))
    ap.add_argument("--models", default=",".join(LAST_K), help="comma-separated, of: " + ", ".join(LAST_K))
    args = ap.parse_args()

    for model in args.models.split(","):
        k = LAST_K[model]
        s, t = os.path.join(args.src, model), os.path.join(args.dst, model)
        os.makedirs(t, exist_ok=True)
        for fn in sorted(os.listdir(s)):
            if fn.startswith("tl_"):
                shutil.copyfile(os.path.join(s, fn), os.path.join(t, fn))
        src_st = os.path.join(s, "hf_logits.safetensors")
        with open(os.path.join(s, "hf_logits.json")) as f:
            src_meta = json.load(f)
        idx, out = slim(src_st, k, src_meta)
        save_file(out, os.path.join(t, "hf_logits_slim.safetensors"),
                  metadata={"generator": "scripts/peer/slim_reference.py"})
        meta = {
            "generator": "scripts/peer/slim_reference.py",
            "source": f"shared reference {model}/hf_logits.safetensors",
            "source_sha256": sha256(src_st),
            "prompts": len(idx),
            "last_k": k,
            "tensors": {n: {"shape": list(v.shape), "dtype": str(v.dtype)} for n, v in out.items()},
            "definitions": {
                "tokens_{i}": "token ids of prompt i, copied from the source (its tensor, or its json's prompts[i].token_ids)",
                "logits_last_{i}": f"source logits_{{i}}[-{k}:], f32, unchanged: the last {k} positions",
                "argmax_{i}": "argmax over the vocabulary at every position (lowest id on ties, numpy)",
                "max_{i}": "max logit at every position",
                "max_abs_{i}": "max |logit| at every position",
                "mean_{i}": "mean logit at every position, computed in f64",
                "std_{i}": "population std (ddof=0) of the logits at every position, f64",
                "logsumexp_{i}": "log(sum(exp(logits))) at every position, f64",
            },
            "source_json": src_meta,
        }
        with open(os.path.join(t, "hf_logits_slim.json"), "w") as f:
            json.dump(meta, f, indent=1, ensure_ascii=False)
            f.write("\n")
        size = sum(os.path.getsize(os.path.join(t, f)) for f in os.listdir(t))
        print(f"{model}: {size} bytes in {t}")


if __name__ == "__main__":
    main()
