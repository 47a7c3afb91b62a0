#!/usr/bin/env python3
"""Plain-PyTorch (float32) reference trainer for `interplab-sae`, written to docs/sae.md.

    python scripts/reference/sae_train_reference.py RUN_DIR
    python scripts/reference/sae_train_reference.py --selftest    # random RUN_DIRs in /tmp, 20 steps each,
                                                                  # then a one-batch check against SAELens

Not SAELens' trainer: every step follows docs/sae.md §Training literally; autograd does the
backward pass, with JumpReLU's straight-through estimator as torch.autograd.Functions.
Needs torch, safetensors, numpy (the peer venv or .venv-sae).

Inputs in RUN_DIR (written by the Rust side)
--------------------------------------------
config.json        {"architecture": "relu"|"topk"|"batchtopk"|"jumprelu", "transcoder": bool,
                    "d_in", "d_sae", "d_out", "k", "batch_size", "steps", "lr",
                    "lr_warmup_steps", "lr_decay_steps", "sparsity_coefficient",
                    "sparsity_warmup_steps", "dead_tokens", "aux_alpha", "jumprelu_bandwidth",
                    "clip_grad", "threshold_beta", "adam_beta1", "adam_beta2", "adam_eps"}
init.safetensors   W_enc [d_in,d_sae], b_enc [d_sae], W_dec [d_sae,d_out], b_dec [d_out]
                   (+ log_threshold [d_sae] for jumprelu), f32
train.safetensors  x [N,d_in] (+ y [N,d_out] for a transcoder; an SAE's target is x)
heldout.safetensors  x (+ y)

Outputs
-------
reference.json     {"loss", "mse", "sparsity", "aux": one value per step (this step's forward,
                    before its update), "dead": |D| used at each step, "lr": lr(t),
                    "lambda": λ(t), "theta": batchtopk's θ after each step (batchtopk only),
                    "heldout": {"fvu", "l0", "n"}}
reference_final.safetensors  the tensor names of init (+ threshold [d_sae] = θ for batchtopk)

Conventions (the Rust side must match these; the docs leave them open)
---------------------------------------------------------------------
Batch t (from 0): rows (t·B + j) mod N, j = 0..B−1, no shuffling.
Encode: pre = (x − b_dec)·W_enc + b_enc for an SAE, x·W_enc + b_enc for a transcoder.
  relu       f = relu(pre)
  topk       the k largest pre of each row, then ReLU (torch.topk; ties are measure-zero)
  batchtopk  r = relu(pre); keep the k·B largest entries of r over the whole [B, d_sae] batch
  jumprelu   f = pre·H(pre − θ), θ = exp(log_threshold), H(u) = [u > 0]
Losses: mse = mean_b Σ_j (ŷ − y)²; total loss = mse + sparsity + aux.
  relu      sparsity = λ(t)·mean_b Σ_i f_bi·‖W_dec[i]‖ (gradient flows into W_dec's norms too)
  jumprelu  sparsity = λ(t)·mean_b Σ_i H(pre_bi − θ_i)
  topk, batchtopk: sparsity = 0; AuxK below; relu, jumprelu: aux = 0.
Dead latents: an integer counter c_i per latent, 0 at the start. The dead set used at step t is
  D = {i : c_i·B ≥ dead_tokens}, taken from the counters as they stand before step t (so at
  step 0 nothing is dead when dead_tokens ≥ 1). After step t's forward, c_i ← c_i + 1, and
  c_i ← 0 for every latent that fired (training-form f_bi > 0) on at least one row of the batch.
AuxK (topk, batchtopk, only when |D| > 0): h = d_in // 2 (integer, of the encoder input
  dimension, as SAELens); k_aux = min(h, |D|); e = y − ŷ detached; a = ReLU of the k_aux largest
  pre among D per row (scattered into a [B, d_sae] zero matrix; gradient flows to pre);
  ê = a·W_dec (no bias); aux = aux_alpha · min(|D| / h, 1) · mean_b ‖ê_b − e_b‖².
JumpReLU STE (rectangle kernel K(u) = [−½ < u < ½], bandwidth ε): ∂f/∂pre = H(pre − θ),
  ∂f/∂θ = −(θ/ε)·K((pre − θ)/ε), ∂H/∂pre = 0, ∂H/∂θ = −(1/ε)·K((pre − θ)/ε); autograd
  applies θ = exp(log_threshold).
After backward, for topk/batchtopk/jumprelu: g_i ← g_i − (g_i·w_i / w_i·w_i)·w_i for every
  decoder row w_i (the parallel component, exact even if ‖w_i‖ ≠ 1).
Clipping: n = √(Σ g²) over every parameter's gradient, in f64; if clip_grad > 0 and
  n > clip_grad every gradient is multiplied by clip_grad / n (no ε, unlike torch's +1e-6).
AdamW (torch.optim.AdamW, weight_decay 0, bias-corrected, ε outside the square root) with
  lr(t) = lr · w(t) · d(t), w(t) = min(1, (t+1)/lr_warmup_steps) (1 if 0 warm-up steps),
  d(t) = 1 for t < T − D, (T − t)/D for t ≥ T − D (T = steps, D = lr_decay_steps): the last
  step uses lr·1/D, never 0 (this is SAELens' constant schedule with linear decay).
  λ(t) = λ · min(1, (t+1)/sparsity_warmup_steps) (λ if 0).
After the optimiser step, for topk/batchtopk/jumprelu: w_i ← w_i / ‖w_i‖.
BatchTopK: m = the smallest positive value kept in this step's forward (no update if none);
  θ ← m at the first update, θ ← β_θ·θ + (1 − β_θ)·m afterwards, θ held in f64 and saved as
  f32 `threshold` [d_sae] (every entry θ).
Held-out metrics (f32 forward, f64 sums): inference codes (batchtopk: pre·[pre > θ]),
  fvu = Σ_b ‖y_b − ŷ_b‖² / Σ_b ‖y_b − ȳ‖² with ȳ the held-out mean of the targets,
  l0 = mean number of nonzero codes per row.
"""
import argparse
import json
import math
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file, save_file

