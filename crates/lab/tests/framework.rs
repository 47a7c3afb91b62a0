//! The lab layer itself: the catalog, config files, manifests, the tour index.

use interplab_lab::manifest::seeds_of;
use interplab_lab::tour::{index_html, Stop};
use interplab_lab::{config_from_file, heads, ExperimentConfig};

#[test]
fn the_catalog_names_every_experiment_once_with_a_question() {
    let all = ExperimentConfig::all_quick();
    let mut names: Vec<&str> = all.iter().map(|c| c.name()).collect();
    assert_eq!(names.len(), 29);
    for c in &all {
        assert!(
            c.question().ends_with('?'),
            "{}: {}",
            c.name(),
            c.question()
        );
        c.validate()
            .unwrap_or_else(|e| panic!("{}'s quick config is invalid: {e:#}", c.name()));
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 29, "duplicate catalog names");
}

#[test]
fn configs_read_from_toml_and_json_with_defaults_and_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("study.toml");
    std::fs::write(&toml, "experiment = \"heads\"\nmodel = \"my-model\"\n").unwrap();
    match ExperimentConfig::from_file(&toml).unwrap() {
        ExperimentConfig::Heads(c) => {
            assert_eq!(c.model, "my-model");
            // Missing fields take the defaults.
            let d = heads::Config::default();
            // The placeholder heads::Config has only `model`; the update matters once it moves.
            #[allow(clippy::needless_update)]
            let same = (
                heads::Config {
                    model: d.model.clone(),
                    ..c.clone()
                },
                d.clone(),
            );
            assert_eq!(same.0, same.1);
        }
        other => panic!("read as {}", other.name()),
    }
    // The same file read for its own experiment, and refused for another.
    let c: heads::Config = config_from_file(&toml).unwrap();
    assert_eq!(c.model, "my-model");
    let e = config_from_file::<interplab_lab::lens::Config>(&toml).unwrap_err();
    assert!(e.to_string().contains("not for lens"), "{e}");

    let json = dir.path().join("study.json");
    std::fs::write(
        &json,
        r#"{"experiment": "heads", "model": "m", "no_such_field": 1}"#,
    )
    .unwrap();
    let e = format!("{:#}", ExperimentConfig::from_file(&json).unwrap_err());
    assert!(e.contains("no_such_field"), "{e}");
    std::fs::write(&json, r#"{"experiment": "no-such-experiment"}"#).unwrap();
    let e = format!("{:#}", ExperimentConfig::from_file(&json).unwrap_err());
    assert!(e.contains("no-such-experiment"), "{e}");
    let e = ExperimentConfig::from_file(&dir.path().join("study.yaml")).unwrap_err();
    assert!(format!("{e:#}").contains("reading"), "{e:#}");
}

#[test]
fn seeds_are_collected_by_path() {
    let v = serde_json::json!({"seed": 3, "data": {"shuffle_seed": 9, "n": 4}, "seeds": "x"});
    let s = seeds_of(&v);
    assert_eq!(s.len(), 2);
    assert_eq!(s["seed"], 3);
    assert_eq!(s["data.shuffle_seed"], 9);
}

#[test]
fn the_tour_index_links_every_report_that_ran() {
    let stops = vec![
        Stop {
            name: "heads",
            dir: "heads".into(),
            seconds: 1.5,
            error: None,
            thumbnail: Some("heads/induction.png".into()),
        },
        Stop {
            name: "lens",
            dir: "lens".into(),
            seconds: 0.1,
            error: Some("no <model>".into()),
            thumbnail: None,
        },
    ];
    let html = index_html(&stops);
    assert!(
        html.contains("<a href=\"heads/report.html\">heads</a>"),
        "{html}"
    );
    assert!(html.contains("src=\"heads/induction.png\""));
    assert!(
        !html.contains("lens/report.html"),
        "a failed run has no report to link"
    );
    assert!(html.contains("failed</span>: no &lt;model&gt;"));
    assert!(html.contains("1 of 2 experiments ran"));
}
