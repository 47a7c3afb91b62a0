#!/usr/bin/env bash
# Creates /work/main/.venv-peer (the repo's .venv-peer) with the Python peer stack:
# CPU use of torch, transformers, transformer_lens, safetensors, numpy, gguf, tokenizers.
#
# PyPI serves no CPU-only torch wheel for Linux x86_64: every manylinux wheel links
# libtorch_cuda.so against libcudart/cublas/cudnn/nccl/... and `import torch` fails
# unless those nvidia-* wheels are installed (checked: `pip install torch --no-deps`
# then `import torch` -> "libcublasLt.so.* not found"). So we accept the CUDA
# download (~3.5 GB on disk); the GPU code is simply never used.
#
# Idempotent: if the venv exists, imports work and was built from the same
# requirements.txt (stamp file), it does nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PEER_VENV:-$root/.venv-peer}"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
py="${PYTHON:-python3}"

check() {
  "$venv/bin/python" - <<'PY'
import torch, transformers, transformer_lens, safetensors, numpy, gguf, tokenizers
x = torch.randn(4, 4)
assert torch.allclose(x @ torch.eye(4), x)
print("peer venv ok: torch", torch.__version__, "transformers", transformers.__version__,
      "transformer_lens", getattr(transformer_lens, "__version__", "?"), "numpy", numpy.__version__)
PY
}

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && check 2>/dev/null; then
  echo "peer venv up to date: $venv"
  exit 0
fi

start=$(date +%s)
[[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$req"
check
echo "$want" > "$stamp"
echo "peer venv installed in $(( $(date +%s) - start )) s: $venv"
