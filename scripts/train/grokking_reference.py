"""Reference values for interplab's grokking model from TransformerLens' HookedTransformer.

Builds the one-layer modular-addition transformer of Nanda et al. 2023 (no LayerNorm, ReLU,
biases frozen at zero, loss on the last position in float64) at a small size, and writes to
crates/train/tests/fixtures/grokking_tl.safetensors:
  - every weight under its TransformerLens name (the initial state),
  - `pairs` [N, 2] and the last-position `logits` [N, p], the `loss`,
  - `grad.<name>`: d loss / d weight,
  - `after3.<name>` and `losses3`: the weights after three full-batch AdamW steps
    (lr 1e-3, weight decay 1.0, betas (0.9, 0.98)) and the loss before each step.

Run: .venv-peer/bin/python scripts/train/grokking_reference.py
"""
import os

import torch
from safetensors.torch import save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

P = 17
cfg = HookedTransformerConfig(
    n_layers=1, n_heads=3, d_model=24, d_head=8, d_mlp=40, act_fn="relu",
    normalization_type=None, d_vocab=P + 1, d_vocab_out=P, n_ctx=3,
    init_weights=True, device="cpu", seed=999,
)
model = HookedTransformer(cfg)
for name, param in model.named_parameters():
    if "b_" in name:
        param.requires_grad = False
names = [n for n, p in model.named_parameters() if p.requires_grad]

g = torch.Generator().manual_seed(0)
pairs = torch.randint(0, P, (40, 2), generator=g)
tokens = torch.cat([pairs, torch.full((40, 1), P)], dim=1)
labels = (pairs[:, 0] + pairs[:, 1]) % P


def loss_fn(logits):
    logits = logits[:, -1].to(torch.float64)
    logp = logits.log_softmax(-1)
    return -logp.gather(-1, labels[:, None])[:, 0].mean()


out = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
logits = model(tokens)
loss = loss_fn(logits)
loss.backward()
out["pairs"] = pairs.to(torch.int64)
out["logits"] = logits[:, -1].detach().clone()
out["loss"] = loss.detach().reshape(1)
for n, p in model.named_parameters():
    if p.requires_grad:
        out["grad." + n] = p.grad.detach().clone()
model.zero_grad()

opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                        weight_decay=1.0, betas=(0.9, 0.98))
losses = []
for _ in range(3):
    loss = loss_fn(model(tokens))
    losses.append(loss.item())
    loss.backward()
    opt.step()
    opt.zero_grad()
out["losses3"] = torch.tensor(losses, dtype=torch.float64)
for n, p in model.named_parameters():
    if p.requires_grad:
        out["after3." + n] = p.detach().clone()

dst = os.path.join(os.path.dirname(__file__), "../../crates/train/tests/fixtures/grokking_tl.safetensors")
save_file({k: v.contiguous() for k, v in out.items()}, dst)
print("wrote", os.path.normpath(dst), "params:", names, "loss", out["loss"].item())
