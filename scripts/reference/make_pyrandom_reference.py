"""Expected draws of CPython's `random.Random(seed).sample` for interplab-eval's pyrandom
module: lm-evaluation-harness draws few-shot examples with `random.Random(1234).sample`,
one generator per task advanced item by item. Writes
crates/eval/tests/fixtures/pyrandom_reference.json. Standard library only."""
import json
import pathlib
import random
import sys

out = {"python": sys.version.split()[0]}
r = random.Random(1234)
out["getrandbits32"] = [r.getrandbits(32) for _ in range(3)]
samples = []
# Small populations (the pool branch), large ones (the set branch), k > 5, and a seed above
# 2^32; each case draws several times from one generator, as the harness does per item.
for seed, n, k in [(1234, 10, 3), (1234, 1000, 5), (1234, 40, 3), (1234, 299, 3),
                   (7, 50, 9), (1234, 5, 5), (2**40 + 3, 817, 2), (1234, 1, 1)]:
    r = random.Random(seed)
    samples.append({"seed": seed, "n": n, "k": k,
                    "draws": [r.sample(range(n), k) for _ in range(4)]})
out["samples"] = samples
path = pathlib.Path(__file__).resolve().parents[2] / "crates/eval/tests/fixtures/pyrandom_reference.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(path)
