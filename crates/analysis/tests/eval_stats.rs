//! The eval statistics of `stats` against scipy and statsmodels
//! (fixtures/eval_stats_reference.json, written by scripts/reference/make_eval_stats_reference.py)
//! and against published textbook values.
//!
//! Tolerances:
//! - closed forms and special functions (normal, t, chi-square, binomial, McNemar, clustered SE,
//!   paired t): 1e-10 relative, and 1e-12 where the computation is a few arithmetic steps;
//! - bootstrap quantities: Monte-Carlo sized. scipy's generator differs from ours, so we compare
//!   the mean over R seeded runs of each side; the difference of the two means has standard
//!   deviation sqrt(sd_scipy²/R + sd_ours²/R), and we allow 4 of those (a false failure about
//!   once in 16 000 runs per quantity);
//! - coverage: binomial standard error of the hit rate, 4σ, plus 0.005 for the normal
//!   approximation that gives the expected coverage (see the script);
//! - published values: half a unit in the last printed digit.

use interplab_analysis::stats::*;
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("fixtures/eval_stats_reference.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, found {v}"))
}

/// |got − want| ≤ rel·|want| (+ the smallest normal number, for values that underflow to 0).
fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs() + f64::MIN_POSITIVE
}

#[test]
fn normal_distribution_matches_scipy() {
    let r = reference();
    for c in r["normal_quantile"].as_array().unwrap() {
        let (p, x) = (f(&c["p"]), f(&c["x"]));
        let got = normal_quantile(p);
        assert!(
            (got - x).abs() <= 1e-12 * x.abs().max(1.0),
            "ppf({p}) = {got}, scipy {x}"
        );
    }
    for c in r["normal_cdf"].as_array().unwrap() {
        let z = f(&c["z"]);
        assert!(close(normal_cdf(z), f(&c["cdf"]), 1e-12), "cdf({z})");
        assert!(close(normal_cdf(-z), f(&c["sf"]), 1e-12), "sf({z})");
    }
}

#[test]
fn student_t_matches_scipy() {
    let r = reference();
    for c in r["student_t"].as_array().unwrap() {
        let (t, df) = (f(&c["t"]), f(&c["df"]));
        let (cdf, sf) = (student_t_cdf(t, df), student_t_sf(t, df));
        assert!(
            close(cdf, f(&c["cdf"]), 1e-10),
            "cdf({t}; {df}) = {cdf}, scipy {}",
            c["cdf"]
        );
        assert!(
            close(sf, f(&c["sf"]), 1e-10),
            "sf({t}; {df}) = {sf}, scipy {}",
            c["sf"]
        );
    }
    for c in r["student_t_quantile"].as_array().unwrap() {
        let (p, df, want) = (f(&c["p"]), f(&c["df"]), f(&c["t"]));
        let got = student_t_quantile(p, df);
        assert!(
            (got - want).abs() <= 1e-10 * want.abs().max(1.0),
            "ppf({p}; {df}) = {got}, scipy {want}"
        );
    }
}

#[test]
fn binomial_and_chi_square_match_scipy() {
    let r = reference();
    for c in r["binomial_cdf"].as_array().unwrap() {
        let (k, n, p) = (
            c["k"].as_u64().unwrap(),
            c["n"].as_u64().unwrap(),
            f(&c["p"]),
        );
        let got = binomial_cdf(k, n, p);
        assert!(
            close(got, f(&c["cdf"]), 1e-10),
            "binom.cdf({k}, {n}, {p}) = {got}, scipy {}",
            c["cdf"]
        );
    }
    for c in r["chi_square_sf"].as_array().unwrap() {
        let (x, df) = (f(&c["x"]), f(&c["df"]));
        let got = chi_square_sf(x, df);
        assert!(
            close(got, f(&c["sf"]), 1e-10),
            "chi2.sf({x}, {df}) = {got}, scipy {}",
            c["sf"]
        );
    }
}

