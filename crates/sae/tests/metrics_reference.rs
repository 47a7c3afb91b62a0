//! The metrics of docs/sae.md §Metrics against numpy on the same exported tensors.
//!
//! `tests/fixtures/metrics/case.safetensors` (`x`, `x_hat`, dense `codes` of a small TopK SAE on
//! planted data; written by `examples/export_metric_case.rs`) and `case.json` (the metrics
//! computed from that file by `scripts/reference/make_sae_metric_reference.py`, numpy only,
//! straight from the definitions: two-pass variance about the mean, and so on).
//!
//! Tolerances: quantities that are ratios of integer counts (`l0`, `dead`, `dense`, the
//! log-density histogram) must be equal exactly; `fvu`, `mse` and `shrinkage`, ratios of f64
//! sums accumulated in a different order (and, for the FVU denominator, as `Σ‖x‖² − N‖x̄‖²`
//! instead of numpy's two passes), within 1e-9 relative; `explained_variance` within 1e-9
//! absolute. The largest difference seen when this was written: 1.5e-14 relative.

use std::path::{Path, PathBuf};

use interplab_sae::io::read_shaped;
use interplab_sae::metrics::{Accumulator, Metrics};
use interplab_sae::Codes;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics")
}

const REL: f64 = 1e-9;

struct Case {
    d: usize,
    d_sae: usize,
    x: Vec<f32>,
    x_hat: Vec<f32>,
    codes: Vec<f32>,
}

fn load() -> (Case, serde_json::Value) {
    let (t, _) = read_shaped(&dir().join("case.safetensors")).unwrap();
    let (x, x_hat, codes) = (&t["x"], &t["x_hat"], &t["codes"]);
    assert_eq!(x.shape.len(), 2);
    assert_eq!(x_hat.shape, x.shape);
    assert_eq!(codes.shape[0], x.shape[0]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("case.json")).unwrap()).unwrap();
    assert_eq!(json["n"].as_u64().unwrap() as usize, x.shape[0]);
    assert_eq!(json["d"].as_u64().unwrap() as usize, x.shape[1]);
    assert_eq!(json["d_sae"].as_u64().unwrap() as usize, codes.shape[1]);
    let case = Case {
        d: x.shape[1],
        d_sae: codes.shape[1],
        x: x.data.clone(),
        x_hat: x_hat.data.clone(),
        codes: codes.data.clone(),
    };
    (case, json)
}

/// CSR codes of rows `lo..hi` of the dense codes: the nonzero entries, or (`keep_zeros`) every
/// entry, which the accumulator must not count.
fn codes(c: &Case, lo: usize, hi: usize, keep_zeros: bool) -> Codes {
    let rows = (lo..hi)
        .map(|b| {
            c.codes[b * c.d_sae..(b + 1) * c.d_sae]
                .iter()
                .enumerate()
                .filter(|(_, &v)| keep_zeros || v != 0.0)
                .map(|(i, &v)| (i as u32, v))
                .collect()
        })
        .collect();
    Codes::from_rows(rows)
}

/// The metrics of rows added in the batches `bounds` (`[0, .., n]`).
fn accumulate(c: &Case, bounds: &[usize], keep_zeros: bool) -> Metrics {
    let mut acc = Accumulator::new(c.d, c.d_sae);
    for w in bounds.windows(2) {
        let (lo, hi) = (w[0], w[1]);
        acc.add(
            &c.x[lo * c.d..hi * c.d],
            &c.x_hat[lo * c.d..hi * c.d],
            &codes(c, lo, hi, keep_zeros),
        );
    }
    acc.finish()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

fn compare(m: &Metrics, want: &serde_json::Value, what: &str) -> f64 {
    let f = |k: &str| {
        want[k]
            .as_f64()
            .unwrap_or_else(|| panic!("case.json: no {k}"))
    };
    assert_eq!(m.tokens, want["tokens"].as_u64().unwrap(), "{what}: tokens");
    assert_eq!(m.l0, f("l0"), "{what}: l0");
    assert_eq!(m.dead, f("dead"), "{what}: dead");
    assert_eq!(m.dense, f("dense"), "{what}: dense");
    let edges: Vec<f64> = serde_json::from_value(want["log_density_edges"].clone()).unwrap();
    let counts: Vec<u64> = serde_json::from_value(want["log_density_counts"].clone()).unwrap();
    assert_eq!(m.log_density_edges, edges, "{what}: histogram edges");
    assert_eq!(m.log_density_counts, counts, "{what}: histogram counts");
    let mut worst = 0.0f64;
    for (k, got) in [("fvu", m.fvu), ("mse", m.mse), ("shrinkage", m.shrinkage)] {
        let r = rel(got, f(k));
        assert!(
            r <= REL,
            "{what}: {k} {got} vs numpy {} (relative {r:.2e})",
            f(k)
        );
        worst = worst.max(r);
    }
    let ev = (m.explained_variance - f("explained_variance")).abs();
    assert!(
        ev <= 1e-9,
        "{what}: explained_variance {} vs numpy {}",
        m.explained_variance,
        f("explained_variance")
    );
    worst.max(ev)
}

#[test]
fn metrics_match_numpy_on_the_exported_case() {
    let (case, json) = load();
    let want = &json["metrics"];
    let n = case.x.len() / case.d;
    let mut worst = 0.0f64;
    // All rows at once; in uneven batches (the sums must not depend on the batching); with the
    // zero entries of the dense codes passed as explicit entries.
    for (bounds, keep_zeros, what) in [
        (vec![0, n], false, "one batch"),
        (vec![0, 100, 101, 180, n], false, "four batches"),
        (vec![0, n], true, "explicit zeros"),
    ] {
        let m = accumulate(&case, &bounds, keep_zeros);
        worst = worst.max(compare(&m, want, what));
    }
    eprintln!("largest relative difference from numpy: {worst:.2e}");

    // The case exercises what it is meant to: dead and dense latents, a spread of firing
    // frequencies, and rows whose mean is far enough from zero that the FVU about the mean
    // differs from the variance about zero.
    let m = accumulate(&case, &[0, n], false);
    assert!(
        m.dead > 0.0 && m.dense > 0.0,
        "dead {} dense {}",
        m.dead,
        m.dense
    );
    assert!(m.log_density_counts.iter().filter(|&&c| c > 0).count() >= 4);
    let about_zero = want["fvu_about_zero"].as_f64().unwrap();
    assert!(
        m.fvu > 1.5 * about_zero,
        "fvu {} vs about zero {about_zero}",
        m.fvu
    );
}
