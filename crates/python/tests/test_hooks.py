"""`run_with_hooks`: Python callbacks that read, edit or replace activations, checked
against logits computed independently (numpy from the model's weights, or the cache)."""

import numpy as np
import pytest

import interplab

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def tokens(model):
    return model.to_tokens(PROMPT)


@pytest.fixture(scope="module")
def clean(model, tokens):
    return model.run_with_cache(tokens)


def test_identity_hooks_leave_logits_bit_identical(model, tokens, clean):
    logits, _ = clean
    seen = []

    def returns_input(act, hook):
        seen.append(hook.name)
        return act

    def returns_none(act, hook):
        return None

    # A hooked `hook_scale` makes the model compute its norm in composed form rather than
    # fused (the scale it returns must be the one used), which moves logits by ~1e-5; every
    # other point is bit-identical under an identity hook.
    not_scale = lambda n: not n.endswith("hook_scale")
    out = model.run_with_hooks(tokens, fwd_hooks=[(not_scale, returns_input), ("blocks.*.attn.*", returns_none)])
    np.testing.assert_array_equal(out, logits)
    assert seen == [n for n in model.hook_names() if not_scale(n)]
    everything = model.run_with_hooks(tokens, fwd_hooks=[("*", returns_input)])
    np.testing.assert_allclose(everything, logits, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(model.run_with_hooks(tokens, fwd_hooks=[]), logits)


def test_a_hook_sees_the_cached_activation(model, tokens, clean):
    _, cache = clean
    got = {}

    def record(act, hook):
        got[hook.name] = (act.copy(), hook.layer())

    model.run_with_hooks(
        tokens,
        fwd_hooks=[("blocks.5.attn.hook_pattern", record), (lambda n: n == "hook_embed", record)],
    )
    assert set(got) == {"blocks.5.attn.hook_pattern", "hook_embed"}
    np.testing.assert_array_equal(got["blocks.5.attn.hook_pattern"][0], cache["blocks.5.attn.hook_pattern"])
    assert got["blocks.5.attn.hook_pattern"][1] == 5
    assert got["hook_embed"][1] is None
    np.testing.assert_array_equal(got["hook_embed"][0], cache["hook_embed"])


def test_zero_ablating_a_head_removes_its_share_of_attn_out(model, tokens, clean):
    """Zeroing head h's z (in place, as with torch in TransformerLens) equals subtracting
    z_h @ W_O[h] from hook_attn_out, computed here in numpy from the weights."""
    logits, cache = clean
    layer, head = 8, 2
    w_o = model.state_dict()[f"blocks.{layer}.attn.W_O"]  # [n_heads, d_head, d_model]
    assert w_o.shape == (model.cfg["n_heads"], model.cfg["d_head"], model.cfg["d_model"])

    def zero_head(z, hook):
        assert hook.name == f"blocks.{layer}.attn.hook_z"
        z[:, :, head, :] = 0.0

    ablated = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)])

    z = cache[f"blocks.{layer}.attn.hook_z"].astype(np.float64)
    share = np.einsum("bpd,dm->bpm", z[:, :, head, :], w_o[head].astype(np.float64))
    attn_out = cache[f"blocks.{layer}.hook_attn_out"]
    # Sanity of the reconstruction itself: all heads' shares add up to hook_attn_out.
    total = np.einsum("bphd,hdm->bpm", z, w_o.astype(np.float64))
    assert np.max(np.abs(total - attn_out)) < 1e-3

    def subtract(out, hook):
        return (out - share).astype(np.float32)

    rebuilt = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_attn_out", subtract)])
    assert np.max(np.abs(ablated - logits)) > 0.05, "the ablation must change the logits"
    assert np.max(np.abs(ablated - rebuilt)) < 2e-3


def test_replacing_the_final_residual_gives_numpy_logits(model, tokens, clean):
    """A new `blocks.{last}.hook_resid_post` yields ln_final(resid) @ W_U, in numpy."""
    logits, cache = clean
    last = model.cfg["n_layers"] - 1
    name = f"blocks.{last}.hook_resid_post"
    rng = np.random.default_rng(0)
    resid = cache[name]
    new = (resid[:, ::-1, :] + rng.normal(0, 1, resid.shape)).astype(np.float32)

    out = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda act, hook: new)])

    sd = model.state_dict()
    x = new.astype(np.float64)
    rms = np.sqrt((x**2).mean(-1, keepdims=True) + model.cfg["norm_eps"])
    want = (x / rms * sd["ln_final.w"]) @ sd["unembed.W_U"].astype(np.float64)
    assert out.shape == want.shape == logits.shape
    assert np.max(np.abs(out - want)) < 1e-3
    assert np.max(np.abs(out - logits)) > 1.0


def test_a_python_exception_in_a_hook_propagates(model, tokens):
    class Boom(Exception):
        pass

    def raise_it(act, hook):
        raise Boom(hook.name)

    with pytest.raises(Boom) as e:
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.2.hook_resid_pre", raise_it)])
    assert str(e.value) == "blocks.2.hook_resid_pre"


def test_a_replacement_of_the_wrong_shape_is_an_error(model, tokens):
    with pytest.raises(interplab.InterplabError, match=r"returned shape \[1, 2, 576\], expected"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.2.hook_resid_pre", lambda a, h: a[:, :2])])
    with pytest.raises(TypeError):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.2.hook_resid_pre", "not callable")])
