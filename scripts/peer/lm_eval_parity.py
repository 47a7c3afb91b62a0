"""Per-item parity and speed of `interplab eval` against lm-evaluation-harness (HF backend).

Both tools read the same harness YAML task over the same JSON Lines (TruthfulQA MC1 from
BIG-bench's truthful_qa/task_mc.json, converted exactly as interplab_eval::builtin does), on the
same GGUF (the harness through transformers, dequantised to float32). For each number of shots
the script runs the harness (batch size 1, its default, and --le-batch), then `interplab eval`,
and compares per-choice log-likelihoods, predictions, and acc / acc_norm with their standard
errors. It prints items/s for both, from the scoring wall time only (models loaded beforehand).

  .venv-peer/bin/python scripts/peer/lm_eval_parity.py --task-mc PATH/task_mc.json \
      --gguf ~/.cache/interplab/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf \
      --interplab target/release/interplab --shots 0,2 [--limit N] [--threads 2] \
      [--fixture crates/eval/tests/fixtures/truthfulqa]

With --fixture it writes the task (YAML + the first --limit items) and the harness's per-item
values there, for crates/eval/tests/lm_eval_parity.rs. Needs lm_eval==0.4.13 in the peer venv
(scripts/peer/requirements-lm-eval.txt).
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

YAML = """task: truthfulqa_bb_mc1
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
fewshot_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_choice: choices
doc_to_target: label
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def convert(task_mc):
    """BIG-bench examples -> {question, choices (file order), label (the choice scored 1)}."""
    data = json.loads(pathlib.Path(task_mc).read_text())
    items = []
    for i, ex in enumerate(data["examples"]):
        choices = list(ex["target_scores"].keys())
        correct = [j for j, s in enumerate(ex["target_scores"].values()) if s == 1]
        assert len(correct) == 1, f"example {i}: {len(correct)} correct choices"
        items.append({"question": ex["input"], "choices": choices, "label": correct[0]})
    return items


def run_le(lm, task_dir, shots, limit):
    import lm_eval
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(task_dir))
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm, tasks=["truthfulqa_bb_mc1"], num_fewshot=shots, limit=limit,
        log_samples=True, task_manager=tm, fewshot_random_seed=1234,
        random_seed=0, numpy_random_seed=1234, torch_random_seed=1234,
    )
    seconds = time.perf_counter() - t0
    res = out["results"]["truthfulqa_bb_mc1"]
    samples = sorted(out["samples"]["truthfulqa_bb_mc1"], key=lambda s: s["doc_id"])
    items = []
    for s in samples:
        lls = [float(r[0][0]) for r in s["resps"]]
        items.append({
            "doc": s["doc_id"],
            "context": s["arguments"][0][0] if isinstance(s["arguments"][0], (list, tuple)) else s["arguments"]["gen_args_0"]["arg_0"],
            "loglikelihoods": lls,
            "acc": float(s["acc"]),
            "acc_norm": float(s["acc_norm"]),
        })
    agg = {k.split(",")[0]: v for k, v in res.items() if "," in k}
    return {"seconds": seconds, "items": items, "aggregates": agg}


