#!/usr/bin/env python3
"""Reference AdamW trajectory from torch.optim.AdamW, for crates/train/tests/optim.rs.

    /work/main/.venv-peer/bin/python scripts/train/adamw_reference.py
writes crates/train/tests/fixtures/adamw_reference.json: 5 parameters, 6 steps with fixed
gradients, lr 1e-2, betas (0.9, 0.98), eps 1e-8, weight decay 0.5, all in float32.
"""
import json
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
p0 = [0.5, -1.25, 2.0, 0.0, 3.5]
grads = [[0.1 * (i + 1) * (-1) ** (i + s) + 0.05 * s for i in range(5)] for s in range(6)]
p = torch.tensor(p0, dtype=torch.float32, requires_grad=True)
opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.5)
traj = []
for g in grads:
    opt.zero_grad()
    p.grad = torch.tensor(g, dtype=torch.float32)
    opt.step()
    traj.append(p.detach().tolist())
out = os.path.join(ROOT, "crates", "train", "tests", "fixtures", "adamw_reference.json")
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "p0": p0, "grads": grads, "params": traj,
               "lr": 1e-2, "betas": [0.9, 0.98], "eps": 1e-8, "weight_decay": 0.5}, f, indent=1)
print("wrote", out)
