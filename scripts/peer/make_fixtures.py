#!/usr/bin/env python3
"""Tiny randomly initialised Hugging Face models and their reference outputs, as golden
fixtures for the Rust loaders and the hooked transformer.

For each model it writes crates/core/tests/fixtures/hf/<name>/:
  config.json            what transformers' save_pretrained writes, plus the legacy keys that
                         hub configs of these architectures carry (see LEGACY_KEYS)
  model.safetensors      float32 weights as save_pretrained writes them (tied weights once)
  tokenizer.json         a byte-level BPE trained here on a small built-in corpus
  reference.safetensors  input ids, logits and activations (TransformerLens hook names)
  reference.json         versions, config, the recipe, and what each tensor is

Deterministic: seeded init, fixed corpus, fixed inputs. Run with the peer venv:
  .venv-peer/bin/python scripts/peer/make_fixtures.py [--out DIR] [--check]
`--check` regenerates into a temporary directory and compares with the committed files.
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO_ROOT, "crates", "core", "tests", "fixtures", "hf")

VOCAB = 300
SPECIAL = ["<|endoftext|>", "<pad>"]  # ids 0 and 1; used as bos/eos and pad everywhere
BOS, PAD = 0, 1
SEQ = 12
INIT_RANGE = 0.1
NOISE_1D = 0.1
NOISE_ND = 0.01

CORPUS = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "Attention heads move information between positions; MLPs act on each position.",
    "Induction heads copy the token that followed an earlier copy of the current token.",
    "The Eiffel Tower is located in the city of Paris, in France.",
    "Residual stream, layer norm, rotary embeddings, grouped-query attention.",
    "Ünïcödé bytes: naïve café, 東京, emoji 🙂 and tabs\tand\nnewlines.",
]
TOKENIZER_CHECK_TEXT = "The store gave Mary a drink, then John left. 東京 🙂"
TEXT_FOR_SEQ0 = "When Mary and John went to the store, John gave a drink to Mary."

# Keys that hub configs of these architectures carry but transformers 5 folds into
# `rope_parameters`; written alongside so a loader is tested on both spellings.
def legacy_keys(name, cfg):
    rp = cfg.get("rope_parameters") or {}
    if name == "neox-tiny":
        return {"rotary_pct": rp["partial_rotary_factor"], "rotary_emb_base": rp["rope_theta"]}
    if name == "llama-tiny":
        return {"rope_theta": rp["rope_theta"]}
    if name == "gemma3-tiny":
        return {
            "rope_theta": rp["full_attention"]["rope_theta"],
            "rope_local_base_freq": rp["sliding_attention"]["rope_theta"],
        }
    return {}


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def model_specs():
    from transformers import Gemma3TextConfig, GPT2Config, GPTNeoXConfig, LlamaConfig

    common = dict(bos_token_id=BOS, eos_token_id=BOS, pad_token_id=PAD, initializer_range=INIT_RANGE)
    return {
        "gpt2-tiny": GPT2Config(
            vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
            activation_function="gelu_new", **common,  # tie_word_embeddings: default (True)
        ),
        "neox-tiny": GPTNeoXConfig(
            vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=256, hidden_act="gelu", max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
            use_parallel_residual=True, tie_word_embeddings=False, **common,
        ),
        "llama-tiny": LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            rms_norm_eps=1e-5, tie_word_embeddings=False, **common,
        ),
        # intermediate 96 (not 128) keeps the fixture directory under 1 MiB
        "gemma3-tiny": Gemma3TextConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=6,
            num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
            max_position_embeddings=64, sliding_window=4,
            layer_types=["sliding_attention"] * 5 + ["full_attention"],
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
            rms_norm_eps=1e-6, final_logit_softcapping=None, attn_logit_softcapping=None,
            hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, **common,
        ),
    }


def sublayer_modules(name, model):
    """(decoder layers, module whose output is TL's hook_attn_out, ... hook_mlp_out, final norm)."""
    if name == "gpt2-tiny":
        layers = model.transformer.h
        return layers, [l.attn for l in layers], [l.mlp for l in layers], model.transformer.ln_f
    if name == "neox-tiny":
        layers = model.gpt_neox.layers
        return layers, [l.attention for l in layers], [l.mlp for l in layers], model.gpt_neox.final_layer_norm
    if name == "llama-tiny":
        layers = model.model.layers
        return layers, [l.self_attn for l in layers], [l.mlp for l in layers], model.model.norm
    if name == "gemma3-tiny":
        # TL's Gemma blocks apply the post-sublayer norm before hook_attn_out / hook_mlp_out
        layers = model.model.layers
        return (layers, [l.post_attention_layernorm for l in layers],
                [l.post_feedforward_layernorm for l in layers], model.model.norm)
    raise KeyError(name)


def perturb(model, seed):
    """Add noise to every parameter: HF initialises norm weights to 1 (Gemma: 0, meaning
    scale 1) and biases to 0, which would hide bugs in how they are loaded or applied."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            std = NOISE_1D if p.dim() == 1 else NOISE_ND
            p.add_(torch.randn(p.shape, generator=g) * std)


def input_ids(tok):
    seq0 = [BOS] + tok.encode(TEXT_FOR_SEQ0).ids
    seq0 = seq0[:SEQ]
    assert len(seq0) == SEQ
    rng = np.random.default_rng(1234)
    seq1 = [int(x) for x in rng.integers(2, VOCAB, size=SEQ)]
    # ids across the vocabulary: the last id, first byte, a merge, a repeated id
    seq1[0], seq1[3], seq1[5], seq1[8] = VOCAB - 1, 2, 258, VOCAB - 2
    seq1[10] = seq1[5]
    return torch.tensor([seq0, seq1], dtype=torch.long)


def final_normalized(name, x, model):
    """TL's ln_final.hook_normalized: the final norm before its weight (and bias), f64."""
    x = x.double()
    if name in ("gpt2-tiny", "neox-tiny"):
        eps = model.config.layer_norm_epsilon if name == "gpt2-tiny" else model.config.layer_norm_eps
        x = x - x.mean(-1, keepdim=True)
        return (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)).float()
    eps = model.config.rms_norm_eps
    return (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)).float()


