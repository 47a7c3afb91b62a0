#!/usr/bin/env python3
"""Small SAEs written by SAELens itself, and their encode/decode outputs, for `interplab-sae`'s
loader tests.

    .venv-peer/bin/pip install -r scripts/peer/requirements-sae.txt   # once, on top of setup_venv.sh
    .venv-peer/bin/python scripts/reference/make_sae_fixtures.py [--out DIR]

Writes crates/sae/tests/fixtures/saelens/ (d_in 8, d_sae 16, f32, torch seed 20260521):

  standard/       StandardSAE.save_model                     relu(pre)
  topk/           TopKSAE(k=3).save_model                    top-3 of pre, then ReLU
  topk_rescale/   TopKSAE(k=3, rescale_acts_by_decoder_norm=True).save_model, decoder rows NOT
                  unit norm: top-3 of pre·‖W_dec[i]‖, then ReLU; decode divides by ‖W_dec[i]‖
                  (cfg.json of every topk SAE SAELens trains carries this flag = true; there the
                  rows are already unit norm, so it is a no-op)
  jumprelu/       JumpReLUSAE.save_model                     relu(pre)·[pre > threshold]
  batchtopk/      BatchTopKTrainingSAE(k=3, θ=0.35).save_inference_model: SAELens saves BatchTopK
                  for inference as architecture "jumprelu" with threshold = θ for every latent,
                  after folding the decoder norms (W_dec rows → unit norm, W_enc and b_enc scaled)
  transcoder/     Transcoder(d_out=6).save_model             relu(x·W_enc + b_enc), no b_dec on input
  jumprelu_transcoder/  JumpReLUTranscoder(d_out=6).save_model

each holding cfg.json + sae_weights.safetensors exactly as SAELens wrote them, and io.safetensors:
`x` [5, 8], and for each directory name A: `A.feature_acts` [5, 16] = sae.encode(x) and
`A.sae_out` [5, d_out] = sae.decode(sae.encode(x)), computed by the SAE as reloaded from its
directory with SAE.load_from_disk (what a user of the saved files gets).
"""
import argparse
import json
import os
import shutil
import sys

# SAELens builds the inference cfg.json from a set of field names: fix the hash seed so that the
# key order (and so the file) is the same on every run.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch
from safetensors.torch import save_file

import sae_lens
from sae_lens import (
    SAE,
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    JumpReLUTranscoder,
    JumpReLUTranscoderConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    Transcoder,
    TranscoderConfig,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "sae", "tests", "fixtures", "saelens")
D_IN, D_SAE, D_OUT, K, N = 8, 16, 6, 3, 5
SEED = 20260521


def weights(g, d_out, threshold=False, unit=False, shift=-0.3, norms=(0.4, 1.6)):
    w = {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g) * 0.6,
        # shifted down so that some pre-activations (and for topk some top-3 picks) are negative
        "b_enc": torch.randn(D_SAE, generator=g) * 0.4 + shift,
        "W_dec": torch.randn(D_SAE, d_out, generator=g) * 0.5,
        "b_dec": torch.randn(d_out, generator=g) * 0.5,
    }
    if unit:
        w["W_dec"] = w["W_dec"] / w["W_dec"].norm(dim=1, keepdim=True)
    else:
        # decoder row norms spread over [norms[0], norms[1]]
        scale = norms[0] + (norms[1] - norms[0]) * torch.rand(D_SAE, 1, generator=g)
        w["W_dec"] = w["W_dec"] / w["W_dec"].norm(dim=1, keepdim=True) * scale
    if threshold:
        w["threshold"] = 0.05 + 0.6 * torch.rand(D_SAE, generator=g)
    return w


def load_into(sae, w):
    with torch.no_grad():
        for k, v in w.items():
            getattr(sae, k).data.copy_(v)
    return sae


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args()
    out = a.out
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(N, D_IN, generator=g) * 1.5
    x[4] = x[4] * 0.2  # a small row: with topk's negative b_enc some of its top-3 are negative
    saes = {}
    saes["standard"] = load_into(StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE)), weights(g, D_IN))
    saes["topk"] = load_into(TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)), weights(g, D_IN, shift=-1.5))
    saes["topk_rescale"] = load_into(
        TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True)),
        weights(g, D_IN, shift=-0.3, norms=(0.1, 4.0)))
    saes["jumprelu"] = load_into(JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE)),
                                 weights(g, D_IN, threshold=True))
    btk = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    load_into(btk, weights(g, D_IN))
    btk.topk_threshold = torch.tensor(0.35, dtype=torch.float64)
    saes["batchtopk"] = btk
    saes["transcoder"] = load_into(
        Transcoder(TranscoderConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False)),
        weights(g, D_OUT))
    saes["jumprelu_transcoder"] = load_into(
        JumpReLUTranscoder(JumpReLUTranscoderConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False)),
        weights(g, D_OUT, threshold=True))

    os.makedirs(out, exist_ok=True)
    io = {"x": x.contiguous()}
    for name, sae in saes.items():
        d = os.path.join(out, name)
        if os.path.isdir(d):
            shutil.rmtree(d)
        if name == "batchtopk":
            sae.save_inference_model(d)
        else:
            sae.save_model(d)
        back = SAE.load_from_disk(d)
        back.eval()
        with torch.no_grad():
            f = back.encode(x)
            y = back.decode(f)
            # the in-memory SAE agrees (batchtopk: its inference form is the reloaded JumpReLU)
            if name != "batchtopk":
                assert torch.equal(sae.encode(x), f), name
        if name == "topk_rescale":
            plain = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
            load_into(plain, {n: getattr(back, n).detach() for n in ("W_enc", "b_enc", "W_dec", "b_dec")})
            with torch.no_grad():
                same = torch.equal(plain.encode(x) != 0, f != 0)
            print(f"topk_rescale: support {'equals' if same else 'differs from'} the unrescaled top-3's")
        io[f"{name}.feature_acts"] = f.contiguous()
        io[f"{name}.sae_out"] = y.contiguous()
        with torch.no_grad():
            pre = back.process_sae_in(x) @ back.W_enc + back.b_enc
            if getattr(back.cfg, "rescale_acts_by_decoder_norm", False):
                pre = pre * back.W_dec.norm(dim=-1)
        nz = int((f != 0).sum())
        neg_kept = int(((pre <= 0) & (f == 0)).sum())
        gap = int(((pre > 0) & (f == 0)).sum())
        with open(os.path.join(d, "cfg.json")) as fh:
            arch = json.load(fh)["architecture"]
        print(f"{name:20s} -> cfg architecture {arch!r:24s} {type(back).__name__:18s} nonzero {nz:2d}/{f.numel()}  "
              f"pre>0 but zeroed {gap:2d}  per-row L0 {[int(r) for r in (f != 0).sum(-1)]}")
    save_file(io, os.path.join(out, "io.safetensors"),
              metadata={"generated_by": f"scripts/reference/make_sae_fixtures.py, sae_lens {sae_lens.__version__}, "
                                        f"torch {torch.__version__}, seed {SEED}"})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