#[test]
fn mcnemar_matches_statsmodels() {
    let r = reference();
    for c in r["mcnemar"].as_array().unwrap() {
        let t: Vec<u64> = c["table"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let (b, cc) = (t[1], t[2]);
        let exact = mcnemar_exact(b, cc);
        assert!(
            close(exact, f(&c["exact_p"]), 1e-10),
            "{t:?}: exact {exact}, statsmodels {}",
            c["exact_p"]
        );
        for (continuity, stat_key, p_key) in [
            (true, "chi2_corrected", "chi2_corrected_p"),
            (false, "chi2", "chi2_p"),
        ] {
            let (stat, p) = mcnemar_chi_square(b, cc, continuity);
            if b + cc == 0 {
                // statsmodels: NaN, or an infinite statistic with the correction (written as
                // null); we document (0, 1) instead.
                assert!(c[stat_key].is_null());
                assert_eq!((stat, p), (0.0, 1.0));
                continue;
            }
            assert!(
                close(stat, f(&c[stat_key]), 1e-12),
                "{t:?} {stat_key}: {stat}"
            );
            assert!(close(p, f(&c[p_key]), 1e-10), "{t:?} {p_key}: {p}");
        }
    }
}

#[test]
fn mcnemar_matches_agresti_presidential_approval() {
    // Agresti (1990), Categorical Data Analysis, p. 350: approval of the President's performance
    // in two surveys a month apart of the same 1600 people, [[794, 150], [86, 570]]. The McNemar
    // statistic without continuity correction is z² = (150 − 86)²/236 = 17.36 (Agresti), and R's
    // mcnemar.test(correct = FALSE) prints 17.3559, df = 1, p-value = 3.099e-05 (Penn State
    // STAT 504, "McNemar Test in R - Example Presidential Approval").
    let (stat, p) = mcnemar_chi_square(150, 86, false);
    assert!((stat - 17.36).abs() <= 0.005, "{stat}");
    assert!((stat - 17.3559).abs() <= 0.00005, "{stat}");
    assert!((p - 3.099e-5).abs() <= 0.0005e-5, "{p}");
    // Its exact test is far below any usual threshold too.
    assert!(mcnemar_exact(150, 86) < 1e-4);
}

#[test]
fn clustered_stderr_matches_statsmodels() {
    let r = reference();
    for c in r["clustered"].as_array().unwrap() {
        let y = floats(&c["values"]);
        let g: Vec<u64> = c["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let se = clustered_stderr(&y, &g).unwrap();
        assert!(
            close(se, f(&c["se"]), 1e-12),
            "CR1 {se}, statsmodels {}",
            c["se"]
        );
        let (mean, plain) = mean_stderr(&y);
        assert!(close(mean, f(&c["mean"]), 1e-12));
        assert!(close(plain, f(&c["nonrobust_se"]), 1e-12), "{plain}");
    }
}

/// Mean and sample sd of `v`.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let (m, se) = mean_stderr(v);
    (m, se * (v.len() as f64).sqrt())
}

/// Asserts that the mean of `ours` (one value per seed) agrees with scipy's mean over its own
/// seeds within 4 standard deviations of the difference of the two means.
fn agrees_within_monte_carlo(what: &str, ours: &[f64], scipy: &Value, repeats: f64) {
    let (m, sd) = mean_sd(ours);
    let (sm, ssd) = (f(&scipy["mean"]), f(&scipy["sd"]));
    let tol = 4.0 * (ssd * ssd / repeats + sd * sd / ours.len() as f64).sqrt();
    assert!(
        (m - sm).abs() <= tol,
        "{what}: ours {m} (sd {sd}), scipy {sm} (sd {ssd}), tol {tol}"
    );
    // The spread across seeds is itself the same Monte-Carlo error (same B): a factor of two
    // either way would mean a different number of resamples or a different quantile rule.
    assert!(
        sd > ssd / 2.0 && sd < ssd * 2.0,
        "{what}: sd ours {sd}, scipy {ssd}"
    );
}

#[test]
fn bootstrap_mean_ci_matches_scipy_within_monte_carlo_error() {
    let r = reference();
    let b = &r["bootstrap"];
    let x = floats(&b["values"]);
    let (n_resamples, confidence) = (
        b["n_resamples"].as_u64().unwrap() as usize,
        f(&b["confidence"]),
    );
    let repeats = f(&b["repeats"]);
    let (mut lows, mut highs) = (vec![], vec![]);
    for seed in 0..repeats as u64 {
        let (lo, hi) = bootstrap_mean_ci(&x, n_resamples, confidence, seed).unwrap();
        lows.push(lo);
        highs.push(hi);
    }
    agrees_within_monte_carlo("low", &lows, &b["low"], repeats);
    agrees_within_monte_carlo("high", &highs, &b["high"], repeats);
}

#[test]
fn bootstrap_coverage_on_normal_samples() {
    // Samples of n = 30 from N(0, 1) from our own generator; the 95% percentile interval of the
    // mean should cover 0 with the probability the script computes with scipy,
    // P(|T_29| ≤ z·sqrt(29/30)) = 0.936 (the percentile interval is about mean ± z·s_0/√n).
    let r = reference();
    let c = &r["coverage"];
    let (n, datasets, b) = (
        c["n"].as_u64().unwrap() as usize,
        c["datasets"].as_u64().unwrap() as usize,
        c["n_resamples"].as_u64().unwrap() as usize,
    );
    let expected = f(&c["expected"]);
    let mut rng = interplab_core::rng::SplitMix::new(20270103);
    let mut hits = 0;
    for k in 0..datasets {
        let x: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let (lo, hi) = bootstrap_mean_ci(&x, b, f(&c["confidence"]), k as u64).unwrap();
        hits += usize::from(lo <= 0.0 && 0.0 <= hi);
    }
    let coverage = hits as f64 / datasets as f64;
    let sd = (expected * (1.0 - expected) / datasets as f64).sqrt();
    assert!(
        (coverage - expected).abs() <= 4.0 * sd + 0.005,
        "coverage {coverage}, expected {expected}"
    );
}

#[test]
fn paired_t_matches_scipy() {
    let r = reference();
    let p = &r["paired"];
    let (a, b) = (floats(&p["a"]), floats(&p["b"]));
    let t = paired_t_test(&a, &b, f(&p["confidence"])).unwrap();
    assert_eq!(t.n, a.len());
    assert!(close(t.mean_difference, f(&p["mean_difference"]), 1e-12));
    assert!(close(t.statistic, f(&p["t"]), 1e-12), "t {}", t.statistic);
    assert_eq!(t.df, f(&p["df"]));
    assert!(close(t.p_value, f(&p["p"]), 1e-10), "p {}", t.p_value);
    let ci = floats(&p["t_ci"]);
    assert!(
        close(t.ci.0, ci[0], 1e-10) && close(t.ci.1, ci[1], 1e-10),
        "{:?} vs {ci:?}",
        t.ci
    );
}

#[test]
fn paired_t_matches_student_sleep_data() {
    // Student's sleep data (Cushny & Peebles; R's `sleep`): extra hours of sleep of 10 patients
    // under two drugs. R's t.test(extra ~ group, data = sleep, paired = TRUE) prints
    // t = -4.0621, df = 9, p-value = 0.002833, 95 percent confidence interval -2.4598858
    // -0.7001142, mean of the differences -1.58 (Meys & de Vries, R For Dummies, "How to
    // compare paired data with R").
    let r = reference();
    let s = &r["sleep"];
    let (g1, g2) = (floats(&s["group1"]), floats(&s["group2"]));
    let t = paired_t_test(&g1, &g2, 0.95).unwrap();
    assert!((t.statistic - -4.0621).abs() <= 0.00005, "{}", t.statistic);
    assert_eq!(t.df, 9.0);
    assert!((t.p_value - 0.002833).abs() <= 0.0000005, "{}", t.p_value);
    assert!(
        (t.ci.0 - -2.4598858).abs() <= 0.00000005 && (t.ci.1 - -0.7001142).abs() <= 0.00000005,
        "{:?}",
        t.ci
    );
    assert!((t.mean_difference - -1.58).abs() <= 0.005);
    // And scipy's unrounded values.
    assert!(close(t.statistic, f(&s["t"]), 1e-12));
    assert!(close(t.p_value, f(&s["p"]), 1e-10));
    let ci = floats(&s["ci"]);
    assert!(close(t.ci.0, ci[0], 1e-10) && close(t.ci.1, ci[1], 1e-10));
}

#[test]
fn paired_bootstrap_matches_scipy_within_monte_carlo_error() {
    let r = reference();
    let p = &r["paired"];
    let (a, b) = (floats(&p["a"]), floats(&p["b"]));
    let (n_resamples, confidence) = (
        p["n_resamples"].as_u64().unwrap() as usize,
        f(&p["confidence"]),
    );
    let repeats = f(&p["repeats"]);
    let (mut lows, mut highs, mut ps) = (vec![], vec![], vec![]);
    for seed in 0..repeats as u64 {
        let pb = paired_bootstrap(&a, &b, n_resamples, confidence, 1000 + seed).unwrap();
        assert!(close(pb.mean_difference, f(&p["mean_difference"]), 1e-12));
        lows.push(pb.ci.0);
        highs.push(pb.ci.1);
        ps.push(pb.p_value);
    }
    let boot = &p["bootstrap"];
    agrees_within_monte_carlo("low", &lows, &boot["low"], repeats);
    agrees_within_monte_carlo("high", &highs, &boot["high"], repeats);
    agrees_within_monte_carlo("p", &ps, &boot["p_value"], repeats);

    let c = Comparison::continuous(&a, &b, n_resamples, confidence, 1000).unwrap();
    assert_eq!(c.test, "paired bootstrap");
    assert_eq!(c.p_value, ps[0]);
    assert_eq!(c.ci, (lows[0], highs[0]));
    assert!(close(c.also[0].p_value, f(&p["p"]), 1e-10));
    let mde = minimum_detectable_effect(a.len(), f(&p["sd_difference"]), 0.05, 0.8);
    assert!(close(c.mde, mde, 1e-12));
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["n"], a.len());
    let line = c.to_string();
    assert!(
        line.starts_with("a − b = +0.0724 [") && line.contains("(95% paired bootstrap percentile)"),
        "{line}"
    );
    assert!(
        line.contains("; paired t p = 0.0103), n = 30, MDE "),
        "{line}"
    );
}

