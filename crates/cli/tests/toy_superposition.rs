//! End-to-end tests of `interplab toy superposition`'s geometry preset and phase diagram on
//! small configurations: complete run directories with the reported fields, and bad flags as
//! one clear error.

mod common;
use common::*;

#[test]
fn geometry_preset_reports_the_half_band() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = interplab(&[
        "toy",
        "superposition",
        "--preset",
        "geometry",
        "--n",
        "12",
        "--m",
        "3",
        "--steps",
        "300",
        "--out",
        d,
    ]);
    assert_ok(&out);
    assert_run_dir(
        dir.path(),
        &[
            "dims_per_feature.png",
            "results.json",
            "report.html",
            "weights.safetensors",
        ],
    );
    let r = results(dir.path());
    assert_eq!(r["dims_per_feature"].as_array().unwrap().len(), 20);
    assert!(r["half_band_text"].as_str().unwrap().contains("0.5 ± 0.05"));
    assert_clean_error(
        &interplab(&[
            "toy",
            "superposition",
            "--preset",
            "geometry",
            "--max-inv-density",
            "0.5",
        ]),
        "max_inv_density",
    );
}

#[test]
fn phase_diagram_classifies_every_cell() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = interplab(&[
        "toy",
        "superposition",
        "--phase-diagram",
        "--grid",
        "3",
        "--restarts",
        "2",
        "--steps",
        "300",
        "--out",
        d,
    ]);
    assert_ok(&out);
    assert_run_dir(
        dir.path(),
        &[
            "phase_diagram.png",
            "phase_scatter.png",
            "results.json",
            "weights.safetensors",
        ],
    );
    let r = results(dir.path());
    assert_eq!(r["cells"].as_array().unwrap().len(), 9);
    let c = &r["counts"];
    let total: u64 = ["not_represented", "superposition", "dedicated", "other"]
        .iter()
        .map(|k| c[k].as_u64().unwrap())
        .sum();
    assert_eq!(total, 9);
    assert_clean_error(
        &interplab(&[
            "toy",
            "superposition",
            "--phase-diagram",
            "--density-range",
            "0.5,2",
        ]),
        "density_range",
    );
    assert_clean_error(
        &interplab(&["toy", "superposition", "--phase-diagram", "--grid", "1"]),
        "grid must be at least 2",
    );
}

#[test]
fn toy_help_lists_every_toy() {
    let out = interplab(&["toy", "--help"]);
    assert_ok(&out);
    let help = String::from_utf8_lossy(&out.stdout);
    for toy in ["superposition", "grokking", "induction", "whispers"] {
        assert!(
            help.contains(toy),
            "`interplab toy --help` lacks {toy}: {help}"
        );
    }
    let top = interplab(&["--help"]);
    let top = String::from_utf8_lossy(&top.stdout);
    let line = top
        .lines()
        .find(|l| l.trim_start().starts_with("toy"))
        .unwrap();
    for toy in ["superposition", "grokking", "induction", "whispers"] {
        assert!(
            line.contains(toy),
            "`interplab --help` toy line lacks {toy}: {line}"
        );
    }
}
