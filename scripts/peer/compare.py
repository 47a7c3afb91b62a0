#!/usr/bin/env python3
"""Run `interplab bench` and the Python peer benchmark in one go, on the same machine, and print
the ratios the foundation and speed issues ask for, with the CPU model and flags and the sgemm
roofline (torch.matmul on the forward's own shapes) so that every figure is also a fraction of the
machine's limit. Needs the peer venv (scripts/peer/setup_venv.sh) and a release build
(cargo build --release -p interplab-cli).

    .venv-peer/bin/python scripts/peer/compare.py --threads 2 --runs 5 --json compare.json
    .venv-peer/bin/python scripts/peer/compare.py --model qwen2.5-coder-0.5b --runs 3
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def interplab(args, threads, runs, what="load,forward,cache,forward-q,cache-q", model="smollm2-135m"):
    exe = os.path.join(ROOT, "target", "release", "interplab")
    cmd = [exe, "--threads", str(threads), "bench", model, "--runs", str(runs), "--what", what]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {r["name"]: r for r in (json.loads(l) for l in out.splitlines() if l.strip())}


def gguf_path(model="smollm2-135m"):
    exe = os.path.join(ROOT, "target", "release", "interplab")
    out = subprocess.run([exe, "fetch", model], check=True, capture_output=True, text=True).stdout
    return next(w for w in out.split() if w.endswith(".gguf"))


def peer(threads, runs, gguf, only=("hf_load_gguf", "hf_forward", "tl_forward", "tl_run_with_cache")):
    tmp = os.path.join(ROOT, "target", "peer.json")
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "peer", "bench_peer.py"), "--gguf", gguf,
           "--threads", str(threads), "--runs", str(runs), "--json", tmp, "--only", *only]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(tmp) as f:
        data = json.load(f)
    rows = data["results"] if isinstance(data, dict) else data
    out = {r["name"]: r for r in rows}
    failed = [f"{n}: {r['error']}\n{r.get('stderr_tail', '')}" for n, r in out.items() if "error" in r]
    if failed:
        sys.exit("peer benchmark failed:\n" + "\n".join(failed))
    return out


FLAGS = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
         "amx_tile", "amx_bf16", "amx_int8"]


def cpu():
    """The CPU model (lscpu's `Model name`) and the SIMD flags that matter to the kernels."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cpus": os.cpu_count(), "flags": [f for f in FLAGS if f in flags]}


def table(lines):
    print(f"{'measure':34} {'interplab':>12} {'peer':>12}  ratio")
    for name, o, p, what, r in lines:
        if o is None:
            print(name)
            continue
        print(f"{name:34} {o:12.3f} {p:12.3f}  {r:.2f} {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--model", default="smollm2-135m",
                    help="for another model (qwen2.5-coder-0.5b) only transformers is compared: "
                         "forward, generate and the sgemm roofline")
    ap.add_argument("--suite", choices=["foundation", "analysis"], default="foundation",
                    help="foundation: load/forward/cache/generate and the sgemm roofline (issues 2 "
                         "and 13); analysis: the resid_pre patching sweep and the head detector (issue 3)")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                    help="bf16: `interplab --dtype bf16` forward and run_with_cache against the f32 "
                         "peers and against transformers with bf16 weights, and the bf16 gemm roofline")
    a = ap.parse_args()
    info = cpu()
    print(f"CPU: {info['model']} ({info['cpus']} CPUs; {' '.join(info['flags'])}); threads {a.threads}")
    if a.suite == "analysis":
        return analysis(a)
    gguf = gguf_path(a.model)
    if a.dtype == "bf16":
        return bf16(a, gguf)
    if a.model == "smollm2-135m":
        ours = interplab(a, a.threads, a.runs, what="load,forward,cache,forward-q,cache-q,"
                         "generate,generate-q,generate-batch,generate-batch-q")
        theirs = peer(a.threads, a.runs, gguf, only=("hf_load_gguf", "hf_forward", "tl_forward",
                      "tl_run_with_cache", "hf_generate", "hf_generate_batch", "torch_sgemm"))
    else:
        ours = interplab(a, a.threads, a.runs, model=a.model,
                         what="forward,generate,generate-q,generate-batch-q")
        theirs = peer(a.threads, a.runs, gguf, only=("hf_forward", "hf_generate", "torch_sgemm"))
    f, hf = ours["interplab_forward"], theirs["hf_forward"]
    sg = theirs["torch_sgemm"]
    rss = lambda r: r.get("peak_rss_bytes") or 0
    gen = lambda o, p, what: (what, o["tokens_per_s"], p["tokens_per_s"], "x transformers generate",
                              o["tokens_per_s"] / p["tokens_per_s"])
    our_gflops = sg["forward_gflop"] * f["tokens_per_s"] / sg["tokens"]
    lines = [
        ("forward tokens/s", f["tokens_per_s"], hf["tokens_per_s"], "x transformers", f["tokens_per_s"] / hf["tokens_per_s"]),
        ("forward GFLOP/s vs torch sgemm", our_gflops, sg["sgemm_gflop_per_s"], "of the sgemm roofline",
         f["tokens_per_s"] / sg["roofline_tokens_per_s"]),
    ]
    if a.model == "smollm2-135m":
        c, ld = ours["interplab_run_with_cache"], ours["interplab_load"]
        fq, cq = ours["interplab_forward_quantized"], ours["interplab_run_with_cache_quantized"]
        tl, tlc = theirs["tl_forward"], theirs["tl_run_with_cache"]
        lines[1:1] = [
            ("forward tokens/s", f["tokens_per_s"], tl["tokens_per_s"], "x TransformerLens", f["tokens_per_s"] / tl["tokens_per_s"]),
            ("run_with_cache tokens/s", c["tokens_per_s"], tlc["tokens_per_s"], "x TransformerLens", c["tokens_per_s"] / tlc["tokens_per_s"]),
            ("run_with_cache peak RSS GB", rss(c) / 1e9, rss(tlc) / 1e9, "of TransformerLens", rss(c) / max(rss(tlc), 1)),
        ]
        lines += [
            ("load s (GGUF)", ld["median_s"], theirs["hf_load_gguf"]["median_s"], "of transformers", ld["median_s"] / theirs["hf_load_gguf"]["median_s"]),
            gen(ours["interplab_generate_b1"], theirs["hf_generate"], "generate b1 tokens/s (dense)"),
            gen(ours["interplab_generate_b1_quantized"], theirs["hf_generate"], "generate b1 tokens/s (blocks)"),
            gen(ours["interplab_generate_b8"], theirs["hf_generate_batch"], "generate b8 tokens/s (dense)"),
            gen(ours["interplab_generate_b8_quantized"], theirs["hf_generate_batch"], "generate b8 tokens/s (blocks)"),
            ("--quantized-weights:", None, None, "", None),
            ("forward tokens/s", fq["tokens_per_s"], tl["tokens_per_s"], "x TransformerLens", fq["tokens_per_s"] / tl["tokens_per_s"]),
            ("run_with_cache tokens/s", cq["tokens_per_s"], tlc["tokens_per_s"], "x TransformerLens", cq["tokens_per_s"] / tlc["tokens_per_s"]),
            ("run_with_cache peak RSS GB", rss(cq) / 1e9, rss(tlc) / 1e9, "of TransformerLens", rss(cq) / max(rss(tlc), 1)),
        ]
    else:
        lines += [
            gen(ours["interplab_generate_b1"], theirs["hf_generate"], "generate b1 tokens/s (dense)"),
            gen(ours["interplab_generate_b1_quantized"], theirs["hf_generate"], "generate b1 tokens/s (blocks)"),
        ]
    print(f"model {a.model}; forward {f['batch']} x {f['seq']} tokens; sgemm roofline "
          f"{sg['roofline_tokens_per_s']:.0f} tokens/s at {sg['sgemm_gflop_per_s']:.1f} GFLOP/s")
    table(lines)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"cpu": info, "model": a.model, "interplab": ours, "peer": theirs,
                       "threads": a.threads}, fh, indent=1)


