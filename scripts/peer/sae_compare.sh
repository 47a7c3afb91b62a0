#!/usr/bin/env bash
# SAE performance side by side, one run, one machine (issue: SAEs):
#   1. one training step, 576 → 4,608 latents, batch 4,096, k = 32 — `interplab bench
#      --what sae-topk,sae-relu,sae-relu-sparse` (ReLU-L1 from initialisation, and in a state with
#      64 latents active per row, as training reaches) against scripts/peer/sae_bench.py (SAELens and the plain PyTorch
#      reference), both on 2 threads; and the same steps with bf16 products (`sae-…-bf16`)
#      against SAELens under bf16 autocast (`saelens_bf16`), the mixed precision of each;
#   2. harvesting `blocks.15.hook_resid_post` (and the last block's) against `interplab bench`'s
#      forward, batch 8 × 128 tokens.
# Prints lscpu's model name, every measurement as JSON, then the ratios.
#   scripts/peer/sae_compare.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
bin=target/release/interplab
cargo build --release -q -p interplab-cli
lscpu | grep "Model name"
tmp=$(mktemp -d)
RAYON_NUM_THREADS=2 $bin --threads 2 bench smollm2-135m --what sae-topk,sae-relu,sae-relu-sparse,sae-topk-bf16,sae-relu-bf16,sae-relu-sparse-bf16,forward,harvest,harvest-last \
  --runs "$runs" --json "$tmp/rust.json" > /dev/null
.venv-peer/bin/python scripts/peer/sae_bench.py --threads 2 --runs "$runs" --arch topk,relu --relu-l0 64 \
  --impl saelens,saelens_bf16,reference > "$tmp/py.json"
.venv-peer/bin/python - "$tmp/rust.json" "$tmp/py.json" <<'PY'
import json, sys
rust = {r["name"]: r for r in json.load(open(sys.argv[1]))}
text = open(sys.argv[2]).read()
py = json.loads(text[text.index("{"):])
print(json.dumps(rust, indent=1))
def find(arch, impl):
    v = py["results"].get(f"{impl}.{arch}")
    return v and v["median_s"]
for arch in ["topk", "relu", "relu_sparse"]:
    r = rust[f"interplab_sae_step_{arch}"]["median_s"]
    for impl in ["saelens", "reference"]:
        p = find(arch, impl)
        if p:
            print(f"step {arch:11s} f32:  interplab {r:.3f} s, {impl} {p:.3f} s  -> {p / r:.2f}x")
    r = rust[f"interplab_sae_step_{arch}_bf16"]["median_s"]
    for impl in ["saelens_bf16", "saelens"]:
        p = find(arch, impl)
        if p:
            print(f"step {arch:11s} bf16: interplab {r:.3f} s, {impl} {p:.3f} s  -> {p / r:.2f}x")
f = rust["interplab_forward"]["tokens_per_s"]
for h in ["interplab_harvest_l15", "interplab_harvest_last"]:
    t = rust[h]["tokens_per_s"]
    print(f"{h}: {t:.0f} tokens/s = {t / f:.2f} of forward's {f:.0f}")
PY
