#!/usr/bin/env python3
"""Run `interplab bench` and the Python peer benchmark in one go, on the same machine, and print
the ratios the foundation issue asks for. Needs the peer venv (scripts/peer/setup_venv.sh) and a
release build (cargo build --release -p interplab-cli).

    .venv-peer/bin/python scripts/peer/compare.py --threads 2 --runs 5 --json compare.json
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def interplab(args, threads, runs, what="load,forward,cache,forward-q,cache-q"):
    exe = os.path.join(ROOT, "target", "release", "interplab")
    cmd = [exe, "--threads", str(threads), "bench", "smollm2-135m", "--runs", str(runs), "--what", what]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {r["name"]: r for r in (json.loads(l) for l in out.splitlines() if l.strip())}


def gguf_path():
    exe = os.path.join(ROOT, "target", "release", "interplab")
    out = subprocess.run([exe, "fetch", "smollm2-135m"], check=True, capture_output=True, text=True).stdout
    return next(w for w in out.split() if w.endswith(".gguf"))


def peer(threads, runs, gguf, only=("hf_load_gguf", "hf_forward", "tl_forward", "tl_run_with_cache")):
    tmp = os.path.join(ROOT, "target", "peer.json")
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "peer", "bench_peer.py"), "--gguf", gguf,
           "--threads", str(threads), "--runs", str(runs), "--json", tmp, "--only", *only]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(tmp) as f:
        data = json.load(f)
    rows = data["results"] if isinstance(data, dict) else data
    return {r["name"]: r for r in rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--suite", choices=["foundation", "analysis"], default="foundation",
                    help="foundation: load/forward/cache (issue 2); analysis: the resid_pre patching "
                         "sweep and the head detector (issue 3)")
    a = ap.parse_args()
    if a.suite == "analysis":
        return analysis(a)
    ours = interplab(a, a.threads, a.runs)
    theirs = peer(a.threads, a.runs, gguf_path())
    f, c, ld = ours["interplab_forward"], ours["interplab_run_with_cache"], ours["interplab_load"]
    fq, cq = ours["interplab_forward_quantized"], ours["interplab_run_with_cache_quantized"]
    hf, tl, tlc = theirs["hf_forward"], theirs["tl_forward"], theirs["tl_run_with_cache"]
    rss = lambda r: r.get("peak_rss_bytes") or 0
    lines = [
        ("forward tokens/s", f["tokens_per_s"], tl["tokens_per_s"], "x TransformerLens", f["tokens_per_s"] / tl["tokens_per_s"]),
        ("forward tokens/s", f["tokens_per_s"], hf["tokens_per_s"], "x transformers", f["tokens_per_s"] / hf["tokens_per_s"]),
        ("run_with_cache tokens/s", c["tokens_per_s"], tlc["tokens_per_s"], "x TransformerLens", c["tokens_per_s"] / tlc["tokens_per_s"]),
        ("run_with_cache peak RSS GB", rss(c) / 1e9, rss(tlc) / 1e9, "of TransformerLens", rss(c) / max(rss(tlc), 1)),
        ("--quantized-weights:", None, None, "", None),
        ("forward tokens/s", fq["tokens_per_s"], tl["tokens_per_s"], "x TransformerLens", fq["tokens_per_s"] / tl["tokens_per_s"]),
        ("run_with_cache tokens/s", cq["tokens_per_s"], tlc["tokens_per_s"], "x TransformerLens", cq["tokens_per_s"] / tlc["tokens_per_s"]),
        ("run_with_cache peak RSS GB", rss(cq) / 1e9, rss(tlc) / 1e9, "of TransformerLens", rss(cq) / max(rss(tlc), 1)),
        ("load s (GGUF)", ld["median_s"], theirs["hf_load_gguf"]["median_s"], "of transformers", ld["median_s"] / theirs["hf_load_gguf"]["median_s"]),
    ]
    print(f"{'measure':28} {'interplab':>12} {'peer':>12}  ratio")
    for name, o, p, what, r in lines:
        if o is None:
            print(name)
            continue
        print(f"{name:28} {o:12.3f} {p:12.3f}  {r:.2f} {what}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"interplab": ours, "peer": theirs, "threads": a.threads}, fh, indent=1)


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
