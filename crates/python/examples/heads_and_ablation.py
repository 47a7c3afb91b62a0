import numpy as np, interplab  # `interplab heads smollm2-135m`'s top heads, then the top induction head zeroed
model = interplab.load("smollm2-135m")
heads = interplab.lab.run("heads", {"model": "smollm2-135m"})["results"]  # the CLI's defaults
for kind in ("previous_token_head", "duplicate_token_head", "induction_head"):
    print(f"{kind:21}", "  ".join(f"{l}.{h} {s:.4f}" for l, h, s in heads[kind]["top"][:5]))
(l, h, _), toks = heads["induction_head"]["top"][0], np.array(heads["sequences"])  # random tokens, repeated
def zero(z, hook): z[:, :, h, :] = 0.0  # in place, as with torch in TransformerLens
def nll(lg, n=toks.shape[1] // 2):  # mean next-token loss on the repeated half
    x = lg[:, n:-1] - lg[:, n:-1].max(-1, keepdims=True); return -np.take_along_axis(x - np.log(np.exp(x).sum(-1, keepdims=True)), toks[:, n + 1:, None], -1).mean()
print(f"{l}.{h} zeroed: repeated-half loss {nll(model(toks)):.3f} -> {nll(model.run_with_hooks(toks, fwd_hooks=[(f'blocks.{l}.attn.hook_z', zero)])):.3f}")