#[test]
fn binary_comparison_matches_statsmodels() {
    let r = reference();
    let bin = &r["binary"];
    let bools = |v: &Value| -> Vec<bool> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_bool().unwrap())
            .collect()
    };
    let (a, b) = (bools(&bin["a"]), bools(&bin["b"]));
    let (only_a, only_b) = discordant_counts(&a, &b).unwrap();
    assert_eq!(
        (only_a, only_b),
        (
            bin["a_only"].as_u64().unwrap(),
            bin["b_only"].as_u64().unwrap()
        )
    );
    let c = Comparison::binary(&a, &b, 2000, 0.95, 3).unwrap();
    assert_eq!(c.test, "exact McNemar");
    assert!(close(c.p_value, f(&bin["exact_p"]), 1e-10), "{}", c.p_value);
    assert!(close(c.also[0].p_value, f(&bin["chi2_corrected_p"]), 1e-10));
    let n = a.len() as f64;
    assert!(close(c.effect, (only_a as f64 - only_b as f64) / n, 1e-12));
    assert!(c.ci.0 < c.effect && c.effect < c.ci.1);
    let psi = (only_a + only_b) as f64 / n;
    assert!(close(
        c.mde,
        minimum_detectable_effect(a.len(), psi.sqrt(), 0.05, 0.8),
        1e-15
    ));
}

