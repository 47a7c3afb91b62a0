#!/usr/bin/env python3
"""TransformerLens references for head detection and activation patching on SmolLM2-135M.

Regenerates `crates/core/tests/fixtures/reference/smollm2/tl_head_scores.{safetensors,json}`
and `tl_patching.{safetensors,json}` (first copied from the shared reference data by
slim_reference.py, whose generator was not in the repository), read by
`crates/analysis/tests/heads.rs` and `patching.rs`.

Model: SmolLM2-135M-Instruct from the GGUF the Rust tests load, dequantised to f32 by
transformers, and the HookedTransformer built from it exactly as bench_peer.py does
(`bench_peer.load_hf` + `bench_peer.build_tl`: hand-written Llama config, TL's own
`convert_llama_weights`, no weight processing), CPU, f32, TransformerLens 3.9.

- Head scores: one sequence, BOS (id 1) then 50 token ids drawn with Python's
  `random.seed(0); [random.randrange(1000, 40000) for _ in range(50)]`, repeated twice (101
  tokens; this recipe reproduces the committed tokens exactly). One `run_with_cache` (pattern
  hooks, batch dimension removed), then for previous_token_head, duplicate_token_head and
  induction_head the detection pattern from TL's `get_{kind}_detection_pattern(tokens)` and,
  per head, `transformer_lens.head_detector.compute_head_attention_similarity_score` — the
  function `detect_head` applies to each head — with error_measure "mul" (sum(A*D)/sum(A)
  averaged over query positions), exclude_bos=False, exclude_current_token=False.
  (`detect_head` itself takes a string and re-tokenizes it, and 50 random ids do not survive
  decoding and re-encoding: 101 ids come back as 107.) [30 layers, 9 heads] each.
- Patching: the IOI pair (bench_peer.IOI_CLEAN / IOI_CORRUPTED, no BOS),
  `transformer_lens.patching.get_act_patch_resid_pre` and `get_act_patch_attn_out` with the
  metric (logit[" Mary"] - logit[" John"] - corrupted) / (clean - corrupted) at the last
  position; [30 layers, 14 positions] each.

Usage: .venv-peer/bin/python scripts/peer/make_analysis_reference.py [--gguf PATH] [--check]
`--gguf` defaults to the interplab model cache (as make_tokenizer_fixture.py finds it).
`--check` writes nothing: it prints the max |regenerated - committed| per tensor and exits 1
when a token differs or a value differs by more than --tol (default 1e-5). ~3 min on 2 cores.
"""
import argparse
import json
import os
import random
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_peer  # noqa: E402  (load_hf, build_tl, the IOI prompts)
import make_tokenizer_fixture  # noqa: E402  (where the GGUF lives)

OUT = os.path.join(bench_peer.REPO_ROOT, "crates", "core", "tests", "fixtures", "reference",
                   "smollm2")
HEAD_TYPES = bench_peer.HEAD_TYPES
HEAD_SEED, HEAD_HALF, HEAD_LO, HEAD_HI = 0, 50, 1000, 40000


def head_tokens(bos):
    random.seed(HEAD_SEED)
    half = [random.randrange(HEAD_LO, HEAD_HI) for _ in range(HEAD_HALF)]
    return [bos] + half + half


def head_scores(tl, tok):
    from transformer_lens import head_detector as hd

    ids = head_tokens(tok.bos_token_id)
    tokens = torch.tensor([ids])
    _, cache = tl.run_with_cache(tokens, remove_batch_dim=True,
                                 names_filter=lambda n: n.endswith("hook_pattern"))
    n_layers, n_heads = tl.cfg.n_layers, tl.cfg.n_heads
    tensors = {"tokens": tokens[0].to(torch.int64).contiguous()}
    top5 = {}
    for kind in HEAD_TYPES:
        pattern = getattr(hd, f"get_{kind}_detection_pattern")(tokens)
        s = torch.empty(n_layers, n_heads)
        for layer in range(n_layers):
            for head in range(n_heads):
                s[layer, head] = hd.compute_head_attention_similarity_score(
                    cache["pattern", layer, "attn"][head], detection_pattern=pattern,
                    exclude_bos=False, exclude_current_token=False, error_measure="mul")
        tensors[kind] = s.float().contiguous()
        v, i = s.flatten().topk(5)
        top5[kind] = [[f"{int(j) // n_heads}.{int(j) % n_heads}", round(float(x), 4)]
                      for x, j in zip(v, i)]
    meta = {
        "tokens": ids,
        "definition": "TransformerLens 3.9 head_detector 'mul': sum(A*D)/sum(A), "
        "exclude_bos=False, exclude_current_token=False",
        "top5": top5,
    }
    return tensors, meta


