//! Shared helpers of the end-to-end tests: run the binary, check clean errors and run
//! directories, find fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Run `interplab` with `args`.
pub fn interplab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_interplab"))
        .args(args)
        .output()
        .expect("running interplab")
}

/// A failure, without a panic, whose stderr mentions `needle`.
pub fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

/// `dir` holds a non-empty manifest, results, report and each of `files`.
pub fn assert_run_dir(dir: &Path, files: &[&str]) {
    for f in ["manifest.json", "results.json", "report.html"]
        .iter()
        .chain(files)
    {
        let p = dir.join(f);
        assert!(p.is_file(), "missing {}", p.display());
        assert!(
            std::fs::metadata(&p).unwrap().len() > 0,
            "empty {}",
            p.display()
        );
    }
}

/// `results.json` of a run directory.
pub fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

/// A tiny Hugging Face fixture model directory (`llama-tiny`, ...).
pub fn tiny_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures/hf")
        .join(name)
}