#[test]
fn minimum_detectable_effect_matches_scipy_and_statsmodels() {
    let r = reference();
    for c in r["mde"].as_array().unwrap() {
        let n = c["n"].as_u64().unwrap() as usize;
        let got = minimum_detectable_effect(n, f(&c["sd"]), f(&c["alpha"]), f(&c["power"]));
        // The closed form with scipy's norm.ppf.
        assert!(close(got, f(&c["mde"]), 1e-12), "{got} vs {}", c["mde"]);
        // statsmodels' NormalIndPower solves the same equation with a root finder (brentq, whose
        // tolerance leaves ~2e-6 relative in these cases).
        assert!(
            close(got, f(&c["statsmodels"]), 1e-5),
            "{got} vs {}",
            c["statsmodels"]
        );
    }
    assert!(close(normal_quantile(0.975), f(&r["z_975"]), 1e-15));
    assert!(close(normal_quantile(0.8), f(&r["z_80"]), 1e-15));
}

#[test]
fn mde_with_no_disagreements_plans_with_the_rule_of_three() {
    // Every item agrees: the observed discordant rate is 0, which would claim any effect is
    // detectable. The MDE plans with 3/n instead.
    let a = vec![false; 30];
    let c = Comparison::binary(&a, &a, 200, 0.95, 1).unwrap();
    assert_eq!(c.p_value, 1.0);
    let want = minimum_detectable_effect(30, (3.0f64 / 30.0).sqrt(), 0.05, 0.8);
    assert!(close(c.mde, want, 1e-15), "{} vs {want}", c.mde);
    assert!(c.mde > 0.1);
}
