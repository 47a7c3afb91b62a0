"""Errors arrive as `interplab.InterplabError` carrying the line the CLI prints after
`error: ` for the same bad input."""

import json

import numpy as np
import pytest

import interplab
from conftest import MODEL

PROMPT = "The Eiffel Tower is located in the city of"


def message(call):
    with pytest.raises(interplab.InterplabError) as e:
        call()
    assert isinstance(e.value, RuntimeError)
    return str(e.value)


def test_unknown_model_alias(cli, tmp_path):
    want = cli.error_line("run", "no-such-model", "--prompt", "x", "--out", tmp_path / "r")
    assert "no-such-model" in want
    assert message(lambda: interplab.load("no-such-model")) == want


def test_bad_hook_name(model, cli, tmp_path):
    bad = "blocks.0.hook_resid_pree"
    want = cli.error_line("run", MODEL, "--prompt", PROMPT, "--cache", bad, "--out", tmp_path / "r")
    assert "matches no hook point" in want
    tokens = model.to_tokens(PROMPT)
    assert message(lambda: model.run_with_cache(tokens, names_filter=bad)) == want
    assert message(lambda: model.run_with_cache(tokens, names_filter=[bad])) == want
    assert message(lambda: model.run_with_hooks(tokens, fwd_hooks=[(bad, lambda a, h: None)])) == want


def test_token_outside_the_vocabulary(model, cli, tmp_path):
    want = cli.error_line("run", MODEL, "--token-ids", "1,60000", "--out", tmp_path / "r")
    assert "60000" in want
    assert message(lambda: model(np.array([[1, 60000]]))) == want


def test_invalid_config_value(cli, tmp_path):
    want = cli.error_line("heads", MODEL, "--seq-len", "0", "--out", tmp_path / "r")
    got = message(lambda: interplab.lab.run("heads", {"model": MODEL, "seq_len": 0}, out=tmp_path / "p"))
    assert got == want
    assert not (tmp_path / "p").exists()


def test_unknown_config_key(cli, tmp_path):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"model": MODEL, "seq_lenn": 20}))
    want = cli.error_line("heads", "--config", cfg, "--out", tmp_path / "r")
    # The CLI names the file the config came from; the binding names the experiment.
    assert want.startswith(f"{cfg}: unknown field `seq_lenn`")
    got = message(lambda: interplab.lab.run("heads", {"model": MODEL, "seq_lenn": 20}))
    assert got == "heads: " + want[len(f"{cfg}: ") :]


def test_unknown_experiment():
    got = message(lambda: interplab.lab.run("no-such-experiment", {}))
    assert got.startswith("no experiment named `no-such-experiment`")
    assert "heads" in got


def test_misshapen_or_float_tokens(model):
    assert "shape" in message(lambda: model(np.zeros((1, 2, 3), dtype=np.int64)))
    with pytest.raises(TypeError):
        model(np.array([[0.5, 1.5]]))


def test_dtype_choices():
    assert "choose one" in message(
        lambda: interplab.load(MODEL, quantized_weights=True, dtype="bf16")
    )
    assert "'f32' or 'bf16'" in message(lambda: interplab.load(MODEL, dtype="f16"))
