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

/// Run `interplab` with `args` and extra environment variables.
pub fn interplab_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_interplab"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running interplab")
}

/// A success; the failure message is the command's stderr.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A failure, without a panic, whose stderr mentions `needle` (case-insensitive). Argument
/// errors come from clap, which adds a usage line; see [`assert_one_line_error`] for the rest.
pub fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "panic instead of an error: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in: {stderr}"
    );
}

/// [`assert_clean_error`], and stderr is exactly one line, `error: …`, naming `needle`.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    assert_clean_error(out, needle);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "error line lacks `{needle}`: {stderr}"
    );
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
