//! The experiment layer from the command line: the tour, reruns, config files, refusing to
//! write over a run, and option ranges.

use crate::common;

use common::{assert_clean_error, assert_ok, assert_one_line_error, interplab};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a page loads anything over the network: a `src`/`href` to http(s) or `//`, or a
/// CSS `url(http...)`. (An SVG's `xmlns="http://www.w3.org/2000/svg"` loads nothing.)
fn reaches_outside(html: &str) -> bool {
    let lower = html.to_lowercase();
    ["src=\"", "href=\"", "src='", "href='", "url("]
        .iter()
        .any(|attr| {
            lower.match_indices(attr).any(|(i, _)| {
                let v = lower[i + attr.len()..].trim_start_matches(['"', '\'']);
                v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//")
            })
        })
}

#[test]
fn the_tour_lists_every_experiment_with_its_question() {
    let out = interplab(&["tour"]);
    assert_ok(&out);
    let text = stdout(&out);
    for name in [
        "run",
        "heads",
        "compose",
        "ablate",
        "lens",
        "patch",
        "trace",
        "diff",
        "ioi",
        "toy-superposition",
        "toy-grokking",
        "toy-induction",
        "toy-whispers",
    ] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed: {text}"));
        assert!(
            line.trim_end().ends_with('?'),
            "no question for {name}: {line}"
        );
    }
    assert_one_line_error(&interplab(&["tour", "no-such", "--quick"]), "no experiment");
}

#[test]
fn tour_quick_runs_every_experiment_and_the_index_links_every_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tour");
    let out = interplab(&["tour", "all", "--quick", "--out", dir.to_str().unwrap()]);
    assert_ok(&out);
    let index = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let names: Vec<String> = interplab_lab::tour::catalog()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(names.len(), 29);
    for n in &names {
        let report = dir.join(n).join("report.html");
        assert!(report.is_file(), "{n}: no report");
        assert!(
            index.contains(&format!("href=\"{n}/report.html\"")),
            "index does not link {n}"
        );
        let html = std::fs::read_to_string(&report).unwrap();
        assert!(
            !reaches_outside(&html),
            "{n}'s report loads something from outside the file"
        );
    }
    assert!(index.contains("29 of 29 experiments ran"), "{index}");

    // A finished run repeats from its manifest, identically.
    let again = tmp.path().join("again");
    let manifest = dir.join("heads").join("manifest.json");
    let out = interplab(&[
        "rerun",
        manifest.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("identical results.json and tensors"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_existing_run_directory_is_never_written_over_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
    let args = ["run", "smollm2-135m", "--prompt", "Hello", "--out", d];
    assert_ok(&interplab(&args));
    let before = std::fs::read(dir.join("results.json")).unwrap();
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    let out = interplab(&["run", "smollm2-135m", "--prompt", "Goodbye", "--out", d]);
    assert_one_line_error(&out, "already holds files");
    assert_eq!(std::fs::read(dir.join("results.json")).unwrap(), before);
    let mut forced = args.to_vec();
    forced.push("--force");
    assert_ok(&interplab(&forced));
    assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn a_config_file_is_the_whole_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("study.toml");
    std::fs::write(
        &cfg,
        "experiment = \"run\"\nmodel = \"smollm2-135m\"\nprompt = \"The capital of France is\"\ntop_k = 3\n",
    )
    .unwrap();
    let dir = tmp.path().join("out");
    let out = interplab(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["experiment"], "run");
    assert_eq!(manifest["config"]["top_k"], 3);
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["top_next"].as_array().unwrap().len(), 3);
    // A run written by its command (typed results) reruns to the same bytes (erased results).
    let again = tmp.path().join("again");
    let manifest = dir.join("manifest.json");
    let out = interplab(&[
        "rerun",
        manifest.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("identical results.json and tensors"),
        "{}",
        stdout(&out)
    );
    // A field the experiment does not have is named in the error.
    std::fs::write(
        &cfg,
        "experiment = \"run\"\nmodel = \"smollm2-135m\"\ntopk = 3\n",
    )
    .unwrap();
    let out = interplab(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "topk");
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn generation_options_out_of_range_are_refused() {
    for (flag, value) in [("--top-p", "2"), ("--top-p", "0"), ("--temperature", "-1")] {
        let out = interplab(&["generate", "smollm2-135m", "--prompt", "hi", flag, value]);
        assert_clean_error(
            &out,
            flag.trim_start_matches("--").replace('-', "_").as_str(),
        );
    }
}