UNIT_NORM = ("topk", "batchtopk", "jumprelu")


def rect(u):
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFn(torch.autograd.Function):
    """f = pre·H(pre − θ); ∂f/∂pre = H(pre − θ), ∂f/∂θ = −(θ/ε)·K((pre − θ)/ε)."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_pre = g * (pre > theta).to(pre.dtype)
        g_theta = (g * (-(theta / eps)) * rect((pre - theta) / eps)).sum(0)
        return g_pre, g_theta, None


class StepFn(torch.autograd.Function):
    """H(pre − θ); ∂H/∂pre = 0, ∂H/∂θ = −(1/ε)·K((pre − θ)/ε)."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_theta = (g * (-1.0 / eps) * rect((pre - theta) / eps)).sum(0)
        return torch.zeros_like(pre), g_theta, None


def topk_rows(pre, k):
    vals, idx = torch.topk(pre, k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


def batchtopk(pre, k):
    r = pre.relu()
    flat = r.flatten()
    vals, idx = torch.topk(flat, k * pre.shape[0])
    return torch.zeros_like(flat).scatter(-1, idx, vals).reshape(pre.shape), vals


def lr_factor(t, cfg):
    w = cfg["lr_warmup_steps"]
    warm = min(1.0, (t + 1) / w) if w > 0 else 1.0
    T, D = cfg["steps"], cfg["lr_decay_steps"]
    dec = 1.0 if (D <= 0 or t < T - D) else (T - t) / D
    return warm * dec


def lam(t, cfg):
    w = cfg["sparsity_warmup_steps"]
    return cfg["sparsity_coefficient"] * (min(1.0, (t + 1) / w) if w > 0 else 1.0)


class Model:
    def __init__(self, cfg, init):
        self.cfg = cfg
        self.arch = cfg["architecture"]
        self.transcoder = bool(cfg.get("transcoder", False))
        names = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["log_threshold"] if self.arch == "jumprelu" else [])
        self.names = names
        self.p = {n: init[n].to(torch.float32).clone().requires_grad_(True) for n in names}
        d_in, d_sae, d_out = cfg["d_in"], cfg["d_sae"], cfg["d_out"]
        want = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_out), "b_dec": (d_out,),
                "log_threshold": (d_sae,)}
        for n in names:
            assert tuple(self.p[n].shape) == want[n], f"{n}: {tuple(self.p[n].shape)} != {want[n]}"
        if not self.transcoder:
            assert d_in == d_out, "an SAE has d_out = d_in"
        self.theta = None  # batchtopk, f64 python float

    def pre(self, x):
        p = self.p
        xin = x if self.transcoder else x - p["b_dec"]
        return xin @ p["W_enc"] + p["b_enc"]

    def decode(self, f):
        return f @ self.p["W_dec"] + self.p["b_dec"]

    def encode_train(self, x):
        """(pre, f, kept values for batchtopk or None)."""
        pre = self.pre(x)
        a, cfg = self.arch, self.cfg
        kept = None
        if a == "relu":
            f = pre.relu()
        elif a == "topk":
            f = topk_rows(pre, cfg["k"])
        elif a == "batchtopk":
            f, kept = batchtopk(pre, cfg["k"])
        elif a == "jumprelu":
            theta = self.p["log_threshold"].exp()
            f = JumpReLUFn.apply(pre, theta, cfg["jumprelu_bandwidth"])
        else:
            raise ValueError(f"unknown architecture {a}")
        return pre, f, kept

    @torch.no_grad()
    def encode_infer(self, x):
        pre = self.pre(x)
        a = self.arch
        if a == "relu":
            return pre.relu()
        if a == "topk":
            return topk_rows(pre, self.cfg["k"])
        if a == "batchtopk":
            th = torch.tensor(self.theta if self.theta is not None else 0.0, dtype=torch.float32)
            return pre * (pre > th).to(pre.dtype)
        theta = self.p["log_threshold"].exp()
        return pre * (pre > theta).to(pre.dtype)


