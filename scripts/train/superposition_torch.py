#!/usr/bin/env python3
"""PyTorch reference of `interplab toy superposition`'s computation, for timing: the Toy Models
of Superposition setup as in the paper's notebook (batched instances, ReLU output,
importance-weighted MSE averaged over batch and features, summed over instances, Adam lr 1e-3),
10 instances, n = 20, m = 5, batch 1024.

    /work/main/.venv-peer/bin/python scripts/train/superposition_torch.py --steps 10000 --threads 2
prints one JSON line: wall seconds, steps, represented features per instance.
"""
import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--m", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    k, n, m = a.instances, a.n, a.m
    sparsity = torch.tensor([0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999, 0.9, 0.99, 0.5][:k]).unsqueeze(1)
    prob = 1 - sparsity
    importance = (0.7 ** torch.arange(n)).unsqueeze(0)
    W = torch.nn.Parameter(torch.nn.init.xavier_normal_(torch.empty(k, m, n)))
    b = torch.nn.Parameter(torch.zeros(k, n))
    opt = torch.optim.AdamW([W, b], lr=1e-3, weight_decay=0.0)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        x = torch.rand(a.batch, k, n)
        x = torch.where(torch.rand(a.batch, k, n) <= prob, x, torch.zeros(()))
        h = torch.einsum("bkn,kmn->bkm", x, W)
        out = torch.relu(torch.einsum("bkm,kmn->bkn", h, W) + b)
        loss = (importance * (x - out) ** 2).mean(dim=(0, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    wall = time.perf_counter() - t0
    norms = W.detach().norm(dim=1)
    print(json.dumps({"name": "torch_superposition", "wall_s": wall, "steps": a.steps, "instances": k,
                      "represented": (norms > 0.5).sum(dim=1).tolist(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
