#!/usr/bin/env bash
# The SAE reference check (docs/sae.md §Reference check): for each architecture, interplab-sae and
# the plain-PyTorch reference trainer (scripts/reference/sae_train_reference.py, written to
# docs/sae.md §Training) train from the same initial weights on the same rows — a planted sparse
# dictionary, 64 → 1,024 latents, batch 256 — and compare_sae_reference.py prints how far apart
# they end. Needs the peer venv (.venv-peer).
#   scripts/reference/sae_reference_check.sh [STEPS] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-300}
out=${2:-$(mktemp -d)}
cargo build --release -q -p interplab-sae --example reference_check
lscpu | grep "Model name"
for arch in relu topk batchtopk jumprelu; do
  target/release/examples/reference_check "$out/$arch" "$arch" "$steps"
  .venv-peer/bin/python scripts/reference/sae_train_reference.py --quiet "$out/$arch"
done
.venv-peer/bin/python scripts/reference/compare_sae_reference.py "$out"/{relu,topk,batchtopk,jumprelu}