def losses(m, x, y, dead, lam_t):
    """Steps 1-2: forward, mse, sparsity, AuxK. Returns (loss, mse, sparsity, aux, pre, f, kept)."""
    cfg, arch = m.cfg, m.arch
    pre, f, kept = m.encode_train(x)
    yhat = m.decode(f)
    mse = (yhat - y).pow(2).sum(-1).mean()
    if arch == "relu":
        sparsity = lam_t * (f * m.p["W_dec"].norm(dim=1)).sum(-1).mean()
    elif arch == "jumprelu":
        theta = m.p["log_threshold"].exp()
        sparsity = lam_t * StepFn.apply(pre, theta, cfg["jumprelu_bandwidth"]).sum(-1).mean()
    else:
        sparsity = torch.zeros((), dtype=torch.float32)
    aux = torch.zeros((), dtype=torch.float32)
    n_dead = int(dead.sum())
    h = cfg["d_in"] // 2
    if arch in ("topk", "batchtopk") and n_dead > 0 and h > 0:
        k_aux = min(h, n_dead)
        e = (y - yhat).detach()
        masked = torch.where(dead[None, :], pre, torch.full_like(pre, -math.inf))
        vals, ii = torch.topk(masked, k_aux, dim=-1)
        a = torch.zeros_like(pre).scatter(-1, ii, vals.relu())
        ehat = a @ m.p["W_dec"]
        aux = cfg["aux_alpha"] * min(n_dead / h, 1.0) * (ehat - e).pow(2).sum(-1).mean()
    return mse + sparsity + aux, mse, sparsity, aux, pre, f, kept


def rows(t, B, N):
    return (t * B + torch.arange(B)) % N