def run_interplab(binary, yaml_path, shots, limit, threads, gguf):
    with tempfile.TemporaryDirectory() as d:
        out = pathlib.Path(d) / "run"
        cmd = [binary, "--threads", str(threads), "eval", gguf, "--task", str(yaml_path),
               "--num-fewshot", ",".join(map(str, shots)), "--out", str(out)]
        if limit:
            cmd += ["--limit", str(limit)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        results = json.loads((out / "results.json").read_text())
        manifest = json.loads((out / "manifest.json").read_text())
    return results, manifest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task-mc", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--interplab", default="target/release/interplab")
    ap.add_argument("--shots", default="0,2")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--le-batch", type=int, default=0, help="also time the harness at this batch size")
    ap.add_argument("--fixture", default=None)
    a = ap.parse_args()
    shots = [int(s) for s in a.shots.split(",")]

    import torch
    from lm_eval.models.huggingface import HFLM

    torch.set_num_threads(a.threads)
    items = convert(a.task_mc)
    limit = a.limit or None
    work = pathlib.Path(tempfile.mkdtemp(prefix="le-parity-"))
    data = work / "truthfulqa_mc1.jsonl"
    # The harness draws shots from the whole split, so the file keeps every item.
    data.write_text("".join(json.dumps(x) + "\n" for x in items))
    (work / "truthfulqa_bb_mc1.yaml").write_text(YAML.format(data=data))

    gguf = pathlib.Path(a.gguf).expanduser()
    lm = HFLM(pretrained=str(gguf.parent), gguf_file=gguf.name, dtype="float32", batch_size=1,
              device="cpu")
    le = {k: run_le(lm, work, k, limit) for k in shots}
    le_batched = {}
    if a.le_batch:
        lm_b = HFLM(pretrained=str(gguf.parent), gguf_file=gguf.name, dtype="float32",
                    batch_size=a.le_batch, device="cpu")
        le_batched = {k: run_le(lm_b, work, k, limit) for k in shots}

    ours, manifest = run_interplab(a.interplab, work / "truthfulqa_bb_mc1.yaml", shots, a.limit,
                                   a.threads, str(gguf))
    phases = {p["name"]: p["seconds"] for p in manifest["phases"]}

    print(f"cpu: {manifest['cpu']['model']}, threads {a.threads}")
    worst_all = 0.0
    ok = True
    for idx, (v, k) in enumerate(zip(ours["variants"], shots)):
        assert v["num_fewshot"] == k
        ref = le[k]
        worst = 0.0
        pred_diff = 0
        for mine, theirs in zip(v["items"], ref["items"]):
            assert mine["doc"] == theirs["doc"]
            d = max(abs(x - y) for x, y in zip(mine["loglikelihoods"], theirs["loglikelihoods"]))
            worst = max(worst, d)
            pred_diff += (mine["acc"] != theirs["acc"]) + (mine["acc_norm"] != theirs["acc_norm"])
        worst_all = max(worst_all, worst)
        n = len(v["items"])
        mine_agg = {x["metric"]: (x["value"], x["stderr"]) for x in v["aggregates"]}
        print(f"{k}-shot, {n} items: max |Δ log-lik| {worst:.2e}, differing acc/acc_norm {pred_diff}")
        for m in ("acc", "acc_norm"):
            lv, ls = ref["aggregates"][m], ref["aggregates"][m + "_stderr"]
            iv, is_ = mine_agg[m]
            print(f"  {m:<9} harness {lv:.4f} ± {ls:.4f}   interplab {iv:.4f} ± {is_:.4f}")
            ok &= abs(lv - iv) < 1e-9 and abs(ls - is_) < 1e-9
        ok &= worst < 1e-3 and pred_diff == 0
        line = f"  harness batch 1: {n / ref['seconds']:.2f} items/s ({ref['seconds']:.1f} s)"
        if k in le_batched:
            b = le_batched[k]["seconds"]
            line += f"; batch {a.le_batch}: {n / b:.2f} items/s ({b:.1f} s)"
        mine_s = phases[f"variant {idx + 1} of {len(shots)}"]
        print(line + f"; interplab: {n / mine_s:.2f} items/s ({mine_s:.1f} s)")
    secs = sum(s for name, s in phases.items() if name.startswith("variant"))
    total = sum(len(v["items"]) for v in ours["variants"])
    le_secs = sum(le[k]["seconds"] for k in shots)
    print(f"interplab: {total / secs:.2f} items/s ({secs:.1f} s scoring, all variants); "
          f"harness batch 1: {total / le_secs:.2f} items/s -> {le_secs / secs:.2f}x")
    if le_batched:
        lb = sum(le_batched[k]["seconds"] for k in shots)
        print(f"harness batch {a.le_batch}: {total / lb:.2f} items/s -> interplab {lb / secs:.2f}x")

    if a.fixture:
        fx = pathlib.Path(a.fixture)
        fx.mkdir(parents=True, exist_ok=True)
        n = a.limit or len(items)
        # The fixture's split holds only the first n items, so the few-shot pool is those n;
        # its expected values are therefore computed on that file, not on the run above.
        (fx / "truthfulqa_mc1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items[:n]))
        (fx / "truthfulqa_mc1.yaml").write_text(YAML.format(data="truthfulqa_mc1.jsonl"))
        sub = pathlib.Path(tempfile.mkdtemp(prefix="le-fixture-"))
        (sub / "truthfulqa_mc1.jsonl").write_text((fx / "truthfulqa_mc1.jsonl").read_text())
        (sub / "truthfulqa_bb_mc1.yaml").write_text(YAML.format(data=sub / "truthfulqa_mc1.jsonl"))
        import lm_eval
        expected = {"lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "0.4.13",
                    "model": gguf.name, "shots": {}}
        for k in shots:
            r = run_le(lm, sub, k, None)
            expected["shots"][str(k)] = {"items": r["items"], "aggregates": r["aggregates"]}
        (fx / "lm_eval_expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        print(f"wrote {fx}")
    print("PARITY OK" if ok else "PARITY FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