def patching(tl):
    from transformer_lens import patching as tlp

    clean = tl.to_tokens(bench_peer.IOI_CLEAN, prepend_bos=False)
    corrupted = tl.to_tokens(bench_peer.IOI_CORRUPTED, prepend_bos=False)
    a, w = tl.to_single_token(bench_peer.IOI_ANSWER), tl.to_single_token(bench_peer.IOI_WRONG)
    clean_logits, clean_cache = tl.run_with_cache(clean)
    corrupted_logits = tl(corrupted)
    clean_ld = (clean_logits[0, -1, a] - clean_logits[0, -1, w]).item()
    corr_ld = (corrupted_logits[0, -1, a] - corrupted_logits[0, -1, w]).item()

    def metric(logits):
        return ((logits[0, -1, a] - logits[0, -1, w]) - corr_ld) / (clean_ld - corr_ld)

    tensors = {
        "clean_tokens": clean[0].to(torch.int64).contiguous(),
        "corrupted_tokens": corrupted[0].to(torch.int64).contiguous(),
        "attn_out": tlp.get_act_patch_attn_out(tl, corrupted, clean_cache, metric).float().contiguous(),
        "resid_pre": tlp.get_act_patch_resid_pre(tl, corrupted, clean_cache, metric).float().contiguous(),
    }
    meta = {
        "clean": bench_peer.IOI_CLEAN,
        "corrupted": bench_peer.IOI_CORRUPTED,
        "answer": bench_peer.IOI_ANSWER,
        "wrong": bench_peer.IOI_WRONG,
        "clean_logit_diff": clean_ld,
        "corrupted_logit_diff": corr_ld,
        "metric": "(logit[answer]-logit[wrong] - corrupted)/(clean - corrupted) at the last position",
        "functions": "transformer_lens.patching.get_act_patch_resid_pre / get_act_patch_attn_out; "
        "shape [layer, position]",
    }
    return tensors, meta


def compare(name, tensors, meta, out):
    """Max |regenerated - committed| per tensor (tokens must be equal); returns the worst."""
    old = load_file(os.path.join(out, f"{name}.safetensors"))
    with open(os.path.join(out, f"{name}.json")) as f:
        old_meta = json.load(f)
    worst = 0.0
    for k, v in tensors.items():
        if v.dtype == torch.int64:
            same = torch.equal(v, old[k])
            print(f"  {name}.{k}: {'equal' if same else 'DIFFERENT'}")
            worst = worst if same else float("inf")
        else:
            d = (v - old[k]).abs().max().item()
            print(f"  {name}.{k}: max |new - committed| = {d:.3g} (max |value| {v.abs().max().item():.3g})")
            worst = max(worst, d)
    for k, v in meta.items():
        if isinstance(v, float):
            d = abs(v - old_meta[k])
            print(f"  {name}.json {k}: {v} (committed {old_meta[k]}, |diff| {d:.3g})")
            worst = max(worst, d)
        elif v != old_meta.get(k):
            print(f"  {name}.json {k}: differs: {v} vs {old_meta.get(k)}")
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="SmolLM2-135M-Instruct GGUF (default: the model cache)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    args.gguf = make_tokenizer_fixture.gguf_path("smollm2", args.gguf)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    hf, tok, _, _ = bench_peer.load_hf(args)
    tl = bench_peer.build_tl(hf, tok)
    del hf
    results = {"tl_head_scores": head_scores(tl, tok), "tl_patching": patching(tl)}
    if args.check:
        worst = max(compare(n, t, m, args.out) for n, (t, m) in results.items())
        ok = worst <= args.tol
        print(f"worst {worst:.3g}: {'OK' if ok else 'FAIL'} (tol {args.tol})")
        sys.exit(0 if ok else 1)
    os.makedirs(args.out, exist_ok=True)
    for name, (tensors, meta) in results.items():
        save_file(tensors, os.path.join(args.out, f"{name}.safetensors"))
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(meta, f, indent=1)
        print(f"wrote {name}.safetensors / .json in {args.out}")


if __name__ == "__main__":
    main()
