#!/usr/bin/env bash
# Regenerates crates/sae/tests/fixtures/smollm2_l3_topk: the small SAE that the quick
# `sae-eval` / `sae-features` configs and the SAE CLI tests load (TopK, k = 16, 256 latents,
# SmolLM2-135M blocks.3.hook_resid_post, 262,144 tokens of docs-and-plays, seed 0).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
cargo run --release -q -p interplab-cli -- sae train smollm2-135m --hook blocks.3.hook_resid_post \
  --arch topk --k 16 --latents 256 --tokens 256k --batch-size 1024 --buffer 16384 --lr 1e-3 \
  --eval-tokens 16384 --ce-tokens 2048 --out "$tmp/run"
dest=crates/sae/tests/fixtures/smollm2_l3_topk
rm -rf "$dest"
mkdir -p "$dest"
cp "$tmp/run/saes/topk-k16/cfg.json" "$tmp/run/saes/topk-k16/sae_weights.safetensors" "$dest/"
echo "wrote $dest"
