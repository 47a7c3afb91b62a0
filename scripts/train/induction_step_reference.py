#!/usr/bin/env python3
"""Reference training steps of a 2-layer attention-only transformer in TransformerLens, for
crates/train/tests/induction.rs (`three_steps_match_transformer_lens`).

    /work/main/.venv-peer/bin/python scripts/train/induction_step_reference.py

writes crates/train/tests/fixtures/induction_steps_tl.safetensors: the initial weights in
Interplab's layout and names (W_Q as [d_model, n_heads * d_head], ...), three batches of
tokens, the loss before each step, and the weights after three torch.optim.AdamW steps
(lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight decay 1). TransformerLens' zero biases are
left out of the optimiser, so they stay zero and the model equals Interplab's bias-free one.
"""
import os

import torch
from safetensors.torch import save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
L, D, H, DH, V, N, B = 2, 16, 4, 4, 32, 12, 3

cfg = HookedTransformerConfig(
    n_layers=L, d_model=D, n_ctx=N, d_head=DH, n_heads=H, d_vocab=V, attn_only=True,
    normalization_type="LN", positional_embedding_type="standard", act_fn=None, seed=0,
    dtype=torch.float32, device="cpu",
)
model = HookedTransformer(cfg)
g = torch.Generator().manual_seed(1)
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith(("b_Q", "b_K", "b_V", "b_O", "b_U")):
            p.zero_()
        elif name.endswith(".w"):  # LayerNorm gains: away from 1 so their gradients matter
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif name.endswith(".b"):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.4 * torch.randn(p.shape, generator=g))


def ours(m):
    """Interplab's names and layout."""
    out = {"embed.W_E": m.W_E, "pos_embed.W_pos": m.W_pos}
    for l, blk in enumerate(m.blocks):
        out[f"blocks.{l}.ln1.w"] = blk.ln1.w
        out[f"blocks.{l}.ln1.b"] = blk.ln1.b
        for k in ("Q", "K", "V"):
            w = getattr(blk.attn, f"W_{k}")  # [h, d, dh]
            out[f"blocks.{l}.attn.W_{k}"] = w.permute(1, 0, 2).reshape(D, H * DH)
        out[f"blocks.{l}.attn.W_O"] = blk.attn.W_O.reshape(H * DH, D)
    out["ln_final.w"] = m.ln_final.w
    out["ln_final.b"] = m.ln_final.b
    out["unembed.W_U"] = m.W_U
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


tensors = {f"init.{k}": v for k, v in ours(model).items()}
params = [p for n, p in model.named_parameters() if not n.endswith(("b_Q", "b_K", "b_V", "b_O", "b_U"))]
opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1.0)
tokens = torch.randint(0, V, (3, B, N), generator=g)
losses = []
for s in range(3):
    opt.zero_grad()
    loss = model(tokens[s], return_type="loss")
    loss.backward()
    opt.step()
    losses.append(loss.item())
tensors.update({f"final.{k}": v for k, v in ours(model).items()})
tensors["tokens"] = tokens.to(torch.int64)
tensors["losses"] = torch.tensor(losses, dtype=torch.float32)
out = os.path.join(ROOT, "crates", "train", "tests", "fixtures", "induction_steps_tl.safetensors")
save_file(tensors, out)
print("wrote", out, "losses", losses)
