#!/usr/bin/env python3
"""TransformerLens reference for `interplab_analysis::lens` on SmolLM2-135M.

Loads SmolLM2-135M-Instruct from its GGUF into transformers (dequantised to f32) and builds the
HookedTransformer from it exactly as bench_peer.py does (hand-written Llama config, TL's own
convert_llama_weights), except that the weights are processed with fold_ln=True so that the
final RMSNorm's weight is folded into W_U: TL's `logit_attrs` projects on W_U alone, and
Interplab's direct logit attribution multiplies the unembedding direction by ln_final's weight,
which is the same thing.

For the IOI prompt (target " Mary", contrast " John", last position) it computes with TL:
- `lens_logit_diff[k]`: the logit lens, `cache.accumulated_resid(apply_ln=True, pos_slice=-1)`
  (TL re-normalises each layer's residual with ln_final, i.e. the scale recomputed per layer),
  31 values, the embedding (blocks.0.hook_resid_pre) then resid_post of layers 0..29,
  then projected on `tokens_to_residual_directions(" Mary") - tokens_to_residual_directions(" John")`;
- `head_dla[layer, head]`: per-head direct logit attribution,
  `cache.logit_attrs(cache.stack_head_results(layer=-1, pos_slice=-1), " Mary", " John",
  pos_slice=-1)` (logit_attrs divides each head's hook_result by the cached
  `ln_final.hook_scale` itself);
- `component_dla[k]`: the same with `cache.decompose_resid(pos_slice=-1)` (embed, then attn_out
  and mlp_out of each layer);
- `logit_diff`: the model's own logit difference at the last position.

Writes crates/analysis/tests/fixtures/lens_smollm2.{safetensors,json} (a few KB).

Usage: .venv-peer/bin/python scripts/peer/make_lens_reference.py --gguf PATH
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_peer  # noqa: E402  (load_hf, the IOI prompt)

REPO_ROOT = bench_peer.REPO_ROOT
OUT = os.path.join(REPO_ROOT, "crates", "analysis", "tests", "fixtures")


def build_tl_folded(hf_model, tok):
    """bench_peer.build_tl's HookedTransformer, with the norm weights folded (fold_ln=True)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    unfolded = bench_peer.build_tl(hf_model, tok)
    cfg = unfolded.cfg
    tl = HookedTransformer(cfg, tokenizer=tok, move_to_device=True)
    sd = convert_llama_weights(hf_model, cfg)
    tl.load_and_process_state_dict(
        sd,
        fold_ln=True,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return tl.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="SmolLM2-135M-Instruct GGUF file")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    hf, tok, _, _ = bench_peer.load_hf(args)
    tl = build_tl_folded(hf, tok)
    prompt, answer, wrong = bench_peer.IOI_CLEAN, bench_peer.IOI_ANSWER, bench_peer.IOI_WRONG
    tokens = tl.to_tokens(prompt, prepend_bos=False)
    a, w = tl.to_single_token(answer), tl.to_single_token(wrong)
    logits, cache = tl.run_with_cache(tokens)
    logit_diff = (logits[0, -1, a] - logits[0, -1, w]).item()

    # The logit lens: each layer's residual through ln_final (statistics recomputed per layer),
    # projected on TL's own logit-difference direction.
    acc = cache.accumulated_resid(apply_ln=True, pos_slice=-1)  # [31, 1, d]
    direction = tl.tokens_to_residual_directions(answer) - tl.tokens_to_residual_directions(wrong)
    lens = (acc * direction).sum(-1)
    # Direct logit attribution: logit_attrs applies the cached final scale itself, so the stacks
    # go in un-normalised.
    heads = cache.stack_head_results(layer=-1, pos_slice=-1, apply_ln=False)  # [L*H, 1, d]
    head_dla = cache.logit_attrs(heads, tokens=answer, incorrect_tokens=wrong, pos_slice=-1)
    comps, labels = cache.decompose_resid(apply_ln=False, pos_slice=-1, return_labels=True)
    comp_dla = cache.logit_attrs(comps, tokens=answer, incorrect_tokens=wrong, pos_slice=-1)

    n_layers, n_heads = tl.cfg.n_layers, tl.cfg.n_heads
    tensors = {
        "tokens": tokens[0].to(torch.int64).contiguous(),
        "lens_logit_diff": lens.reshape(-1).float().contiguous(),
        "head_dla": head_dla.reshape(n_layers, n_heads).float().contiguous(),
        "component_dla": comp_dla.reshape(-1).float().contiguous(),
    }
    os.makedirs(args.out, exist_ok=True)
    save_file(tensors, os.path.join(args.out, "lens_smollm2.safetensors"))
    meta = {
        "prompt": prompt,
        "target": answer,
        "contrast": wrong,
        "position": tokens.shape[1] - 1,
        "logit_diff": logit_diff,
        "component_labels": labels,
        "lens_logit_diff": "cache.accumulated_resid(apply_ln=True, pos_slice=-1) . "
        "(tokens_to_residual_directions(target) - tokens_to_residual_directions(contrast)); rows: blocks.0.hook_resid_pre, then resid_post of layers 0..n-1",
        "head_dla": "cache.logit_attrs(cache.stack_head_results(layer=-1, pos_slice=-1), target, contrast, pos_slice=-1); [layer, head]",
        "component_dla": "cache.logit_attrs(cache.decompose_resid(pos_slice=-1), target, contrast, pos_slice=-1); labels above",
        "weights": "fold_ln=True (ln_final weight folded into W_U), no other processing",
        "script": "scripts/peer/make_lens_reference.py",
    }
    with open(os.path.join(args.out, "lens_smollm2.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"logit diff {logit_diff:.4f}; lens final {lens[-1].item():.4f}; "
          f"heads sum {head_dla.sum().item():.4f}; components sum {comp_dla.sum().item():.4f}")


if __name__ == "__main__":
    main()
