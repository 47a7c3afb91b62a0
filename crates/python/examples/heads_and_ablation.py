"""`interplab heads smollm2-135m`'s top heads, then the top induction head zero-ablated."""
import numpy as np, interplab

model = interplab.load("smollm2-135m")
heads = interplab.lab.run("heads", {"model": "smollm2-135m"})["results"]  # the CLI's defaults
for kind in ("induction_head", "previous_token_head"):
    print(f"{kind:20}", "  ".join(f"{l}.{h} {s:.3f}" for l, h, s in heads[kind]["top"][:5]))
layer, head, _ = heads["induction_head"]["top"][0]
tokens = np.array(heads["sequences"])  # 4 sequences of 50 random tokens, each repeated once

def repeat_loss(logits, half=tokens.shape[1] // 2):  # next-token loss on the repeated halves
    x = logits[:, half:-1] - logits[:, half:-1].max(-1, keepdims=True)
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    return -np.take_along_axis(lp, tokens[:, half + 1 :, None], -1).mean()

def zero_head(z, hook): z[:, :, head, :] = 0.0  # in place, as with torch in TransformerLens
ablated = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)])
print(f"repeated-half loss {repeat_loss(model(tokens)):.3f} -> {repeat_loss(ablated):.3f} with {layer}.{head} zeroed")
