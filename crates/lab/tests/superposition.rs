//! `toy-superposition` through the lab: reruns give identical results and weights, the weights
//! load from `weights.safetensors`, a resumed run equals an uninterrupted one, and a bad config
//! lists every problem before any run directory exists.

use crate::common;

use candle_core::Device;
use interplab_lab::rerun::compare;
use interplab_lab::superposition::Config;
use interplab_lab::{Existing, Experiment, ExperimentConfig, NoProgress};
use interplab_train::checkpoint;
use interplab_train::superposition::ToyModel;

fn run_into(cfg: &Config, dir: &std::path::Path, existing: Existing) {
    common::run_into(cfg.clone().into(), dir, existing, &mut NoProgress);
}

#[test]
fn rerun_is_identical_and_every_instance_weight_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = common::assert_rerun_identical(Config::quick().into(), tmp.path());
    assert_eq!(common::tensor_files(&first.dir), ["weights.safetensors"]);
    let t = candle_core::safetensors::load(first.dir.join("weights.safetensors"), &Device::Cpu)
        .unwrap();
    // The paper's preset: 7 sparsities, n = 20 features, m = 5 dimensions.
    assert_eq!(t["W"].dims(), [7, 5, 20]);
    assert_eq!(t["b"].dims(), [7, 20]);
    assert_eq!(t["sparsity"].dims(), [7]);
    assert_eq!(t["importance"].dims(), [7, 20]);
    // They are the trained weights: the checkpoint holds the same numbers.
    let model: ToyModel = checkpoint::load(&first.dir.join("checkpoint.json")).unwrap();
    let w: Vec<f32> = t["W"].flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(&w[..100], model.instances[0].w());
    let r = &first.outcome.results;
    assert_eq!(r["geometry"].as_array().unwrap().len(), 7);
    assert!(r.get("wall_s").is_none(), "no timings in results");
}

#[test]
fn phase_diagram_reruns_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Config {
        phase_diagram: true,
        grid: 3,
        restarts: 2,
        steps: 300,
        ..Config::default()
    };
    let (first, _) = common::assert_rerun_identical(cfg.into(), tmp.path());
    let t = candle_core::safetensors::load(first.dir.join("weights.safetensors"), &Device::Cpu)
        .unwrap();
    assert_eq!(t["W"].dims(), [18, 1, 2]);
    assert_eq!(first.outcome.results["cells"].as_array().unwrap().len(), 9);
}

#[test]
fn resumed_run_equals_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Config {
        steps: 200,
        checkpoint_every: 100,
        sparsities: Some(vec![0.0, 0.9]),
        ..Config::default()
    };
    let straight = tmp.path().join("straight");
    run_into(&cfg, &straight, Existing::Refuse);
    // "Interrupted" after the first checkpoint.
    let split = tmp.path().join("split");
    std::fs::create_dir(&split).unwrap();
    let mut m = ToyModel::new(cfg.train_config()).unwrap();
    m.train(100, &mut |_, _| {});
    checkpoint::save(&split.join("checkpoint.json"), &m).unwrap();
    run_into(&cfg, &split, Existing::Resume);
    assert_eq!(compare(&straight, &split).unwrap(), Vec::<String>::new());
}

#[test]
fn a_bad_config_lists_every_problem_and_writes_nothing() {
    let bad = Config {
        sparsities: Some(vec![0.5, 1.5]),
        batch: 0,
        lr: -1.0,
        checkpoint_every: 0,
        m: Some(0),
        ..Config::default()
    };
    let e = bad.validate().unwrap_err().to_string();
    for needle in [
        "sparsities must be in [0, 1), got 1.5",
        "batch must be at least 1",
        "lr must be positive",
        "checkpoint_every must be at least 1",
        "m must be at least 1",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    let phase = Config {
        phase_diagram: true,
        n: Some(3),
        grid: 1,
        restarts: 0,
        density_range: vec![0.5, 2.0],
        ..Config::default()
    };
    let e = phase.validate().unwrap_err().to_string();
    for needle in [
        "sets n, m",
        "grid must be at least 2",
        "restarts",
        "density_range",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    let geometry = Config {
        preset: interplab_lab::superposition::Preset::Geometry,
        max_inv_density: 0.5,
        ..Config::default()
    };
    assert!(geometry
        .validate()
        .unwrap_err()
        .to_string()
        .contains("max_inv_density"));
    common::refused_without_writing(ExperimentConfig::from(bad));
}