class Trainer:
    """The model, AdamW state, dead-latent counters and BatchTopK threshold; step(t, x, y) is one
    training step of docs/sae.md §Training."""

    def __init__(self, cfg, init):
        cfg.setdefault("d_out", cfg["d_in"])
        self.cfg = cfg
        self.m = Model(cfg, init)
        self.params = [self.m.p[n] for n in self.m.names]
        self.opt = torch.optim.AdamW(self.params, lr=cfg["lr"], betas=(cfg["adam_beta1"], cfg["adam_beta2"]),
                                     eps=cfg["adam_eps"], weight_decay=0.0, foreach=False)
        self.since = torch.zeros(cfg["d_sae"], dtype=torch.int64)  # steps since each latent last fired

    def step(self, t, x, y):
        cfg, m, arch, B = self.cfg, self.m, self.m.arch, x.shape[0]
        dead = self.since * B >= cfg["dead_tokens"]
        n_dead = int(dead.sum())
        lam_t = lam(t, cfg)
        # 1-2. forward, losses
        loss, mse, sparsity, aux, pre, f, kept = losses(m, x, y, dead, lam_t)
        # dead-latent counters, after the forward
        with torch.no_grad():
            fired = (f > 0).any(0)
            self.since += 1
            self.since[fired] = 0
        # 3. backward (STE inside the autograd Functions)
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        with torch.no_grad():
            # 4. remove the decoder gradient's component parallel to each row
            if arch in UNIT_NORM:
                W, G = m.p["W_dec"], m.p["W_dec"].grad
                G -= ((G * W).sum(1, keepdim=True) / (W * W).sum(1, keepdim=True)) * W
            # 5. global norm clipping, norm in f64
            if cfg["clip_grad"] > 0:
                total = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in self.params))
                if total > cfg["clip_grad"]:
                    s = cfg["clip_grad"] / total
                    for p in self.params:
                        p.grad.mul_(s)
            # 6. AdamW at lr(t)
            lr_t = cfg["lr"] * lr_factor(t, cfg)
            for g in self.opt.param_groups:
                g["lr"] = lr_t
        self.opt.step()
        with torch.no_grad():
            # 7. renormalise decoder rows
            if arch in UNIT_NORM:
                W = m.p["W_dec"]
                W /= W.norm(dim=1, keepdim=True)
            # 8. BatchTopK threshold
            if arch == "batchtopk":
                pos = kept[kept > 0]
                if pos.numel() > 0:
                    mm = float(pos.min())
                    m.theta = mm if m.theta is None else (
                        cfg["threshold_beta"] * m.theta + (1.0 - cfg["threshold_beta"]) * mm)
        return {"loss": loss.item(), "mse": mse.item(), "sparsity": sparsity.item(), "aux": aux.item(),
                "dead": n_dead, "lr": lr_t, "lambda": lam_t}


