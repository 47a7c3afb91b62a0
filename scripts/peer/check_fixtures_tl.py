#!/usr/bin/env python3
"""Cross-check the tiny-model fixtures against TransformerLens.

make_fixtures.py takes the activations from transformers' modules and names them after
TransformerLens hooks. This script loads each fixture model into a HookedTransformer (TL's own
config conversion and weight converters, no weight processing), runs TL's run_with_cache on the
fixture's input ids and reports the max |difference| for the logits and every stored hook, so
the naming (e.g. Gemma's hook_attn_out after the post-attention norm, ln_final.hook_normalized
before the weight) is TL's and not a guess. Exits 1 if any difference exceeds --tol.

Usage: .venv-peer/bin/python scripts/peer/check_fixtures_tl.py [--tol 1e-4]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO_ROOT, "crates", "core", "tests", "fixtures", "hf")


def tl_model(name, d, hf):
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    c = hf.config
    if name == "gemma3-tiny":
        # TL knows Gemma 3 only by hub name; configure it by hand from the HF config.
        cfg = HookedTransformerConfig(
            d_model=c.hidden_size, d_head=c.head_dim, n_heads=c.num_attention_heads,
            d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers, n_ctx=c.max_position_embeddings,
            eps=c.rms_norm_eps, d_vocab=c.vocab_size, act_fn=c.hidden_activation,
            normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=c.head_dim,
            rotary_base=int(c.rope_parameters["full_attention"]["rope_theta"]),
            rotary_base_local=int(c.rope_parameters["sliding_attention"]["rope_theta"]),
            use_attn_scale=True, n_key_value_heads=c.num_key_value_heads, gated_mlp=True,
            final_rms=True, use_normalization_before_and_after=True, use_qk_norm=True,
            window_size=c.sliding_window, use_local_attn=True,
            attn_types=["global" if t == "full_attention" else "local" for t in c.layer_types],
            original_architecture="Gemma3ForCausalLM", device="cpu", dtype=torch.float32,
        )
        assert c.query_pre_attn_scalar == c.head_dim  # TL scales by sqrt(d_head)
        official = "google/gemma-3-270m"
    else:
        # TL reads a local directory's config.json; it keys some architectures on the
        # directory name, so load from a neutrally named copy. Its GPT-2 path wants n_ctx.
        tmp = tempfile.mkdtemp()
        local = os.path.join(tmp, "model")
        shutil.copytree(d, local)
        with open(os.path.join(local, "config.json")) as f:
            cj = json.load(f)
        if cj["model_type"] == "gpt2":
            cj["n_ctx"] = cj["n_positions"]
        with open(os.path.join(local, "config.json"), "w") as f:
            json.dump(cj, f)
        cfg = loading.get_pretrained_model_config(local, fold_ln=False, device="cpu", dtype=torch.float32)
        official = local
    tl = HookedTransformer(cfg)
    sd = loading.get_pretrained_state_dict(official, cfg, hf_model=hf, dtype=torch.float32)
    tl.load_and_process_state_dict(sd, fold_ln=False, center_writing_weights=False,
                                   center_unembed=False, fold_value_biases=False)
    return tl.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=FIXTURES)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    worst_all = 0.0
    for name in sorted(os.listdir(args.fixtures)):
        d = os.path.join(args.fixtures, name)
        hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        tl = tl_model(name, d, hf)
        ref = load_file(os.path.join(d, "reference.safetensors"))
        with torch.no_grad():
            logits, cache = tl.run_with_cache(ref["input_ids"])
        diffs = {"logits": (logits - ref["logits"]).abs().max().item()}
        for k, v in ref.items():
            if k not in ("input_ids", "logits"):
                diffs[k] = (cache[k] - v).abs().max().item()
        worst = max(diffs.values())
        worst_all = max(worst_all, worst)
        print(f"{name}: {len(diffs)} tensors, max |TL - fixture| = {worst:.3g} "
              f"(logits {diffs['logits']:.3g})")
    print("OK" if worst_all <= args.tol else f"FAIL: {worst_all} > {args.tol}")
    sys.exit(0 if worst_all <= args.tol else 1)


if __name__ == "__main__":
    main()
