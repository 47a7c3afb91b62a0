#!/usr/bin/env python3
"""Expected token ids for `crates/core/tests/tokenizer.rs`, from Hugging Face transformers.

For SmolLM2-135M-Instruct and Gemma 3 270M this loads transformers' tokenizer from the *same
GGUF files the Rust tests load* (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`; the file
is found as the tests find it: `INTERPLAB_TEST_SMOLLM2` / `INTERPLAB_TEST_GEMMA3`, else
`<cache>/models/<alias>/<file>` with the cache `INTERPLAB_CACHE`, else
`$XDG_CACHE_HOME/interplab`, else `~/.cache/interplab`; `--smollm2` / `--gemma3` override) and
writes `crates/core/tests/fixtures/reference/tokenizer_cases.json` with, per model:

- `cases`: every input text (the texts live here only; the test reads them) with
  `ids` = `tok(text, add_special_tokens=False).input_ids`,
  `ids_with_bos` = `[bos_token_id] + ids` (what `Tokenizer::encode(text, true)` must give),
  `decoded` = `tok.decode(ids)` (the round trip the test checks);
  the model's reference prompts (`reference/*/hf_logits_slim.json`) come first, marked
  `"reference": true`, and are checked here against the ids stored in that fixture;
- `chat`: a chat prompt (SmolLM2: rendered by transformers' `apply_chat_template` from the
  GGUF's own `tokenizer.chat_template`; Gemma 3: the base GGUF has no template, so the prompt is
  Gemma's documented turn format, written out below) and its ids (`ids_with_bos` for Gemma);
- special tokens: `vocab_size`, `bos_id`, `eos_id`, `add_bos_default` (does
  `add_special_tokens=True` prepend BOS), `special_id_ranges` (inclusive runs of the ids of
  the added tokens transformers marks special; every other id is not special), `eos_ids` (the EOS, then those of `<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`,
  `<|eot_id|>` that exist: Interplab's stop-token rule, with transformers' ids), and
  `token_ids` / `id_tokens` for the tokens the tests look up.

SmolLM2's pre-tokenizer: the GGUF says `tokenizer.ggml.pre = "smollm"`, which llama.cpp (and
SmolLM2's upstream `tokenizer.json`) define as "split every digit, then GPT-2's byte-level
split". transformers 5.23's GGUF converter builds only the byte-level part (it drops the digit
split), which gives different ids wherever whitespace precedes a digit ("a  1": upstream
[81, 256, 33], converter [81, 216, 216, 33]). This script therefore replaces the converted
tokenizer's pre-tokenizer with upstream's `Sequence([Digits(individual_digits=True),
ByteLevel(add_prefix_space=False, use_regex=True)])` (the `tokenizers` package) and records,
per case, the converter's own ids under `transformers_gguf_converter_ids` where they differ.
Everything else (vocabulary, merges, special tokens, decoder) is transformers' conversion of
the GGUF. Gemma 3 is transformers' conversion unchanged.

Usage: .venv-peer/bin/python scripts/peer/make_tokenizer_fixture.py [--check]
(`--check` compares with the committed fixture instead of writing it; ~45 s, mostly loading.)
"""
import argparse
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REF_DIR = os.path.join(REPO_ROOT, "crates", "core", "tests", "fixtures", "reference")
OUT = os.path.join(REF_DIR, "tokenizer_cases.json")

MODELS = {
    "smollm2": ("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", "INTERPLAB_TEST_SMOLLM2"),
    "gemma3": ("gemma3-270m", "gemma-3-270m-q4_k_m.gguf", "INTERPLAB_TEST_GEMMA3"),
}

# Texts that exercise whitespace, digits, Unicode, special-token spellings, code and URLs.
EXTRA_TEXTS = [
    "Hello world",
    "Hello, world!",
    " leading space",
    "trailing space ",
    "  two leading",
    "multiple   inner    spaces",
    "line one\nline two\n\nline four",
    "tab\there\t\tand\ttwo",
    "\n\n\nthree newlines first",
    "   ",
    "",
    "a",
    "digits 1234567890 and 3.14159 and 2+2=4",
    "year 2024, 10,000 items, x=42",
    "a  1",
    "a\t1",
    "price: $1,234.56",
    "café naïve résumé Ærøskøbing Straße",
    "emoji 😀👍🏽 🇫🇷 and ❤️",
    "中文分词测试，日本語のテキスト、한국어",
    "Здравствуй, мир",
    "mixed 中文 and English 123",
    "def f(x):\n    return x ** 2\n\n\tpass",
    "<|im_start|>user\nHi<|im_end|>\n",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos>hello<eos>",
    "<table><tr><td>x</td></tr></table>",
    "don't won't I'm we've they'll she'd it's",
    "ALL CAPS SHOUTING",
    "snake_case_name camelCaseName kebab-case",
    "https://example.com/path?q=1&r=2#frag",
    "\u2581literal lower one eighth block",
    "control \u0001\u007f chars",
    "zero\u200bwidth",
    "a" * 50 + " " + "ab" * 30,
    "  \n  \t mixed ws \r\n end",
    "😀",
    "é",
    "\u00a0nbsp\u00a0here",
    " Paris",
    "hi",
]