def train(run_dir, quiet=False):
    with open(os.path.join(run_dir, "config.json")) as fh:
        cfg = json.load(fh)
    init = load_file(os.path.join(run_dir, "init.safetensors"))
    tr = load_file(os.path.join(run_dir, "train.safetensors"))
    ho = load_file(os.path.join(run_dir, "heldout.safetensors"))
    tn = Trainer(cfg, init)
    m, arch, d_sae = tn.m, tn.m.arch, cfg["d_sae"]
    X = tr["x"].to(torch.float32)
    Y = tr["y"].to(torch.float32) if m.transcoder else X
    N, B, T = X.shape[0], cfg["batch_size"], cfg["steps"]
    log = {k: [] for k in ("loss", "mse", "sparsity", "aux", "dead", "lr", "lambda")}
    if arch == "batchtopk":
        log["theta"] = []
    for t in range(T):
        idx = rows(t, B, N)
        r = tn.step(t, X[idx], Y[idx])
        for k2, v in r.items():
            log[k2].append(v)
        if arch == "batchtopk":
            log["theta"].append(m.theta)
        if not quiet and (t % max(1, T // 10) == 0 or t == T - 1):
            print(f"step {t:5d} loss {r['loss']:.6g} mse {r['mse']:.6g} "
                  f"sparsity {r['sparsity']:.6g} aux {r['aux']:.6g} dead {r['dead']}")
    # held-out metrics
    hx = ho["x"].to(torch.float32)
    hy = ho["y"].to(torch.float32) if m.transcoder else hx
    with torch.no_grad():
        f = m.encode_infer(hx)
        yhat = m.decode(f)
        num = (hy.double() - yhat.double()).pow(2).sum()
        ybar = hy.double().mean(0)
        den = (hy.double() - ybar).pow(2).sum()
        fvu = float(num / den)
        l0 = float((f != 0).double().sum(-1).mean())
    log["heldout"] = {"fvu": fvu, "l0": l0, "n": int(hx.shape[0])}
    log["generated_by"] = "scripts/reference/sae_train_reference.py"
    log["versions"] = {"torch": torch.__version__}
    with open(os.path.join(run_dir, "reference.json"), "w") as fh:
        json.dump(log, fh)
    out = {n: m.p[n].detach().contiguous().clone() for n in m.names}
    if arch == "batchtopk":
        out["threshold"] = torch.full((d_sae,), m.theta if m.theta is not None else 0.0, dtype=torch.float32)
    save_file(out, os.path.join(run_dir, "reference_final.safetensors"))
    if not quiet:
        print(f"heldout fvu {fvu:.6g} l0 {l0:.4g}; wrote {run_dir}/reference.json, reference_final.safetensors")
    return log


def make_run_dir(path, arch, transcoder, seed=0, steps=20):
    """A random RUN_DIR initialised as docs/sae.md says (b_dec = mean instead of the geometric median)."""
    g = torch.Generator().manual_seed(seed)
    d_in, d_sae, B, N = 16, 64, 32, 256
    d_out = 12 if transcoder else d_in
    k = 4
    x = torch.randn(N, d_in, generator=g) * 2.0 + 0.5
    heldout_x = torch.randn(128, d_in, generator=g) * 2.0 + 0.5
    mix = torch.randn(d_in, d_out, generator=g) / math.sqrt(d_in)
    tr = {"x": x}
    ho = {"x": heldout_x}
    if transcoder:
        tr["y"] = (x @ mix).relu().contiguous()
        ho["y"] = (heldout_x @ mix).relu().contiguous()
    norm = 0.1 if arch == "relu" else 1.0
    W_dec = torch.randn(d_sae, d_out, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True) * norm
    W_enc = (W_dec.T.clone() if not transcoder else torch.randn(d_in, d_sae, generator=g) / math.sqrt(d_in)).contiguous()
    init = {"W_enc": W_enc, "b_enc": torch.zeros(d_sae), "W_dec": W_dec.contiguous(),
            "b_dec": (tr["y"] if transcoder else x)[:64].mean(0).contiguous()}
    if arch == "jumprelu":
        init["log_threshold"] = torch.full((d_sae,), math.log(0.01))
    cfg = {"architecture": arch, "transcoder": transcoder, "d_in": d_in, "d_sae": d_sae, "d_out": d_out,
           "k": k, "batch_size": B, "steps": steps, "lr": 4e-3, "lr_warmup_steps": 5, "lr_decay_steps": 4,
           "sparsity_coefficient": 0.5 if arch == "relu" else 0.05, "sparsity_warmup_steps": 6,
           "dead_tokens": 3 * B, "aux_alpha": 1.0 / 32, "jumprelu_bandwidth": 0.05, "clip_grad": 1.0,
           "threshold_beta": 0.9, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_eps": 1e-8}
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1)
    save_file(init, os.path.join(path, "init.safetensors"))
    save_file(tr, os.path.join(path, "train.safetensors"))
    save_file(ho, os.path.join(path, "heldout.safetensors"))


def crosscheck_saelens(seed=1):
    """One batch through this file's losses and through SAELens' training SAE classes with the same
    weights (rescale_acts_by_decoder_norm off, coefficients fixed): losses and every gradient
    must agree. AuxK is compared on a batch where the dead latents' top pre-activations are
    positive, since SAELens applies no ReLU to the AuxK activations (docs/sae.md does)."""
    import warnings
    warnings.filterwarnings("ignore")
    import sae_lens as sl
    from sae_lens.saes.sae import TrainStepInput
    g = torch.Generator().manual_seed(seed)
    d_in, d_sae, B, k, lam_v, eps, alpha = 16, 64, 32, 4, 0.3, 0.05, 1.0 / 32
    ok = True
    for arch in ("relu", "topk", "batchtopk", "jumprelu"):
        x = torch.randn(B, d_in, generator=g) * 2.0
        W_dec = torch.randn(d_sae, d_in, generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        init = {"W_enc": W_dec.T.contiguous() * 0.7, "b_enc": torch.randn(d_sae, generator=g) * 0.1,
                "W_dec": W_dec * (0.5 if arch == "relu" else 1.0), "b_dec": torch.randn(d_in, generator=g) * 0.2,
                "log_threshold": torch.log(0.2 + 0.5 * torch.rand(d_sae, generator=g))}
        dead = torch.rand(d_sae, generator=g) < 0.4
        if arch in ("topk", "batchtopk"):
            init["b_enc"][dead] += 6.0
        cfg = {"architecture": arch, "transcoder": False, "d_in": d_in, "d_sae": d_sae, "d_out": d_in, "k": k,
               "aux_alpha": alpha, "jumprelu_bandwidth": eps}
        if arch != "jumprelu":
            del init["log_threshold"]
        m = Model(cfg, init)
        loss, mse, sp, aux, pre, f, kept = losses(m, x, x, dead, lam_v)
        loss.backward()
        common = dict(d_in=d_in, d_sae=d_sae, decoder_init_norm=None)
        if arch == "relu":
            ref = sl.StandardTrainingSAE(sl.StandardTrainingSAEConfig(**common, l1_coefficient=lam_v))
            coeffs = {"l1": lam_v}
        elif arch == "topk":
            ref = sl.TopKTrainingSAE(sl.TopKTrainingSAEConfig(**common, k=k, rescale_acts_by_decoder_norm=False,
                                                              aux_loss_coefficient=alpha))
            coeffs = {}
        elif arch == "batchtopk":
            ref = sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(
                **common, k=k, rescale_acts_by_decoder_norm=False, aux_loss_coefficient=alpha, topk_threshold_lr=1.0))
            coeffs = {}
        else:
            ref = sl.JumpReLUTrainingSAE(sl.JumpReLUTrainingSAEConfig(**common, jumprelu_bandwidth=eps,
                                                                      l0_coefficient=lam_v))
            coeffs = {"l0": lam_v}
        with torch.no_grad():
            for n in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(ref, n).data.copy_(init[n])
            if arch == "jumprelu":
                ref.threshold.data.copy_(init["log_threshold"].exp())
        out = ref.training_forward_pass(TrainStepInput(sae_in=x, coefficients=coeffs, dead_neuron_mask=dead,
                                                       n_training_steps=0, is_logging_step=False))
        out.loss.backward()
        rl = {k2: float(v) for k2, v in out.losses.items()}
        mine_aux = float(sp) if arch in ("relu", "jumprelu") else float(aux)
        ref_aux = sum(v for k2, v in rl.items() if k2 != "mse_loss")
        checks = [("loss", float(loss), float(out.loss)), ("mse", float(mse), rl["mse_loss"]),
                  ("sparsity/aux", mine_aux, ref_aux)]
        for n in ("W_enc", "b_enc", "W_dec", "b_dec"):
            checks.append((f"d{n}", m.p[n].grad, getattr(ref, n).grad))
        if arch == "jumprelu":
            checks.append(("dlog_threshold", m.p["log_threshold"].grad, ref.threshold.grad * init["log_threshold"].exp()))
        if arch == "batchtopk":
            checks.append(("m", float(kept[kept > 0].min()), float(ref.topk_threshold)))
        worst = 0.0
        for name, a, b in checks:
            a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
            rel = float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
            worst = max(worst, rel)
            if rel > 1e-5:
                ok = False
                print(f"    {arch} {name}: relative difference {rel:.3e}")
        print(f"{'ok ' if worst <= 1e-5 else 'BAD'} SAELens cross-check {arch:9s}: loss {float(loss):.6g} "
              f"(sparsity/aux {mine_aux:.4g}, {int(dead.sum())} dead), "
              f"worst relative difference over loss/mse/sparsity/aux/gradients {worst:.2e}")
    return ok


def selftest():
    base = tempfile.mkdtemp(prefix="sae_ref_selftest_")
    ok = True
    cases = [(a, False) for a in ("relu", "topk", "batchtopk", "jumprelu")] + [("topk", True), ("jumprelu", True)]
    for arch, tc in cases:
        d = os.path.join(base, f"{arch}{'_transcoder' if tc else ''}")
        make_run_dir(d, arch, tc)
        log = train(d, quiet=True)
        finite = all(math.isfinite(v) for v in log["loss"])
        dead_seen = max(log["dead"])
        aux_seen = max(log["aux"])
        good = finite and math.isfinite(log["heldout"]["fvu"]) and len(log["loss"]) == 20
        if arch in UNIT_NORM:
            w = load_file(os.path.join(d, "reference_final.safetensors"))["W_dec"]
            good &= bool(torch.allclose(w.norm(dim=1), torch.ones(w.shape[0]), atol=1e-5))
        ok &= good
        print(f"{'ok ' if good else 'BAD'} {arch:9s} transcoder={tc!s:5s} loss {log['loss'][0]:.4g} -> "
              f"{log['loss'][-1]:.4g}  max dead {dead_seen:2d}  max aux {aux_seen:.3g}  "
              f"heldout fvu {log['heldout']['fvu']:.4f} l0 {log['heldout']['l0']:.2f}"
              + (f"  theta {log['theta'][-1]:.4g}" if arch == "batchtopk" else ""))
    print(f"self-test run dirs under {base}")
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        print("sae_lens not installed: SAELens cross-check skipped")
    else:
        ok &= crosscheck_saelens()
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.selftest:
        sys.exit(selftest())
    if not a.run_dir:
        ap.error("RUN_DIR or --selftest")
    train(a.run_dir, quiet=a.quiet)


if __name__ == "__main__":
    main()
