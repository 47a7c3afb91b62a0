"""`interplab.lab.run` runs the catalog's experiments as the CLI does (same results.json),
and `interplab.sae.load` encodes and decodes as SAELens defines it."""

import json

import numpy as np
import pytest

import interplab
from conftest import MODEL, REPO, write_safetensors

QUICK_SAE = REPO / "crates" / "sae" / "tests" / "fixtures" / "smollm2_l3_topk"


def top_heads(results, kind):
    return [(l, h) for l, h, _ in results[kind]["top"]]


def test_heads_equal_the_cli(model, cli, tmp_path):
    cli("heads", MODEL, "--seq-len", "20", "--n-seq", "2", "--out", tmp_path / "cli")
    want = json.loads((tmp_path / "cli" / "results.json").read_text())
    run = interplab.lab.run("heads", {"model": MODEL, "seq_len": 20, "n_seq": 2}, out=tmp_path / "py")
    got = run["results"]
    assert run["run_dir"] == str(tmp_path / "py")
    assert json.loads((tmp_path / "py" / "results.json").read_text()) == got
    assert (tmp_path / "py" / "report.html").is_file()
    assert run["manifest"]["experiment"] == "heads"
    assert run["manifest"]["config"]["seq_len"] == 20

    for kind in ("induction_head", "previous_token_head", "duplicate_token_head"):
        assert top_heads(got, kind) == top_heads(want, kind), kind
        np.testing.assert_allclose(got[kind]["scores"], want[kind]["scores"], rtol=0, atol=1e-9)
    assert got["sequences"] == want["sequences"]

    # The scores from the binding's own attention patterns, in numpy (TransformerLens'
    # head detector, 'mul': sum(A * D) / sum(A), averaged over the sequences).
    seqs = np.array(got["sequences"])
    n = seqs.shape[1]
    _, cache = model.run_with_cache(seqs, names_filter="blocks.*.attn.hook_pattern")
    prev = np.eye(n, k=-1)
    induction = np.zeros((len(seqs), n, n))
    for b, s in enumerate(seqs):
        for q in range(n):
            for k in range(1, q + 1):
                if k - 1 != q and s[k - 1] == s[q]:
                    induction[b, q, k] = 1.0
    for kind, d in (("previous_token_head", prev[None, None]), ("induction_head", induction[:, None])):
        scores = np.array(
            [
                ((cache[f"blocks.{l}.attn.hook_pattern"] * d).sum((-1, -2))
                 / cache[f"blocks.{l}.attn.hook_pattern"].sum((-1, -2))).mean(0)
                for l in range(model.cfg["n_layers"])
            ]
        )
        np.testing.assert_allclose(scores, got[kind]["scores"], rtol=0, atol=1e-5)
    # Previous-token heads of SmolLM2 found by TransformerLens on its own random tokens.
    assert (16, 0) in top_heads(got, "previous_token_head")[:3]


def test_eval_and_sae_eval_equal_the_cli(cli, tmp_path):
    configs = {
        "eval": ({"model": MODEL, "task": "bbq", "limit": 6, "num_fewshot": [0], "show": 2}, ["eval"]),
        "sae-eval": (
            {
                "model": MODEL,
                "saes": [str(QUICK_SAE)],
                "eval_tokens": 512,
                "ce_tokens": 256,
                "context": 64,
                "batch_sequences": 8,
            },
            ["sae", "eval"],
        ),
    }
    for name, (cfg, command) in configs.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(cfg))
        cli(*command, "--config", path, "--out", tmp_path / f"cli-{name}")
        want = json.loads((tmp_path / f"cli-{name}" / "results.json").read_text())
        got = interplab.lab.run(name, cfg, out=tmp_path / f"py-{name}")["results"]
        assert got == want, name
    fvu = got["saes"][0]["eval"]["metrics"]
    assert isinstance(fvu, dict) and fvu


def test_experiments_and_defaults():
    names = interplab.lab.experiments()
    for n in ("run", "heads", "ablate", "eval", "sae-train", "sae-eval", "toy-grokking"):
        assert n in names
    d = interplab.lab.defaults("heads")
    assert d["seq_len"] == 50 and d["model"] == ""
    assert set(interplab.lab.questions()) == set(names)


