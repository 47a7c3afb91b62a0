"""`run_with_cache` against the CLI's saved activations (the same Rust model, another
process and another path: `interplab run --cache` → safetensors) and against
TransformerLens' and transformers' values for the same model (independent implementations)."""

import json

import numpy as np
import pytest

import interplab

from conftest import MODEL, REPO, read_safetensors

PROMPT = "The Eiffel Tower is located in the city of"
HOOKS = [
    "hook_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_normalized",
    "blocks.3.attn.hook_q",
    "blocks.3.attn.hook_k",
    "blocks.3.attn.hook_pattern",
    "blocks.3.attn.hook_z",
    "blocks.7.mlp.hook_post",
    "blocks.29.hook_resid_post",
    "ln_final.hook_normalized",
]
FIXTURES = REPO / "crates" / "core" / "tests" / "fixtures" / "reference" / "smollm2"


def mixed_diff(a, b):
    """Largest |a - b|, relative where |b| > 1 (as the Rust reference tests measure)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1.0)))


def test_cache_equals_the_cli_run_directory(model, cli, tmp_path):
    out = tmp_path / "run"
    cli("run", MODEL, "--prompt", PROMPT, "--bos", "--cache", ",".join(HOOKS), "--top-k", "5", "--out", out)
    saved = read_safetensors(out / "activations.safetensors")
    results = json.loads((out / "results.json").read_text())

    tokens = model.to_tokens(PROMPT, prepend_bos=True)
    assert tokens.shape == (1, len(results["token_ids"]))
    assert tokens[0].tolist() == results["token_ids"]

    logits, cache = model.run_with_cache(tokens, names_filter=HOOKS)
    assert list(cache) == HOOKS  # forward order, as TransformerLens
    assert set(saved) == set(HOOKS) | {"unembed.hook_out"}
    for name in HOOKS:
        assert cache[name].dtype == np.float32
        assert cache[name].shape == saved[name].shape, name
        np.testing.assert_array_equal(cache[name], saved[name], err_msg=name)
    np.testing.assert_array_equal(logits, saved["unembed.hook_out"])

    # TransformerLens' shapes, batch dimension kept.
    c = model.cfg
    assert isinstance(c, dict) and c.n_layers == c["n_layers"] == 30
    n = tokens.shape[1]
    assert cache["blocks.3.attn.hook_pattern"].shape == (1, c["n_heads"], n, n)
    assert cache["blocks.3.attn.hook_z"].shape == (1, n, c["n_heads"], c["d_head"])
    assert cache["blocks.3.attn.hook_k"].shape == (1, n, c["n_key_value_heads"], c["d_head"])
    assert cache["blocks.7.mlp.hook_post"].shape == (1, n, c["d_mlp"])
    np.testing.assert_allclose(cache["blocks.3.attn.hook_pattern"].sum(-1), 1.0, rtol=1e-5)

    # The CLI's top next tokens are the argmax of the last position's logits.
    last = logits[0, -1]
    top = np.argsort(-last, kind="stable")[:5]
    assert top.tolist() == [t["id"] for t in results["top_next"]]
    np.testing.assert_allclose(last[top], [t["logit"] for t in results["top_next"]], rtol=0, atol=1e-5)
    assert results["top_next"][0]["token"] == " Paris"
    assert model.to_str_tokens(top[:1]) == [" Paris"]


def test_names_filter_forms_select_the_same_hooks(model):
    tokens = model.to_tokens("one two three")
    n_layers = model.cfg["n_layers"]
    _, by_glob = model.run_with_cache(tokens, names_filter="blocks.*.attn.hook_pattern")
    _, by_fn = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("attn.hook_pattern"))
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)]
    _, by_list = model.run_with_cache(tokens, names_filter=names)
    assert list(by_glob) == list(by_fn) == list(by_list) == names
    for n in names:
        np.testing.assert_array_equal(by_glob[n], by_fn[n])
    _, everything = model.run_with_cache(tokens)
    assert list(everything) == model.hook_names()
    _, none = model.run_with_cache(tokens, names_filter=lambda n: False)
    assert none == {}
    _, squeezed = model.run_with_cache(tokens, names_filter="hook_embed", remove_batch_dim=True)
    assert squeezed["hook_embed"].shape == (tokens.shape[1], model.cfg["d_model"])


def test_hooks_match_transformer_lens(model):
    """TransformerLens 3.9 on the same GGUF weights (the fixture the Rust tests use)."""
    ref = read_safetensors(FIXTURES / "tl_activations.safetensors")
    meta = json.loads((FIXTURES / "tl_activations.json").read_text())
    tokens = model.to_tokens(meta["prompt"], prepend_bos=False)
    if "tokens" in ref:
        assert tokens[0].tolist() == ref["tokens"].tolist()
    names = [n for n in ref if n not in ("tokens", "logits")]
    assert len(names) >= 13
    logits, cache = model.run_with_cache(tokens, names_filter=names, remove_batch_dim=True)
    for n in names:
        assert mixed_diff(cache[n], ref[n]) < 1e-3, n
    if "logits" in ref:
        assert mixed_diff(logits[0], ref["logits"]) < 1e-3


def test_logits_match_transformers(model):
    """Hugging Face transformers' logits for the same GGUF (last positions of each prompt)."""
    ref = read_safetensors(FIXTURES / "hf_logits_slim.safetensors")
    prompts = [
        "When Mary and John went to the store, John gave a drink to",
        "The Eiffel Tower is located in the city of",
    ]
    for i, p in enumerate(prompts):
        tokens = model.to_tokens(p, prepend_bos=False)
        assert tokens[0].tolist() == ref[f"tokens_{i}"].tolist()
        logits = model(tokens)[0]
        want = ref[f"logits_last_{i}"]
        k = want.shape[0]
        assert np.max(np.abs(logits[-k:] - want)) < 1e-3, p
        assert logits.argmax(-1).tolist() == ref[f"argmax_{i}"].tolist()


