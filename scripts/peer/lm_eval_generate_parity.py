"""Per-item parity and speed of `interplab eval` on a `generate_until` task against
lm-evaluation-harness 0.4.13 (HF backend, the same GGUF dequantised to float32).

Both tools read the same YAML (crates/eval/tests/fixtures/generate/capitals.yaml: greedy, stop
strings, two filter pipelines, exact_match with ignore_case and ignore_punctuation). For each
number of shots the script runs the harness at batch size 1 (its default) and at --le-batch,
then `interplab eval`, and compares the generated text, each pipeline's filtered output and
exact_match per item, and the aggregates with their standard errors. It prints generated
tokens/s for both, from the generation wall time only (models loaded beforehand; the harness's
time is simple_evaluate's, which is almost all generation here).

  .venv-peer/bin/python scripts/peer/lm_eval_generate_parity.py \
      --gguf ~/.cache/interplab/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf \
      --interplab target/release/interplab --shots 0,2 [--threads 2] [--le-batch 16] \
      [--write-fixture]

With --write-fixture it writes the harness's per-item outputs to
crates/eval/tests/fixtures/generate/lm_eval_expected.json for
crates/eval/tests/lm_eval_generate_parity.rs.
"""
import argparse
import json
import pathlib
import subprocess
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
FIXTURE = HERE.parent.parent / "crates/eval/tests/fixtures/generate"
TASK = "capitals_gen"


def task_dir():
    """The YAML with an absolute data path (the harness resolves it from the working dir)."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="le-gen-"))
    text = (FIXTURE / "capitals.yaml").read_text()
    text = text.replace("test: capitals.jsonl", f"test: {FIXTURE / 'capitals.jsonl'}")
    (work / "capitals.yaml").write_text(text)
    return work


def run_le(lm, work, shots):
    import lm_eval
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(work))
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm, tasks=[TASK], num_fewshot=shots, log_samples=True, task_manager=tm,
        fewshot_random_seed=1234, random_seed=0, numpy_random_seed=1234, torch_random_seed=1234,
    )
    seconds = time.perf_counter() - t0
    res = out["results"][TASK]
    samples = sorted(out["samples"][TASK], key=lambda s: (s["doc_id"], s["filter"]))
    items = {}
    for s in samples:
        it = items.setdefault(s["doc_id"], {"doc": s["doc_id"], "filtered": {}, "scores": {}})
        it["text"] = s["resps"][0][0]
        args = s["arguments"]
        it["context"] = args[0][0] if isinstance(args, list) else args["gen_args_0"]["arg_0"]
        it["filtered"][s["filter"]] = s["filtered_resps"][0]
        it["scores"][f"exact_match,{s['filter']}"] = float(s["exact_match"])
    agg = {}
    for k, v in res.items():
        if k.startswith("exact_match") and "stderr" not in k:
            agg[k] = {"value": v, "stderr": res[k.replace("exact_match", "exact_match_stderr")]}
    return {"seconds": seconds, "items": [items[k] for k in sorted(items)], "aggregates": agg}


def new_tokens(tok, items):
    return sum(len(tok(it["text"], add_special_tokens=False)["input_ids"]) for it in items)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--interplab", default="target/release/interplab")
    ap.add_argument("--shots", default="0,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--le-batch", type=int, default=0)
    ap.add_argument("--write-fixture", action="store_true")
    a = ap.parse_args()
    shots = [int(s) for s in a.shots.split(",")]

    import torch
    from lm_eval.models.huggingface import HFLM

    torch.set_num_threads(a.threads)
    work = task_dir()
    gguf = pathlib.Path(a.gguf).expanduser()
    lm = HFLM(pretrained=str(gguf.parent), gguf_file=gguf.name, dtype="float32", batch_size=1,
              device="cpu")
    le = {k: run_le(lm, work, k) for k in shots}
    le_b = {}
    if a.le_batch:
        lm_b = HFLM(pretrained=str(gguf.parent), gguf_file=gguf.name, dtype="float32",
                    batch_size=a.le_batch, device="cpu")
        le_b = {k: run_le(lm_b, work, k) for k in shots}

    with tempfile.TemporaryDirectory() as d:
        out = pathlib.Path(d) / "run"
        cmd = [a.interplab, "--threads", str(a.threads), "eval", str(gguf), "--task",
               str(FIXTURE / "capitals.yaml"), "--num-fewshot", ",".join(map(str, shots)),
               "--out", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        ours = json.loads((out / "results.json").read_text())
        manifest = json.loads((out / "manifest.json").read_text())
    phases = {p["name"]: p["seconds"] for p in manifest["phases"]}

    print(f"cpu: {manifest['cpu']['model']}, threads {a.threads}")
    ok = True
    tok = lm.tokenizer
    for n, (v, k) in enumerate(zip(ours["variants"], shots)):
        ref = le[k]
        differ = [i for i, (x, y) in enumerate(zip(v["generations"], ref["items"]))
                  if x["text"] != y["text"] or x["filtered"] != y["filtered"]
                  or x["scores"] != y["scores"]]
        ok &= not differ and len(v["generations"]) == len(ref["items"])
        print(f"{k}-shot: {len(ref['items'])} items, {len(differ)} differ {differ[:5]}")
        for ag in v["aggregates"]:
            r = ref["aggregates"][ag["metric"]]
            print(f"  {ag['metric']}: interplab {ag['value']:.4f} ± {ag['stderr']:.4f}, "
                  f"harness {r['value']:.4f} ± {r['stderr']:.4f}")
        toks = new_tokens(tok, ref["items"])
        line = f"  harness b1 {toks / ref['seconds']:.1f} tokens/s ({ref['seconds']:.1f} s)"
        if le_b:
            line += f", b{a.le_batch} {toks / le_b[k]['seconds']:.1f} tokens/s"
        secs = phases[f"variant {n + 1} of {len(shots)}"]
        print(line + f"; interplab {toks / secs:.1f} tokens/s ({secs:.1f} s)")
    if a.write_fixture:
        expected = {"generator": "lm_eval 0.4.13, HFLM float32, batch 1, " + gguf.name,
                    "shots": {str(k): le[k] for k in shots}}
        for k in shots:
            expected["shots"][str(k)].pop("seconds")
        (FIXTURE / "lm_eval_expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        print("wrote", FIXTURE / "lm_eval_expected.json")
    print("PARITY OK" if ok else "PARITY DIFFERS")


if __name__ == "__main__":
    main()