def bf16(a, gguf):
    """`--dtype bf16`: Interplab's bf16 forward and run_with_cache against TransformerLens and
    transformers in f32 (the default everyone runs) and transformers with bf16 weights."""
    ours = interplab(a, a.threads, a.runs, model=a.model,
                     what="forward,forward-bf16" + (",cache-bf16" if a.model == "smollm2-135m" else ""))
    only = ["hf_forward", "hf_forward_bf16", "torch_sgemm", "torch_bf16_gemm"]
    if a.model == "smollm2-135m":
        only += ["tl_forward", "tl_run_with_cache"]
    theirs = peer(a.threads, a.runs, gguf, only=tuple(only))
    f, fb = ours["interplab_forward"], ours["interplab_forward_bf16"]
    hf, hfb = theirs["hf_forward"], theirs["hf_forward_bf16"]
    sg, bg = theirs["torch_sgemm"], theirs["torch_bf16_gemm"]
    t = lambda r: r["tokens_per_s"]
    lines = [
        ("forward f32 tokens/s", t(f), t(hf), "x transformers f32", t(f) / t(hf)),
        ("forward bf16 tokens/s", t(fb), t(hf), "x transformers f32", t(fb) / t(hf)),
        ("forward bf16 tokens/s", t(fb), t(hfb), "x transformers bf16", t(fb) / t(hfb)),
        ("forward bf16 vs torch bf16 gemm", t(fb), bg["roofline_tokens_per_s"],
         "of the bf16 gemm roofline", t(fb) / bg["roofline_tokens_per_s"]),
        ("forward bf16 vs torch sgemm", t(fb), sg["roofline_tokens_per_s"],
         "of the sgemm roofline", t(fb) / sg["roofline_tokens_per_s"]),
    ]
    if a.model == "smollm2-135m":
        tl, tlc, cb = theirs["tl_forward"], theirs["tl_run_with_cache"], ours["interplab_run_with_cache_bf16"]
        rss = lambda r: r.get("peak_rss_bytes") or 0
        lines[2:2] = [
            ("forward bf16 tokens/s", t(fb), t(tl), "x TransformerLens f32", t(fb) / t(tl)),
            ("run_with_cache bf16 tokens/s", t(cb), t(tlc), "x TransformerLens f32", t(cb) / t(tlc)),
            ("run_with_cache bf16 peak RSS GB", rss(cb) / 1e9, rss(tlc) / 1e9, "of TransformerLens",
             rss(cb) / max(rss(tlc), 1)),
        ]
    print(f"model {a.model}; forward {f['batch']} x {f['seq']} tokens; sgemm roofline "
          f"{sg['roofline_tokens_per_s']:.0f} tokens/s at {sg['sgemm_gflop_per_s']:.1f} GFLOP/s; bf16 gemm "
          f"roofline {bg['roofline_tokens_per_s']:.0f} tokens/s at {bg['sgemm_gflop_per_s']:.1f} GFLOP/s")
    table(lines)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"cpu": cpu(), "model": a.model, "dtype": "bf16", "interplab": ours,
                       "peer": theirs, "threads": a.threads}, fh, indent=1)


def analysis(a):
    """Issue 3's figures: TransformerLens' get_act_patch_resid_pre on the IOI pair and
    detect_head on 4 repeated random sequences, against `interplab bench --what patch,heads`."""
    ours = interplab(a, a.threads, a.runs, what="patch,heads")
    theirs = peer(a.threads, a.runs, gguf_path(), only=("tl_patching_resid_pre", "tl_head_detector"))
    p, h = ours["interplab_patching_resid_pre"], ours["interplab_head_detector"]
    tp, th = theirs["tl_patching_resid_pre"], theirs["tl_head_detector"]
    print(f"{'measure (median s)':34} {'interplab':>10} {'TransformerLens':>16}  speed-up")
    for name, o, t in [("resid_pre sweep 30x14 (IOI pair)", p["median_s"], tp["median_s"]),
                       ("head detector, 4 x 101 tokens", h["median_s"], th["median_s"])]:
        print(f"{name:34} {o:10.3f} {t:16.3f}  {t / o:.1f}x")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"interplab": ours, "peer": theirs, "threads": a.threads}, fh, indent=1)


if __name__ == "__main__":
    main()