def first(o):
    return o[0] if isinstance(o, (tuple, list)) else o


def run_reference(name, model, ids):
    layers, attn_mods, mlp_mods, _ = sublayer_modules(name, model)
    n = len(layers)
    caught = {}
    handles = []
    for L in range(n):
        handles.append(attn_mods[L].register_forward_hook(
            lambda m, i, o, L=L: caught.__setitem__(f"blocks.{L}.hook_attn_out", first(o).detach().clone())))
        handles.append(mlp_mods[L].register_forward_hook(
            lambda m, i, o, L=L: caught.__setitem__(f"blocks.{L}.hook_mlp_out", first(o).detach().clone())))
    handles.append(layers[n - 1].register_forward_hook(
        lambda m, i, o: caught.__setitem__(f"blocks.{n - 1}.hook_resid_post", first(o).detach().clone())))
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, output_attentions=True, use_cache=False)
    for h in handles:
        h.remove()
    t = {"input_ids": ids.clone(), "logits": out.logits.detach().float().clone()}
    assert len(out.hidden_states) == n + 1 and len(out.attentions) == n
    for L in range(n):
        t[f"blocks.{L}.hook_resid_pre"] = out.hidden_states[L].detach().clone()
        t[f"blocks.{L}.attn.hook_pattern"] = out.attentions[L].detach().clone()
    for k in sorted(caught):
        t[k] = caught[k]
    t["ln_final.hook_normalized"] = final_normalized(name, caught[f"blocks.{n - 1}.hook_resid_post"], model)
    return {k: v.contiguous() for k, v in t.items()}


DESCRIPTIONS = {
    "input_ids": "int64 [batch, pos]: the input; row 0 is BOS + the tokenized TEXT_FOR_SEQ0, row 1 fixed ids across the vocabulary. No padding, no attention mask.",
    "logits": "f32 [batch, pos, d_vocab]: model(input_ids).logits, every position",
    "blocks.{L}.hook_resid_pre": "f32 [batch, pos, d_model]: output_hidden_states[L] (the input of decoder layer L; for Gemma the embeddings are already scaled by sqrt(d_model))",
    "blocks.{L}.attn.hook_pattern": "f32 [batch, head, query_pos, key_pos]: output_attentions[L] (softmax probabilities, eager attention, causal and, for Gemma sliding layers, sliding-window masked)",
    "blocks.{L}.hook_attn_out": "f32 [batch, pos, d_model]: forward hook on the attention module output (bias included). Gemma 3: output of post_attention_layernorm, as TransformerLens' hook_attn_out",
    "blocks.{L}.hook_mlp_out": "f32 [batch, pos, d_model]: forward hook on the MLP module output. Gemma 3: output of post_feedforward_layernorm",
    "blocks.{last}.hook_resid_post": "f32 [batch, pos, d_model]: forward hook on the last decoder layer's output (before the final norm)",
    "ln_final.hook_normalized": "f32 [batch, pos, d_model]: the last resid_post normalised without the final norm's weight/bias, computed in f64: LayerNorm (x-mean)/sqrt(var+eps) for GPT-2/NeoX, RMSNorm x/sqrt(mean(x^2)+eps) for Llama/Gemma",
}