# Tokens whose ids the tests look up by spelling, and ids they look up by number.
LOOKUP_TOKENS = {
    "smollm2": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "\u0120Paris"],
    "gemma3": ["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "\u2581Paris", "<0xE4>"],
}
LOOKUP_IDS = {"smollm2": [0, 1, 2, 260], "gemma3": [1, 2, 105, 106, 107]}
STOP_TOKENS = ["<|im_end|>", "<end_of_turn>", "<|endoftext|>", "<|eot_id|>"]

# Gemma 3's turn format (the base GGUF carries no chat template).
GEMMA3_CHAT = "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
SMOLLM2_CHAT_MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


def cache_dir():
    for var in ("INTERPLAB_CACHE",):
        if os.environ.get(var):
            return os.environ[var]
    if os.environ.get("XDG_CACHE_HOME"):
        return os.path.join(os.environ["XDG_CACHE_HOME"], "interplab")
    return os.path.join(os.path.expanduser("~"), ".cache", "interplab")


def gguf_path(name, override):
    alias, fname, var = MODELS[name]
    p = override or os.environ.get(var) or os.path.join(cache_dir(), "models", alias, fname)
    if not os.path.exists(p):
        sys.exit(f"{name}: {p} not found (run any real-model Rust test once to fetch it, "
                 f"or pass --{name} PATH)")
    return os.path.abspath(p)


def load(name, path):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    d, f = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    converter = None
    if name == "smollm2":
        import copy

        converter = copy.deepcopy(tok)
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    return tok, converter


def reference_prompts(name):
    with open(os.path.join(REF_DIR, name, "hf_logits_slim.json")) as f:
        meta = json.load(f)
    return [(p["prompt"], p["token_ids"]) for p in meta["source_json"]["prompts"]]


def ids_of(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def ranges(ids):
    """Sorted ids as inclusive [first, last] runs."""
    out = []
    for i in sorted(ids):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def model_entry(name, path):
    import transformers

    tok, converter = load(name, path)
    bos = tok.bos_token_id
    with_special = tok("a", add_special_tokens=True).input_ids
    add_bos = with_special[0] == bos and ids_of(tok, "a")[0] != bos
    cases = []
    texts = [(t, ref) for t, ref in reference_prompts(name)] + [(t, None) for t in EXTRA_TEXTS]
    for text, ref in texts:
        ids = ids_of(tok, text)
        case = {"text": text, "ids": ids, "ids_with_bos": [bos] + ids,
                "decoded": tok.decode(ids)}
        if ref is not None:
            # The shared reference stored the ids the logits were computed on (Gemma: with BOS).
            want = ref[1:] if ref and ref[0] == bos and name == "gemma3" else ref
            assert ids == want, f"{name}: {text!r}: {ids} but the logits reference has {ref}"
            case["reference"] = True
        if converter is not None:
            conv = ids_of(converter, text)
            if conv != ids:
                case["transformers_gguf_converter_ids"] = conv
        cases.append(case)

    if name == "smollm2":
        chat_text = tok.apply_chat_template(SMOLLM2_CHAT_MESSAGES, add_generation_prompt=True,
                                            tokenize=False)
        chat = {"messages": SMOLLM2_CHAT_MESSAGES, "source": "apply_chat_template (GGUF template)",
                "text": chat_text, "ids": ids_of(tok, chat_text)}
    else:
        chat = {"source": "Gemma 3 turn format (no template in the GGUF)", "text": GEMMA3_CHAT,
                "ids_with_bos": tok(GEMMA3_CHAT, add_special_tokens=True).input_ids}
        assert chat["ids_with_bos"][0] == bos

    vocab = tok.get_vocab()
    eos_ids = []
    for t in [tok.eos_token] + STOP_TOKENS:
        if t in vocab and vocab[t] not in eos_ids:
            eos_ids.append(vocab[t])
    return {
        "gguf": os.path.basename(path),
        "vocab_size": len(tok),
        "bos_id": bos,
        "eos_id": tok.eos_token_id,
        "add_bos_default": bool(add_bos),
        "eos_ids": eos_ids,
        "special_id_ranges": ranges(k for k, v in tok.added_tokens_decoder.items() if v.special),
        "token_ids": {t: vocab.get(t) for t in LOOKUP_TOKENS[name]},
        "id_tokens": {str(i): tok.convert_ids_to_tokens(i) for i in LOOKUP_IDS[name]},
        "chat": chat,
        "cases": cases,
    }, transformers.__version__


def dumps(doc):
    """Indented JSON with each id list on one line."""
    import re

    text = json.dumps(doc, indent=1, ensure_ascii=False)
    text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]",
                  lambda m: "[" + ",".join(re.split(r",\s*", m.group(1))) + "]", text)
    return text + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2", help="SmolLM2-135M-Instruct GGUF (default: the model cache)")
    ap.add_argument("--gemma3", help="Gemma 3 270M GGUF (default: the model cache)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = ap.parse_args()
    import tokenizers

    doc = {"generator": "scripts/peer/make_tokenizer_fixture.py", "models": {}}
    for name in MODELS:
        entry, tf_version = model_entry(name, gguf_path(name, getattr(args, name)))
        doc["models"][name] = entry
        diff = sum("transformers_gguf_converter_ids" in c for c in entry["cases"])
        print(f"{name}: {len(entry['cases'])} cases, {diff} where the plain GGUF converter differs")
    doc["versions"] = {"transformers": tf_version, "tokenizers": tokenizers.__version__}
    text = dumps(doc)
    if args.check:
        with open(args.out) as f:
            same = f.read() == text
        print("matches committed" if same else f"DIFFERS from {args.out}")
        sys.exit(0 if same else 1)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
