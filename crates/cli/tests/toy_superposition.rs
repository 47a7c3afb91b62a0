//! End-to-end tests of `interplab toy superposition`'s geometry preset and phase diagram on
//! small configurations: complete run directories with the reported fields, and bad flags as
//! one clear error.

use crate::common;
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
    // The band is the longest run of consecutive sparsities whose D* lies in [0.45, 0.55],
    // found here again from the reported D*s (this run has one of 3).
    let dstar: Vec<f64> = r["dims_per_feature"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (mut best, mut start) = (None::<(usize, usize)>, None);
    for (i, d) in dstar.iter().enumerate() {
        if (0.45..=0.55).contains(d) {
            let s = *start.get_or_insert(i);
            if best.is_none_or(|(a, b)| i - s > b - a) {
                best = Some((s, i));
            }
        } else {
            start = None;
        }
    }
    let (first, last) = best.expect("no sparsity with D* near 1/2");
    let band = &r["half_band"];
    assert_eq!(band["first_index"], first, "{band} vs D* {dstar:?}");
    assert_eq!(band["last_index"], last, "{band} vs D* {dstar:?}");
    assert_eq!(band["count"], last - first + 1);
    assert!(last > first, "a band of one sparsity: {dstar:?}");
    assert!(r["half_band_text"]
        .as_str()
        .unwrap()
        .contains(&format!("over {} consecutive sparsities", last - first + 1)));
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
        "3",
        "--steps",
        "3000",
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
    // The corners of "superposition as a phase change" (as in the train crate's test, which
    // explains them): dense features give the dimension to the more important one alone, rare
    // features of equal importance share it antipodally.
    let phase = |density: f64, importance: f64| {
        let cell = r["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["density"] == density && c["relative_importance"] == importance)
            .unwrap_or_else(|| panic!("no cell ({density}, {importance})"));
        cell["phase"].as_str().unwrap().to_string()
    };
    assert_eq!(phase(1.0, 0.1), "not_represented");
    assert_eq!(phase(1.0, 10.0), "dedicated");
    assert_eq!(phase(0.01, 1.0), "superposition");
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
