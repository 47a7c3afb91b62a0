#!/usr/bin/env python3
"""Peer benchmark for `interplab-sae` training: seconds per training step in PyTorch (CPU, f32).

    .venv-peer/bin/python scripts/peer/sae_bench.py --threads 2 --runs 5 [--arch topk,relu]
        [--impl saelens,saelens_bf16,reference]

Problem: d_in 576 → d_sae 4608, a batch of 4096 rows of N(0, 1) data, each row rescaled to norm
√576, k = 32 (topk, batchtopk). One step, for each implementation:

  saelens    SAELens' own training SAE class (StandardTrainingSAE / TopKTrainingSAE /
             BatchTopKTrainingSAE / JumpReLUTrainingSAE with their default configs, k = 32):
             training_forward_pass (forward, MSE, sparsity / AuxK loss), backward,
             clip_grad_norm_(1.0) as SAELens' trainer does, torch.optim.Adam step, zero_grad.
  saelens_bf16  the same under torch.autocast("cpu", bfloat16) around the forward pass, as SAELens'
             trainer does with `autocast=True` (bf16 products, f32 weights and optimiser); the
             peer of `interplab bench --what sae-…-bf16`.
  reference  scripts/reference/sae_train_reference.py's Trainer.step: the docs/sae.md step
             (forward, losses, backward, decoder-gradient projection, f64 global-norm clip,
             AdamW, decoder renormalisation, BatchTopK threshold).

--relu-l0 L adds `relu_sparse` measurements: the ReLU-L1 step in the state training reaches, where
each latent's b_enc is set so that it fires on L / 4608 of the batch's rows (its pre-activation minus
the (1 − L/4608) quantile over the batch: the row at index floor(n·(1 − L/4608)) ascending), as
`interplab bench --what sae-relu-sparse` does. Torch's dense step costs the same in any state; the
measurement shows it.

The dead-latent mask is empty in both unless --dead-frac is given (then that fraction of latents
is dead at every step, so AuxK runs). torch.set_num_threads(threads); 2 warm-up steps, then --runs
timed steps; the median. Prints `lscpu`'s Model name, then one JSON object on stdout.
--wait-quiet L waits before each measurement until the 1-minute load average is below L: with
two threads on two busy cores the timings mean little.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "reference"))

D_IN, D_SAE, B, K = 576, 4608, 4096, 32


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001
        pass
    return "?"


def time_steps(step, warmup, runs):
    for i in range(warmup):
        step(i)
    ts = []
    for i in range(runs):
        t0 = time.perf_counter()
        step(warmup + i)
        ts.append(time.perf_counter() - t0)
    return ts


def sparse_bias(b_enc, hidden_pre, l0):
    """b_enc shifted so that each latent fires on the l0 / d_sae fraction of rows with the largest
    pre-activation (the same rule as interplab's bench)."""
    import torch
    n, m = hidden_pre.shape
    at = min(int(n * (1.0 - l0 / m)), n - 1)
    q = torch.sort(hidden_pre, dim=0).values[at]
    return b_enc - q


def bench_saelens(arch, x, dead, warmup, runs, relu_l0=0, autocast=False):
    import contextlib
    import torch
    import sae_lens as sl
    from sae_lens.saes.sae import TrainStepInput
    if arch == "relu":
        sae = sl.StandardTrainingSAE(sl.StandardTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=5.0))
        coeffs = {"l1": 5.0}
    elif arch == "topk":
        sae = sl.TopKTrainingSAE(sl.TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
        coeffs = {}
    elif arch == "batchtopk":
        sae = sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
        coeffs = {}
    elif arch == "jumprelu":
        sae = sl.JumpReLUTrainingSAE(sl.JumpReLUTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, l0_coefficient=1.0))
        coeffs = {"l0": 1.0}
    else:
        raise ValueError(arch)
    sae.train()
    if relu_l0:
        with torch.no_grad():
            _, hidden_pre = sae.encode_with_hidden_pre(x)
            sae.b_enc.copy_(sparse_bias(sae.b_enc, hidden_pre, relu_l0))
    opt = torch.optim.Adam(sae.parameters(), lr=5e-5, betas=(0.9, 0.999))

    def step(i):
        # As SAELens' trainer with autocast=True: the forward pass under bf16 autocast, the
        # backward outside it (autograd replays each product in the dtype of its forward).
        ctx = torch.autocast(device_type="cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx:
            out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients=coeffs, dead_neuron_mask=dead,
                                                           n_training_steps=i, is_logging_step=False))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return float(out.loss)

    return time_steps(step, warmup, runs), {"saelens_version": sl.__version__,
                                            "config": {k: v for k, v in sae.cfg.to_dict().items() if k != "metadata"}}


