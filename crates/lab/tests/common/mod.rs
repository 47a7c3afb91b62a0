//! Shared by the lab's integration tests.
#![allow(dead_code)]

use std::path::Path;

use interplab_core::loader::WeightStorage;
use interplab_lab::rerun::{compare, plan, rerun, run_to_dir, Written};
use interplab_lab::{Existing, ExperimentConfig, NoProgress};

/// Run `cfg` into `<dir>/first`, rerun it from that run's manifest into `<dir>/rerun`, and
/// assert that `results.json` and every tensor file are identical (and load). Returns both.
pub fn assert_rerun_identical(cfg: ExperimentConfig, dir: &Path) -> (Written, Written) {
    let first = run_to_dir(
        &cfg,
        Some(&dir.join("first")),
        Existing::Refuse,
        WeightStorage::Dense,
        &mut |_| {},
        &mut NoProgress,
    )
    .unwrap_or_else(|e| panic!("{} failed: {e:#}", cfg.name()));
    for f in ["manifest.json", "results.json", "report.html"] {
        assert!(first.dir.join(f).is_file(), "{} wrote no {f}", cfg.name());
    }
    let p = plan(&first.dir.join("manifest.json")).expect("manifest reads back");
    let again = rerun(&p, Some(&dir.join("rerun")), &mut |_| {}, &mut NoProgress)
        .unwrap_or_else(|e| panic!("rerun of {} failed: {e:#}", cfg.name()));
    let diffs = compare(&first.dir, &again.dir).expect("both run directories read");
    assert!(diffs.is_empty(), "{}: rerun differs: {diffs:?}", cfg.name());
    (first, again)
}

/// The names of the `.safetensors` files in a run directory.
pub fn tensor_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    v.sort();
    v
}

/// Run `cfg`, which must be refused, into a fresh directory; assert that the refusal left no
/// run directory behind and return the error's text.
pub fn refused_without_writing(cfg: ExperimentConfig) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let r = run_to_dir(
        &cfg,
        Some(&out),
        Existing::Refuse,
        WeightStorage::Dense,
        &mut |_| {},
        &mut NoProgress,
    );
    let e = match r {
        Ok(_) => panic!(
            "{} ran, but its config should have been refused",
            cfg.name()
        ),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        !out.exists(),
        "a refused {} left {}",
        cfg.name(),
        out.display()
    );
    e
}

/// Run `cfg` into `dir`, panicking with the error if it fails.
pub fn run_into(
    cfg: ExperimentConfig,
    dir: &Path,
    existing: Existing,
    progress: &mut dyn interplab_lab::Progress,
) -> Written {
    run_to_dir(
        &cfg,
        Some(dir),
        existing,
        WeightStorage::Dense,
        &mut |_| {},
        progress,
    )
    .unwrap_or_else(|e| panic!("{} failed: {e:#}", cfg.name()))
}
