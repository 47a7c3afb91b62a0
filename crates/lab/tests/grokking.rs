//! `toy-grokking` through the lab: reruns give identical results, final weights and snapshots
//! (all loadable safetensors), no timings reach results.json, a resumed run ends with the
//! weights of an uninterrupted one, and a bad config lists every problem before any run
//! directory exists.

use crate::common;

use candle_core::Device;
use interplab_lab::grokking::Config;
use interplab_lab::{Existing, Experiment, ExperimentConfig, Recorder};

fn run_into(cfg: &Config, dir: &std::path::Path, existing: Existing) -> Recorder {
    let mut rec = Recorder::default();
    common::run_into(cfg.clone().into(), dir, existing, &mut rec);
    rec
}

#[test]
fn rerun_is_identical_with_weights_and_snapshots_as_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(
        common::tensor_files(&first.dir),
        [
            "snapshot-epoch0000000.safetensors",
            "snapshot-epoch0000030.safetensors",
            "snapshot-epoch0000060.safetensors",
            "snapshot-epoch0000090.safetensors",
            "weights.safetensors",
        ]
    );
    let w = candle_core::safetensors::load(first.dir.join("weights.safetensors"), &Device::Cpu)
        .unwrap();
    // p = 13: 14 input tokens (13 numbers and `=`), 13 outputs; d_model 16.
    assert_eq!(w["embed.W_E"].dims(), [14, 16]);
    assert_eq!(w["unembed.W_U"].dims(), [16, 13]);
    assert_eq!(w["blocks.0.attn.W_Q"].dims(), [2, 16, 8]);
    assert_eq!(w.len(), 9);
    let s90 = candle_core::safetensors::load(
        first.dir.join("snapshot-epoch0000090.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for (name, t) in &w {
        let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = s90[name].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{name}: the last snapshot is the final weights");
    }
    let r = &first.outcome.results;
    assert_eq!(r["epochs"], 90);
    assert_eq!(r["progress_measures"].as_array().unwrap().len(), 4);
    for key in ["wall_s", "epochs_per_s", "seconds_at_test_acc_99"] {
        assert!(r.get(key).is_none(), "{key} is a timing: not in results");
    }
    assert!(first.dir.join("checkpoint.json").is_file());
    assert!(first.dir.join("metrics.json").is_file());
}

#[test]
fn resumed_run_ends_with_the_weights_of_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Config::quick();
    let straight = tmp.path().join("straight");
    run_into(&cfg, &straight, Existing::Refuse);
    let split = tmp.path().join("split");
    run_into(
        &Config {
            epochs: 60,
            ..cfg.clone()
        },
        &split,
        Existing::Refuse,
    );
    let rec = run_into(&cfg, &split, Existing::Resume);
    assert!(
        rec.events
            .iter()
            .any(|e| e == "note: resuming from epoch 60"),
        "{:?}",
        rec.events
    );
    let load = |d: &std::path::Path| {
        candle_core::safetensors::load(d.join("weights.safetensors"), &Device::Cpu).unwrap()
    };
    let (a, b) = (load(&straight), load(&split));
    for (name, t) in &a {
        let x: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(x, y, "{name} differs after resume");
    }
}

#[test]
fn a_bad_config_lists_every_problem_and_writes_nothing() {
    let bad = Config {
        p: 14,
        frac_train: 1.5,
        stop_at_test_acc: Some(2.0),
        beta1: 1.0,
        epochs: 0,
        snapshot_every: 0,
        ..Config::default()
    };
    let e = bad.validate().unwrap_err().to_string();
    for needle in [
        "p must be odd",
        "frac_train must be in (0, 1), got 1.5",
        "stop_at_test_acc must be in [0, 1], got 2",
        "beta1 must be in [0, 1)",
        "epochs must be at least 1",
        "snapshot_every must be at least 1",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    common::refused_without_writing(ExperimentConfig::from(bad));
}