def bench_reference(arch, x, dead_frac, warmup, runs, relu_l0=0):
    import torch
    import sae_train_reference as ref
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(D_SAE, D_IN, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True) * (0.1 if arch == "relu" else 1.0)
    init = {"W_enc": W_dec.T.contiguous(), "b_enc": torch.zeros(D_SAE), "W_dec": W_dec.contiguous(),
            "b_dec": x.mean(0)}
    if arch == "jumprelu":
        init["log_threshold"] = torch.full((D_SAE,), math.log(0.01))
    steps = 10 ** 9
    cfg = {"architecture": arch, "transcoder": False, "d_in": D_IN, "d_sae": D_SAE, "d_out": D_IN, "k": K,
           "batch_size": B, "steps": steps, "lr": 5e-5, "lr_warmup_steps": 0, "lr_decay_steps": 0,
           "sparsity_coefficient": 5.0 if arch == "relu" else 1.0, "sparsity_warmup_steps": 0,
           # dead_tokens = B: a latent is dead after one step without firing
           "dead_tokens": B if dead_frac > 0 else 10 ** 18, "aux_alpha": 1.0 / 32, "jumprelu_bandwidth": 0.05,
           "clip_grad": 1.0, "threshold_beta": 0.999, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_eps": 1e-8}
    tn = ref.Trainer(cfg, init)
    if relu_l0:
        with torch.no_grad():
            p = tn.m.p
            p["b_enc"].copy_(sparse_bias(p["b_enc"], tn.m.pre(x), relu_l0))
    n_dead = int(round(dead_frac * D_SAE))

    def step(i):
        if n_dead:
            tn.since.zero_()
            tn.since[:n_dead] = 1  # these latents count as dead at this step
        return tn.step(i, x, x)["loss"]

    return time_steps(step, warmup, runs), {}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--arch", default="topk,relu")
    ap.add_argument("--impl", default="saelens,reference")
    ap.add_argument("--dead-frac", type=float, default=0.0)
    ap.add_argument("--relu-l0", type=int, default=0,
                    help="also time the ReLU step in a state where this many latents fire per row")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="before each measurement wait (at most 30 min) until the 1-minute load average is below this")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch
    torch.set_num_threads(a.threads)
    model = cpu_model()
    print(f"CPU: {model}", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, D_IN, generator=g)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(D_IN)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[: int(round(a.dead_frac * D_SAE))] = True
    res = {"cpu_model": model, "threads": a.threads, "runs": a.runs, "warmup": a.warmup,
           "shape": {"d_in": D_IN, "d_sae": D_SAE, "batch": B, "k": K}, "dead_frac": a.dead_frac,
           "torch": torch.__version__, "loadavg_before": os.getloadavg()[0], "results": {}}
    cases = [(arch, 0) for arch in a.arch.split(",")]
    if a.relu_l0 and "relu" in a.arch.split(","):
        cases.append(("relu", a.relu_l0))
    for arch, relu_l0 in cases:
        name = "relu_sparse" if relu_l0 else arch
        for impl in a.impl.split(","):
            if a.wait_quiet > 0:
                t0 = time.time()
                while os.getloadavg()[0] >= a.wait_quiet and time.time() - t0 < 1800:
                    time.sleep(10)
            if impl in ("saelens", "saelens_bf16"):
                ts, extra = bench_saelens(arch, x, dead, a.warmup, a.runs, relu_l0, impl == "saelens_bf16")
            else:
                ts, extra = bench_reference(arch, x, a.dead_frac, a.warmup, a.runs, relu_l0)
            med = statistics.median(ts)
            r = {"median_s": med, "tokens_per_s": B / med, "times_s": ts, "loadavg_1m_after": os.getloadavg()[0],
                 "relu_l0": relu_l0, **extra}
            res["results"][f"{impl}.{name}"] = r
            print(f"{impl:9s} {name:11s} median {med:.3f} s/step  {B / med:,.0f} tokens/s", file=sys.stderr)
    res["loadavg_after"] = os.getloadavg()[0]
    print(f"Model name: {model}")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
