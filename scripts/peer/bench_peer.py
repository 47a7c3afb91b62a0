#!/usr/bin/env python3
"""Peer benchmark: the Python numbers that `interplab bench` is compared with.

Model: SmolLM2-135M-Instruct from its GGUF (dequantised to f32 by transformers), CPU, f32.
Each measurement runs in its own subprocess so that peak-RSS figures do not contaminate
each other. Every measurement prints one JSON line; `--json OUT` writes them all.

Measurements
  hf_load_gguf          AutoModelForCausalLM.from_pretrained(dir, gguf_file=...) (+ tokenizer)
  hf_forward            transformers forward, batch x seq random token ids
  tl_forward            TransformerLens HookedTransformer forward, same tokens
  tl_run_with_cache     HookedTransformer.run_with_cache, every hook point (cache size reported)
  tl_patching_resid_pre transformer_lens.patching.get_act_patch_resid_pre on the IOI pair,
                        normalised logit-difference metric
  tl_head_detector      transformer_lens.head_detector.detect_head for the three head types on
                        4 repeated-random-token sequences, as a researcher calls it (strings)
  tl_head_detector_cached
                        the same scores, one run_with_cache (pattern hooks only) per sequence
                        shared by the three detectors
  hf_generate           transformers generate, greedy, KV cache, batch 1: a 16-token prompt
                        (the ids `interplab bench --what generate` uses) and exactly 128 new
                        tokens; tokens/s counts new tokens, prefill included in the time
  hf_generate_batch     the same with --batch prompts at once (no padding: equal lengths)
  torch_sgemm           torch.matmul GFLOP/s on each matrix product of one forward of
                        batch x seq tokens (the model's linear layers and the attention
                        products), and the roofline: the tokens/s a forward would reach if
                        every product ran at that rate and nothing else took time

  hf_train_step         one full fine-tuning step of the transformers model in train mode
                        (dropout 0 in this config): forward on batch x seq token ids with
                        labels = inputs (next-token cross-entropy), backward,
                        torch.optim.AdamW(lr 1e-5, weight decay 0, fused=True: PyTorch's own
                        fused kernel) step, zero_grad; tokens/s = batch x seq / median step

  hf_train_step_bf16    the same step with the forward and the loss under
                        torch.autocast("cpu", dtype=torch.bfloat16) (mixed precision: bf16
                        products, f32 weights, gradients and optimiser state): the peer of
                        `interplab bench --what finetune-bf16`

The HookedTransformer is configured by hand as a Llama model (HookedTransformer.from_pretrained
needs the hub config, which these machines cannot reach) and its weights are converted from the
transformers model with transformer_lens' own convert_llama_weights; no weight processing.

peak_rss_bytes is getrusage(RUSAGE_SELF).ru_maxrss of the worker process (load included);
peak_rss_measure_bytes is the VmHWM high-water mark after resetting it (/proc/self/clear_refs)
just before the warm-up, i.e. the peak while measuring.

Usage: .venv-peer/bin/python scripts/peer/bench_peer.py --gguf PATH --threads 2 --runs 5
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MEASUREMENTS = [
    "hf_load_gguf",
    "hf_forward",
    "hf_forward_bf16",
    "tl_forward",
    "tl_run_with_cache",
    "tl_patching_resid_pre",
    "tl_head_detector",
    "tl_head_detector_cached",
    "hf_generate",
    "hf_generate_batch",
    "torch_sgemm",
    "torch_bf16_gemm",
    "hf_train_step",
    "hf_train_step_bf16",
]

GENERATE_PROMPT, GENERATE_NEW = 16, 128  # as crates/lab/src/bench.rs

IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
IOI_ANSWER, IOI_WRONG = " Mary", " John"
HEAD_TYPES = ["previous_token_head", "duplicate_token_head", "induction_head"]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_REF = os.environ.get("INTERPLAB_SHARED_REF", "/work/shared/reference/smollm2")


# ---------------------------------------------------------------- memory helpers
def reset_peak_rss():
    """Reset the kernel's RSS high-water mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def proc_status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def ru_maxrss_bytes():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# ---------------------------------------------------------------- model helpers