def test_sae_load_encodes_as_saelens_topk(model):
    sae = interplab.sae.load(QUICK_SAE)
    assert (sae.d_in, sae.d_sae, sae.architecture) == (576, 256, "topk")
    assert sae.hook_name == "blocks.3.hook_resid_post"
    k = sae.cfg["k"]
    _, cache = model.run_with_cache("The Eiffel Tower is located in the city of", names_filter=sae.hook_name)
    x = cache[sae.hook_name]  # [1, pos, d_in]
    acts = sae.encode(x)
    assert acts.shape == x.shape[:-1] + (sae.d_sae,)

    # SAELens' TopK SAE: the k largest of (x - b_dec) W_enc + b_enc, through a ReLU.
    pre = (x.astype(np.float64) - sae.b_dec) @ sae.W_enc + sae.b_enc
    want = np.zeros_like(pre)
    top = np.argsort(-pre, axis=-1)[..., :k]
    np.put_along_axis(want, top, np.maximum(np.take_along_axis(pre, top, -1), 0), -1)
    np.testing.assert_allclose(acts, want, rtol=0, atol=1e-4)
    assert ((acts > 0).sum(-1) <= k).all()

    recon = sae.decode(acts)
    np.testing.assert_allclose(recon, acts.astype(np.float64) @ sae.W_dec + sae.b_dec, rtol=0, atol=1e-4)
    np.testing.assert_allclose(sae.forward(x), recon, rtol=0, atol=1e-5)


def test_sae_load_reads_a_hand_written_saelens_dir(tmp_path):
    rng = np.random.default_rng(1)
    d_in, d_sae = 8, 16
    w = {
        "W_enc": rng.normal(size=(d_in, d_sae)),
        "b_enc": rng.normal(size=d_sae),
        "W_dec": rng.normal(size=(d_sae, d_in)),
        "b_dec": rng.normal(size=d_in),
    }
    write_safetensors(tmp_path / "sae_weights.safetensors", w)
    (tmp_path / "cfg.json").write_text(
        json.dumps({"architecture": "standard", "d_in": d_in, "d_sae": d_sae, "dtype": "float32"})
    )
    sae = interplab.sae.load(tmp_path)
    x = rng.normal(size=(3, 5, d_in)).astype(np.float32)
    f = lambda a: a.astype(np.float32).astype(np.float64)
    want = np.maximum((f(x) - f(w["b_dec"])) @ f(w["W_enc"]) + f(w["b_enc"]), 0)
    np.testing.assert_allclose(sae.encode(x), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(interplab.InterplabError, match=r"shape \[\.\.\., 8\]"):
        sae.encode(np.zeros((2, 7), np.float32))
    with pytest.raises(interplab.InterplabError, match="cfg.json"):
        interplab.sae.load(tmp_path / "missing")


def test_the_ten_line_example_reproduces_the_cli(cli, tmp_path):
    """crates/python/examples/heads_and_ablation.py prints the CLI's top heads (same heads, same
    scores to four decimals) and a zero-ablation that raises the loss on repeated tokens."""
    import subprocess
    import sys

    script = REPO / "crates" / "python" / "examples" / "heads_and_ablation.py"
    assert len(script.read_text().splitlines()) <= 10
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    cli("heads", MODEL, "--out", tmp_path / "cli")
    want = json.loads((tmp_path / "cli" / "results.json").read_text())
    for kind, line in zip(("previous_token_head", "duplicate_token_head", "induction_head"), lines):
        assert line.split()[0] == kind
        assert line.split()[1:] == [x for l, h, s in want[kind]["top"][:5] for x in (f"{l}.{h}", f"{s:.4f}")]
    l, h, _ = want["induction_head"]["top"][0]
    before, after = (float(x) for x in lines[3].split("loss ")[1].split(" -> "))
    assert lines[3].startswith(f"{l}.{h} zeroed") and after > before + 1.0, lines[3]
