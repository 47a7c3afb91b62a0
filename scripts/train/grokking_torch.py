#!/usr/bin/env python3
"""The PyTorch reference for `interplab toy grokking`: Nanda et al. 2023's setup with
TransformerLens' HookedTransformer (p = 113, 30% train, d_model 128, 4 heads of 32, d_mlp 512,
ReLU, no LayerNorm, biases frozen, full-batch AdamW lr 1e-3 wd 1 betas (0.9, 0.98), loss on the
last position in float64). Times EPOCHS training epochs (forward, backward, step on the training
set), and separately the per-epoch test-loss evaluation the paper's loop also runs. Prints one
JSON line.

    .venv-peer/bin/python scripts/train/grokking_torch.py --epochs 200 --threads 2
"""
import argparse
import json
import time

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--p", type=int, default=113)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    p = a.p
    cfg = HookedTransformerConfig(
        n_layers=1, n_heads=4, d_model=128, d_head=32, d_mlp=512, act_fn="relu",
        normalization_type=None, d_vocab=p + 1, d_vocab_out=p, n_ctx=3,
        init_weights=True, device="cpu", seed=999,
    )
    model = HookedTransformer(cfg)
    for name, param in model.named_parameters():
        if "b_" in name:
            param.requires_grad = False
    a_ = torch.arange(p).repeat_interleave(p)
    b_ = torch.arange(p).repeat(p)
    data = torch.stack([a_, b_, torch.full_like(a_, p)], dim=1)
    labels = (a_ + b_) % p
    g = torch.Generator().manual_seed(598)
    idx = torch.randperm(p * p, generator=g)
    cut = int(0.3 * p * p)
    tr, te = idx[:cut], idx[cut:]
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3,
                            weight_decay=1.0, betas=(0.9, 0.98))

    def loss_fn(logits, lab):
        logp = logits[:, -1].to(torch.float64).log_softmax(-1)
        return -logp.gather(-1, lab[:, None])[:, 0].mean()

    # Warm-up epoch (allocations, thread pool).
    loss_fn(model(data[tr]), labels[tr]).backward()
    opt.zero_grad()
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        loss = loss_fn(model(data[tr]), labels[tr])
        loss.backward()
        opt.step()
        opt.zero_grad()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(min(a.epochs, 50)):
            loss_fn(model(data[te]), labels[te])
    test_s = (time.perf_counter() - t0) / min(a.epochs, 50)
    print(json.dumps({"epochs": a.epochs, "train_s": train_s,
                      "s_per_1000_epochs": 1000 * train_s / a.epochs,
                      "test_eval_s_per_epoch": test_s, "final_train_loss": loss.item(),
                      "threads": a.threads, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