def load_hf(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, f = os.path.split(os.path.abspath(args.gguf))
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    t1 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    t2 = time.perf_counter()
    return model, tok, t1 - t0, t2 - t1


def build_tl(hf_model, tok):
    """A HookedTransformer configured by hand as a Llama model, weights from the HF model."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    c = hf_model.config
    rope = getattr(c, "rope_parameters", None) or {}
    rotary_base = rope.get("rope_theta", getattr(c, "rope_theta", 100000.0))
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size,
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        n_key_value_heads=c.num_key_value_heads,
        d_head=d_head,
        d_mlp=c.intermediate_size,
        d_vocab=c.vocab_size,
        n_ctx=2048,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_base=int(rotary_base),
        rotary_adjacent_pairs=False,
        gated_mlp=True,
        final_rms=True,
        eps=1e-5,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
        device="cpu",
        dtype=torch.float32,
    )
    tl = HookedTransformer(cfg, tokenizer=tok, move_to_device=True)
    sd = convert_llama_weights(hf_model, cfg)
    tl.load_and_process_state_dict(
        sd,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    tl.eval()
    return tl


def random_tokens(args):
    import numpy as np
    import torch

    rng = np.random.default_rng(args.seed)
    ids = rng.integers(1000, 40000, size=(args.batch, args.seq_len), dtype=np.int64)
    return torch.from_numpy(ids)


def bench_token_ids(n):
    """crates/lab/src/bench.rs `bench_tokens`: a 64-bit LCG seeded 0x5eed, ids in [1000, 40000)."""
    state, out = 0x5EED, []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(1000 + (state >> 33) % 39000)
    return out


def model_products(c, tokens, seq):
    """(name, m, k, n, count) for every matrix product of one forward over `tokens` tokens in
    sequences of `seq`: each layer's q/k/v/o, gate/up/down projections, the attention scores
    and the pattern-times-values product (per head, full seq x seq as eager attention computes
    it), and the unembedding."""
    d = c.hidden_size
    n_heads = c.num_attention_heads
    n_kv = getattr(c, "num_key_value_heads", None) or n_heads
    d_head = getattr(c, "head_dim", None) or d // n_heads
    layers, vocab, d_mlp = c.num_hidden_layers, c.vocab_size, c.intermediate_size
    batch = tokens // seq
    return [
        ("q, o", tokens, d, n_heads * d_head, 2 * layers),
        ("k, v", tokens, d, n_kv * d_head, 2 * layers),
        ("gate, up", tokens, d, d_mlp, 2 * layers),
        ("down", tokens, d_mlp, d, layers),
        ("attn scores", seq, d_head, seq, batch * n_heads * layers),
        ("attn pattern @ v", seq, seq, d_head, batch * n_heads * layers),
        ("unembed", tokens, d, vocab, 1),
    ]


def sgemm_roofline(args, dtype=None):
    """torch.matmul GFLOP/s per product shape, and the forward roofline they imply (f32, or
    `dtype`: bf16 inputs and outputs, as torch runs them through oneDNN, on AMX where present)."""
    import torch
    from transformers import AutoConfig

    d, f = os.path.split(os.path.abspath(args.gguf))
    c = AutoConfig.from_pretrained(d, gguf_file=f)
    tokens = args.batch * args.seq_len
    rows, total_flops, total_time = [], 0.0, 0.0
    for name, m, k, n, count in model_products(c, tokens, args.seq_len):
        dt = dtype or torch.float32
        a = torch.randn(m, k, dtype=dt)
        b = torch.randn(k, n, dtype=dt)
        out = torch.empty(m, n, dtype=dt)
        # Repeat small products so that each timed call does at least ~20 MFLOP.
        reps = max(1, int(2e7 // (2 * m * k * n)))

        def mm():
            for _ in range(reps):
                torch.matmul(a, b, out=out)

        times = timed(mm, max(args.runs, 5), 2)
        rate = 2 * m * k * n * reps / min(times)
        flops = 2 * m * k * n * count
        total_flops += flops
        total_time += flops / rate
        rows.append({"product": name, "m": m, "k": k, "n": n, "count": count,
                     "gflop_per_s": rate / 1e9, "forward_share_of_flops": flops})
    for r in rows:
        r["forward_share_of_flops"] /= total_flops
    return {
        "products": rows,
        "forward_gflop": total_flops / 1e9,
        "sgemm_gflop_per_s": total_flops / total_time / 1e9,
        "roofline_tokens_per_s": tokens / total_time,
        "tokens": tokens,
        "note": "best of the timed runs per shape; the roofline counts matrix products only",
    }


def timed(fn, runs, warmup):
    LOADAVG.append(os.getloadavg()[0])
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    LOADAVG.append(os.getloadavg()[0])
    return times


LOADAVG = []  # 1-minute load average before and after the timed loop: other work shows here


def summary(name, times, args, **extra):
    med = statistics.median(times)
    out = {
        "name": name,
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "runs": len(times),
        "warmup": args.warmup,
        "times_s": times,
        "threads": args.threads,
        "loadavg_1m_before_after": list(LOADAVG),
    }
    out.update(extra)
    return out


def word_token_sequences(tok, n_seq, n_rand, seed):
    """n_seq sequences of n_rand random single-word tokens (ids in [1000, 40000)), each
    repeated twice, as strings that re-tokenize to exactly those ids (detect_head takes
    strings). BOS is prepended by the caller."""
    import numpy as np
    import re

    word = re.compile(r"^ [a-z]{3,}$")
    cands = []
    for i in range(1000, 40000):
        s = tok.decode([i])
        if word.match(s) and tok.encode(s, add_special_tokens=False) == [i]:
            cands.append(i)
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_seq):
        ids = [int(x) for x in rng.choice(cands, size=n_rand, replace=False)] * 2
        text = tok.decode(ids)
        assert tok.encode(text, add_special_tokens=False) == ids, "sequence does not round-trip"
        seqs.append((ids, text))
    return seqs


# ---------------------------------------------------------------- workers
def worker(name, args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res = {}

    if name in ("torch_sgemm", "torch_bf16_gemm"):
        dtype = torch.bfloat16 if name == "torch_bf16_gemm" else None
        res = {"name": name, "threads": args.threads, "batch": args.batch,
               "seq_len": args.seq_len, **sgemm_roofline(args, dtype)}
        res["peak_rss_bytes"] = ru_maxrss_bytes()
        return res

    if name == "hf_load_gguf":
        loads, tok_loads = [], []
        LOADAVG.append(os.getloadavg()[0])
        for i in range(args.load_runs):
            m, tok, lt, tt = load_hf(args)
            loads.append(lt)
            tok_loads.append(tt)
            del m, tok
        LOADAVG.append(os.getloadavg()[0])
        res = summary(
            name,
            loads,
            args,
            tokenizer_load_median_s=statistics.median(tok_loads),
            note="model load from GGUF incl. dequantisation to f32; file in page cache after the first run",
        )
        res["warmup"] = 0
        res["peak_rss_measure_bytes"] = None
        res["peak_rss_bytes"] = ru_maxrss_bytes()
        return res

    hf, tok, load_s, tok_s = load_hf(args)
    n_tok = args.batch * args.seq_len
    tokens = random_tokens(args)
    extra = {"batch": args.batch, "seq_len": args.seq_len, "load_s": load_s}

    if name in ("hf_train_step", "hf_train_step_bf16"):
        hf.train()
        opt = torch.optim.AdamW(hf.parameters(), lr=1e-5, weight_decay=0.0, fused=True)
        reset_peak_rss()
        bf16 = name == "hf_train_step_bf16"

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = hf(tokens, labels=tokens).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        times = timed(step, args.runs, args.warmup)
        res = summary(name, times, args, tokens_per_s=n_tok / statistics.median(times),
                      optimizer="torch.optim.AdamW(fused=True)", **extra)
    elif name in ("hf_forward", "hf_forward_bf16"):
        if name == "hf_forward_bf16":
            # Every weight in bf16 (torch's CPU matmuls then run through oneDNN, on AMX where
            # the CPU has it): the like-for-like peer of `interplab --dtype bf16`.
            hf = hf.to(torch.bfloat16)
        rss_loaded = proc_status_bytes("VmRSS")
        reset_peak_rss()

        def fwd():
            with torch.inference_mode():
                return hf(tokens).logits

        times = timed(fwd, args.runs, args.warmup)
        res = summary(name, times, args, tokens_per_s=n_tok / statistics.median(times),
                      attn_implementation=hf.config._attn_implementation, **extra)
        res["rss_after_load_bytes"] = rss_loaded
    elif name in ("hf_generate", "hf_generate_batch"):
        batch = 1 if name == "hf_generate" else args.batch
        ids = torch.tensor(bench_token_ids(batch * GENERATE_PROMPT)).reshape(batch, GENERATE_PROMPT)
        mask = torch.ones_like(ids)
        out = {}

        def gen():
            with torch.inference_mode():
                out["ids"] = hf.generate(
                    input_ids=ids, attention_mask=mask, do_sample=False,
                    max_new_tokens=GENERATE_NEW, min_new_tokens=GENERATE_NEW,
                    pad_token_id=tok.eos_token_id if tok.eos_token_id is not None else 0)

        times = timed(gen, args.runs, args.warmup)
        new = out["ids"].shape[1] - GENERATE_PROMPT
        assert new == GENERATE_NEW, f"generated {new} tokens"
        res = summary(name, times, args, tokens_per_s=batch * GENERATE_NEW / statistics.median(times),
                      batch=batch, prompt_tokens=GENERATE_PROMPT, new_tokens=GENERATE_NEW,
                      first_row_new_ids=out["ids"][0, GENERATE_PROMPT:].tolist(),
                      attn_implementation=hf.config._attn_implementation, load_s=load_s)
    else:
        t0 = time.perf_counter()
        tl = build_tl(hf, tok)
        build_s = time.perf_counter() - t0
        with torch.inference_mode():
            ids = tok(IOI_CLEAN, add_special_tokens=False, return_tensors="pt").input_ids
            tl_vs_hf = (tl(ids) - hf(ids).logits).abs().max().item()
        del hf
        import ctypes
        import gc

        gc.collect()
        try:  # hand the freed HF weights back to the OS so rss_after_load is TL's own
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        extra.update(tl_build_s=build_s, tl_vs_hf_max_abs_logit_diff=tl_vs_hf)
        rss_loaded = proc_status_bytes("VmRSS")
        reset_peak_rss()

        if name == "tl_forward":
            def fwd():
                with torch.inference_mode():
                    return tl(tokens)

            times = timed(fwd, args.runs, args.warmup)
            res = summary(name, times, args, tokens_per_s=n_tok / statistics.median(times), **extra)

        elif name == "tl_run_with_cache":
            info = {}

            def fwd():
                with torch.inference_mode():
                    logits, cache = tl.run_with_cache(tokens)
                info["n_hooks"] = len(cache)
                info["cache_bytes"] = sum(v.numel() * v.element_size() for v in cache.values())
                info["logits_bytes"] = logits.numel() * logits.element_size()
                del logits, cache

            times = timed(fwd, args.runs, args.warmup)
            res = summary(name, times, args, tokens_per_s=n_tok / statistics.median(times),
                          **info, **extra)

        elif name == "tl_patching_resid_pre":
            from transformer_lens import patching

            clean = tl.to_tokens(IOI_CLEAN, prepend_bos=False)
            corrupted = tl.to_tokens(IOI_CORRUPTED, prepend_bos=False)
            a = tl.to_single_token(IOI_ANSWER)
            w = tl.to_single_token(IOI_WRONG)
            with torch.inference_mode():
                clean_logits, clean_cache = tl.run_with_cache(clean)
                corrupted_logits = tl(corrupted)
            clean_ld = (clean_logits[0, -1, a] - clean_logits[0, -1, w]).item()
            corr_ld = (corrupted_logits[0, -1, a] - corrupted_logits[0, -1, w]).item()

            def metric(logits):
                return ((logits[0, -1, a] - logits[0, -1, w]) - corr_ld) / (clean_ld - corr_ld)

            out = {}

            def run():
                with torch.inference_mode():
                    out["r"] = patching.get_act_patch_resid_pre(tl, corrupted, clean_cache, metric)

            times = timed(run, args.runs, args.warmup)
            r = out["r"]
            n_fwd = r.numel()
            res = summary(name, times, args, result_shape=list(r.shape), forward_passes=n_fwd,
                          forwards_per_s=n_fwd / statistics.median(times),
                          clean_logit_diff=clean_ld, corrupted_logit_diff=corr_ld, **extra)
            ref = os.path.join(SHARED_REF, "tl_patching.safetensors")
            if os.path.exists(ref):
                from safetensors.torch import load_file

                res["vs_shared_reference_max_abs_diff"] = (
                    (load_file(ref)["resid_pre"] - r.float()).abs().max().item())

        elif name in ("tl_head_detector", "tl_head_detector_cached"):
            from transformer_lens import head_detector as hd

            seqs = word_token_sequences(tok, 4, args.head_seq_len, args.seed)
            bos = tok.bos_token_id
            texts = [t for _, t in seqs]
            out = {}

            if name == "tl_head_detector":
                def run():
                    out["scores"] = {h: hd.detect_head(tl, texts, h) for h in HEAD_TYPES}
                # default_prepend_bos=False: detect_head tokenizes without BOS unless told
                tl.cfg.default_prepend_bos = True
            else:
                toks = [torch.tensor([[bos] + ids]) for ids, _ in seqs]
                pats = [
                    {h: getattr(hd, f"get_{h}_detection_pattern")(t) for h in HEAD_TYPES}
                    for t in toks
                ]

                def run():
                    acc = {h: [] for h in HEAD_TYPES}
                    for (ids, text), t, p in zip(seqs, toks, pats):
                        with torch.inference_mode():
                            _, cache = tl.run_with_cache(
                                t, remove_batch_dim=True,
                                names_filter=lambda n: n.endswith("hook_pattern"))
                        for h in HEAD_TYPES:
                            acc[h].append(hd.detect_head(tl, text, p[h], cache=cache))
                    out["scores"] = {h: torch.stack(v).mean(0) for h, v in acc.items()}
                tl.cfg.default_prepend_bos = True

            times = timed(run, args.runs, args.warmup)
            top = {}
            for h, s in out["scores"].items():
                v, i = s.flatten().topk(3)
                top[h] = [[f"{int(j) // s.shape[1]}.{int(j) % s.shape[1]}", round(float(x), 4)]
                          for x, j in zip(v, i)]
            res = summary(name, times, args, sequences=4, seq_len=1 + 2 * args.head_seq_len,
                          head_types=HEAD_TYPES, top3=top, first_sequence_ids=[bos] + seqs[0][0],
                          **{k: v for k, v in extra.items() if k not in ("batch", "seq_len")})
        else:
            raise SystemExit(f"unknown measurement {name}")
        res["rss_after_load_bytes"] = rss_loaded

    res["peak_rss_measure_bytes"] = proc_status_bytes("VmHWM")
    res["peak_rss_bytes"] = ru_maxrss_bytes()
    return res


# ---------------------------------------------------------------- driver
def versions():
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for p in ["torch", "transformers", "transformer_lens", "numpy", "gguf"]:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="SmolLM2-135M-Instruct GGUF file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--load-runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--head-seq-len", type=int, default=50,
                    help="random tokens per half of a head-detector sequence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wait-quiet", type=float, default=None, metavar="LOAD",
                    help="before each measurement wait until the 1-minute load average is below LOAD")
    ap.add_argument("--wait-max", type=float, default=900, help="give up waiting after this many seconds")
    ap.add_argument("--only", nargs="*", choices=MEASUREMENTS, help="run only these measurements")
    ap.add_argument("--json", help="write all results (and the environment) to this file")
    ap.add_argument("--worker", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        res = worker(args.worker, args)
        print("RESULT " + json.dumps(res), flush=True)
        return

    env = dict(os.environ)
    for k in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"]:
        env[k] = str(args.threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("TQDM_DISABLE", "1")
    passthrough = [
        "--gguf", args.gguf, "--threads", str(args.threads), "--runs", str(args.runs),
        "--warmup", str(args.warmup), "--load-runs", str(args.load_runs),
        "--batch", str(args.batch), "--seq-len", str(args.seq_len),
        "--head-seq-len", str(args.head_seq_len), "--seed", str(args.seed),
    ]
    results = []
    for name in args.only or MEASUREMENTS:
        waited = 0.0
        if args.wait_quiet is not None:
            w0 = time.perf_counter()
            while os.getloadavg()[0] >= args.wait_quiet and time.perf_counter() - w0 < args.wait_max:
                time.sleep(5)
            waited = time.perf_counter() - w0
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name] + passthrough,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if p.returncode != 0 or not lines:
            res = {"name": name, "error": f"worker exited {p.returncode}",
                   "stderr_tail": p.stderr[-2000:]}
        else:
            res = json.loads(lines[-1][len("RESULT "):])
        res["process_wall_s"] = time.perf_counter() - t0
        res["waited_for_quiet_s"] = waited
        results.append(res)
        print(json.dumps(res), flush=True)

    if args.json:
        doc = {
            "benchmark": "interplab peer benchmark (scripts/peer/bench_peer.py)",
            "model": "SmolLM2-135M-Instruct Q4_1 GGUF, dequantised to f32 by transformers",
            "gguf": os.path.abspath(args.gguf),
            "tokens": f"numpy default_rng({args.seed}).integers(1000, 40000, ({args.batch}, {args.seq_len}))",
            "threads": args.threads,
            "runs": args.runs,
            "warmup": args.warmup,
            "versions": versions(),
            "cpu_count": os.cpu_count(),
            "niceness": os.nice(0),
            "results": results,
        }
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
