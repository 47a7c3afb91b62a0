//! One successful end-to-end run of each command the other CLI tests only exercise on their
//! error paths (`ablate`, `compose`) or not at all (`models`, `generate`, `bench`), on the
//! default model with small settings, checking what each writes.

use crate::common;
use common::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tensors(path: &std::path::Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
}

#[test]
fn ablate_ranks_every_head_by_its_loss_increase() {
    let dir = tempfile::tempdir().unwrap();
    let out = interplab(&[
        "ablate",
        "smollm2-135m",
        "--max-docs",
        "1",
        "--max-tokens",
        "8",
        "--top-k",
        "3",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_run_dir(
        dir.path(),
        &[
            "ablation.safetensors",
            "loss_increase.svg",
            "loss_increase.png",
        ],
    );
    let grid = tensors(&dir.path().join("ablation.safetensors"))["loss_increase"]
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!((grid.len(), grid[0].len()), (30, 9));
    let r = results(dir.path());
    assert!(r["result"]["clean_loss"].as_f64().unwrap() > 0.0);
    // The listed heads are the grid's three largest increases, in order.
    let mut all: Vec<(usize, usize, f32)> = (0..30)
        .flat_map(|l| (0..9).map(move |h| (l, h)))
        .map(|(l, h)| (l, h, grid[l][h]))
        .collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2));
    let top = r["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    for (t, want) in top.iter().zip(&all) {
        assert_eq!(
            (
                t[0].as_u64().unwrap() as usize,
                t[1].as_u64().unwrap() as usize
            ),
            (want.0, want.1)
        );
        assert!(
            (t[2].as_f64().unwrap() - want.2 as f64).abs() < 1e-6,
            "{t} vs {want:?}"
        );
    }
}

#[test]
fn compose_scores_lie_between_zero_and_one_and_only_point_forward() {
    let dir = tempfile::tempdir().unwrap();
    let out = interplab(&[
        "compose",
        "smollm2-135m",
        "--kinds",
        "k",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_run_dir(dir.path(), &["composition.safetensors", "compose_k.svg"]);
    let k = tensors(&dir.path().join("composition.safetensors"))["k"].clone();
    assert_eq!(k.dims(), &[30, 9, 30, 9]);
    let v: Vec<f32> = k.flatten_all().unwrap().to_vec1().unwrap();
    // ‖AB‖_F ≤ ‖A‖_F‖B‖_F: a composition score is in [0, 1]; and a head only composes with
    // heads of later layers, so every pair (l1, l2) with l2 ≤ l1 is zero.
    assert!(
        v.iter().all(|x| (0.0..=1.0).contains(x)),
        "a score outside [0, 1]"
    );
    for l1 in 0..30 {
        for l2 in 0..=l1 {
            for (h1, h2) in (0..9).flat_map(|a| (0..9).map(move |b| (a, b))) {
                let x = v[((l1 * 9 + h1) * 30 + l2) * 9 + h2];
                assert_eq!(x, 0.0, "({l1}.{h1} -> {l2}.{h2}) = {x}");
            }
        }
    }
    let r = results(dir.path());
    let baseline = r["random_baseline"].as_f64().unwrap();
    let best = r["k"]["top"][0][4].as_f64().unwrap();
    assert!(
        baseline > 0.0 && best > baseline,
        "best {best}, baseline {baseline}"
    );
}

#[test]
fn models_lists_each_alias_cached_or_not() {
    // Any test that ran the model has fetched it; fetch is idempotent.
    assert_ok(&interplab(&["fetch", "smollm2-135m"]));
    let out = interplab(&["models"]);
    assert_ok(&out);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("smollm2-135m"))
        .unwrap_or_else(|| panic!("smollm2-135m not listed: {text}"));
    let path = line.split_whitespace().last().unwrap();
    assert!(
        path.ends_with(".gguf") && std::path::Path::new(path).is_file(),
        "{line}"
    );
    assert_ne!(line.split_whitespace().nth(1), Some("no"), "{line}");
    // An empty cache: nothing cached, and each alias says how to fetch it.
    let empty = tempfile::tempdir().unwrap();
    let out = interplab_env(&["models"], &[("INTERPLAB_CACHE", empty.path())]);
    assert_ok(&out);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("smollm2-135m"))
        .unwrap_or_else(|| panic!("smollm2-135m not listed: {text}"));
    assert_eq!(line.split_whitespace().nth(1), Some("no"), "{line}");
    assert!(line.contains("(interplab fetch smollm2-135m)"), "{line}");
}

#[test]
fn greedy_generation_starts_with_the_forward_pass_top_token() {
    let prompt = "The capital of France is";
    let out = interplab(&[
        "generate",
        "smollm2-135m",
        "--prompt",
        prompt,
        "--max-new-tokens",
        "4",
    ]);
    assert_ok(&out);
    let text = stdout(&out);
    // `run` takes the full forward (no KV cache) of the same prompt: greedy decoding's first
    // token is its top next token.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("run");
    let run = interplab(&[
        "run",
        "smollm2-135m",
        "--prompt",
        prompt,
        "--top-k",
        "1",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert_ok(&run);
    let first = results(&d)["top_next"][0]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.starts_with(first.as_str()),
        "generated {text:?}, forward top token {first:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens/s"));
}

#[test]
fn bench_measures_load_and_forward() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = interplab(&[
        "bench",
        "smollm2-135m",
        "--what",
        "load,forward",
        "--runs",
        "1",
        "--batch",
        "1",
        "--seq",
        "8",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["name"], "interplab_load");
    assert!(v[0]["median_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v[1]["name"], "interplab_forward");
    assert!(v[1]["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        v[1]["peak_rss_bytes"].as_u64().unwrap() > 100 << 20,
        "{}",
        v[1]
    );
    assert_eq!(stdout(&out).lines().count(), 2);
}