def test_bf16_weights_stay_near_transformers(model):
    """`dtype="bf16"` (the CLI's `--dtype bf16`): transformers' f32 logits within the bf16
    error that crates/core/tests/bf16_weights.rs measured (0.22; bound 0.6), same argmax."""
    bf = interplab.load(MODEL, dtype="bf16")
    ref = read_safetensors(FIXTURES / "hf_logits_slim.safetensors")
    p = "When Mary and John went to the store, John gave a drink to"
    logits = bf(bf.to_tokens(p, prepend_bos=False))[0]
    want = ref["logits_last_0"]
    k = want.shape[0]
    assert np.max(np.abs(logits[-k:] - want)) < 0.6
    assert logits[-k:].argmax(-1).tolist() == ref["argmax_0"].tolist()[-k:]


def test_tokens_round_trip(model):
    text = "The Eiffel Tower is located in the city of"
    tokens = model.to_tokens(text)
    assert tokens.dtype == np.int64 and tokens.ndim == 2
    assert tokens[0, 0] == model.to_single_token("<|im_start|>")  # SmolLM2's BOS
    assert model.to_string(tokens[0, 1:]) == text
    assert model.to_string(tokens) == ["<|im_start|>" + text]
    str_tokens = model.to_str_tokens(text, prepend_bos=False)
    assert "".join(str_tokens) == text
    assert len(str_tokens) == tokens.shape[1] - 1
    assert model.to_str_tokens(tokens) == ["<|im_start|>"] + str_tokens
    # A string, a list of token ids and an array give the same logits.
    a = model(text)
    b = model(tokens[0].tolist())
    c = model(tokens.astype(np.int32))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_batch_rows_equal_single_runs(model):
    rows = ["The cat sat on the mat", "The dog lay on the rug"]
    tokens = model.to_tokens(rows)
    assert tokens.shape[0] == 2
    batch = model(tokens)
    for i, r in enumerate(rows):
        np.testing.assert_allclose(batch[i], model(r)[0], rtol=0, atol=1e-4)


def test_loss_is_the_next_token_cross_entropy(model):
    tokens = model.to_tokens("The Eiffel Tower is located in the city of Paris")
    logits, loss = model(tokens, return_type="both")
    x = logits[0, :-1].astype(np.float64)
    lse = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
    want = np.mean(lse - x[np.arange(len(x)), tokens[0, 1:]])
    assert loss == pytest.approx(want, abs=1e-4)
    assert model(tokens, return_type="loss") == pytest.approx(loss, abs=1e-6)
    assert model(tokens, return_type=None) is None