def sliding_window_check(cfg, t):
    """Observed number of visible keys per query in each layer's pattern (batch 0)."""
    out = {}
    for L in range(cfg["num_hidden_layers"] if "num_hidden_layers" in cfg else cfg["n_layer"]):
        p = t[f"blocks.{L}.attn.hook_pattern"][0, 0]
        out[str(L)] = [int((row > 0).sum()) for row in p]
    return out


def write_model(name, config, tok, outdir):
    import safetensors
    import tokenizers
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    d = os.path.join(outdir, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    perturb(model, seed=1)
    model.save_pretrained(d, safe_serialization=True)
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)

    cfg_path = os.path.join(d, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    legacy = legacy_keys(name, cfg)
    cfg.update(legacy)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    tok.save(os.path.join(d, "tokenizer.json"))

    ids = input_ids(tok)
    t = run_reference(name, model, ids)

    # The saved directory (with the legacy keys) must reload to the same function.
    re = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32)
    re.eval()
    with torch.no_grad():
        re_logits = re(input_ids=ids, use_cache=False).logits
    reload_diff = (re_logits - t["logits"]).abs().max().item()
    assert reload_diff == 0.0, f"{name}: reloaded model differs by {reload_diff}"

    save_file(t, os.path.join(d, "reference.safetensors"), metadata={"generator": "scripts/peer/make_fixtures.py"})

    n = cfg.get("num_hidden_layers", cfg.get("n_layer"))
    pats = [t[f"blocks.{L}.attn.hook_pattern"] for L in range(n)]
    lg = t["logits"].double()
    check_ids = tok.encode(TOKENIZER_CHECK_TEXT).ids
    meta = {
        "model": name,
        "generator": "scripts/peer/make_fixtures.py",
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        },
        "class": type(model).__name__,
        "recipe": {
            "init": f"torch.manual_seed(0); AutoModelForCausalLM.from_config(config) (HF default init, initializer_range={INIT_RANGE} so attention is far from uniform)",
            "perturbation": f"then every parameter += N(0, {NOISE_1D}) if 1-D (norm weights, biases) else N(0, {NOISE_ND}); torch.Generator seed 1, parameters in sorted name order",
            "attn_implementation": "eager",
            "dtype": "float32",
            "forward": "model(input_ids, output_hidden_states=True, output_attentions=True, use_cache=False), no attention mask, torch.no_grad, CPU",
            "config_json": "save_pretrained's config.json, keys sorted, plus legacy keys (same values) a hub config carries: " + json.dumps(legacy),
            "reload_check": "the written directory reloads with AutoModelForCausalLM.from_pretrained to bit-identical logits",
        },
        "config": cfg,
        "tokenizer": {
            "kind": "byte-level BPE (tokenizers), trained on the built-in corpus of make_fixtures.py",
            "vocab_size": tok.get_vocab_size(),
            "special_tokens": {s: i for i, s in enumerate(SPECIAL)},
            "check": {"text": TOKENIZER_CHECK_TEXT, "ids": check_ids,
                      "decoded": tok.decode(check_ids)},
            "seq0_text": TEXT_FOR_SEQ0,
        },
        "input_ids": ids.tolist(),
        "tensors": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in t.items()
        },
        "descriptions": DESCRIPTIONS,
        "summary": {
            "logits_max_abs": lg.abs().max().item(),
            "logits_std": lg.std().item(),
            "argmax_last": t["logits"][:, -1].argmax(-1).tolist(),
            "attention_mean_max_prob": [p.max(-1).values.mean().item() for p in pats],
            "visible_keys_per_query_batch0_head0": sliding_window_check(cfg, t),
        },
    }
    if name == "gemma3-tiny":
        meta["sliding_window_semantics"] = (
            "HF: key k is visible from query q iff 0 <= q - k < sliding_window "
            f"(sliding_window={cfg['sliding_window']}, so {cfg['sliding_window']} keys incl. itself); "
            f"layer_types={cfg['layer_types']}")
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return d


def dir_digest(d):
    h = {}
    for fn in sorted(os.listdir(d)):
        with open(os.path.join(d, fn), "rb") as f:
            h[fn] = hashlib.sha256(f.read()).hexdigest()
    return h


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--check", action="store_true", help="regenerate in a temp dir and compare with --out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    out = tempfile.mkdtemp() if args.check else args.out
    os.makedirs(out, exist_ok=True)
    tok = build_tokenizer()
    bad = 0
    for name, config in model_specs().items():
        if args.only and name not in args.only:
            continue
        d = write_model(name, config, tok, out)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        line = f"{name}: {size} bytes in {d}"
        if args.check:
            same = dir_digest(d) == dir_digest(os.path.join(args.out, name))
            bad += not same
            line += " (matches committed)" if same else " (DIFFERS from committed)"
        print(line)
    if args.check:
        shutil.rmtree(out)
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
