//! Numbers every analysis reports the same way, all in f64: next-token losses, means with their
//! standard errors and t-intervals, correlations (Pearson, Spearman) with Fisher-z intervals,
//! and the statistics of behavioural evals: cluster-robust standard errors of a mean,
//! percentile bootstrap intervals, paired comparisons of two conditions on the same items
//! (exact and asymptotic McNemar, paired t, paired bootstrap), minimum detectable effects, and
//! the distribution functions they rest on (normal, Student t, chi-square, binomial). Each
//! function's doc names the definition it implements and the scipy/statsmodels call it
//! matches; `tests/eval_stats.rs` checks them against those libraries.

use std::collections::HashMap;
use std::hash::Hash;

use candle_core::{DType, Tensor, D};
use interplab_core::model::log_softmax;
use interplab_core::rng::SplitMix;
use interplab_core::{Error, Result};
use serde::Serialize;

/// Next-token cross-entropy −log p(token | prefix), nats, of every row of `logits`
/// `[batch, n, vocab]` against `tokens` (`n` ids): `[batch][n − 1]`.
pub fn next_token_losses(logits: &Tensor, tokens: &[u32]) -> Result<Vec<Vec<f64>>> {
    let (b, n, _) = logits.dims3()?;
    let lp = log_softmax(&logits.narrow(1, 0, n - 1)?.to_dtype(DType::F32)?)?;
    let targets = Tensor::new(&tokens[1..], logits.device())?
        .reshape((1, n - 1, 1))?
        .repeat((b, 1, 1))?;
    let picked: Vec<Vec<f32>> = lp
        .gather(&targets, D::Minus1)?
        .squeeze(D::Minus1)?
        .to_vec2()?;
    Ok(picked
        .iter()
        .map(|r| r.iter().map(|&x| -(x as f64)).collect())
        .collect())
}

/// The mean of `v` and its standard error (sample standard deviation / √n; NaN below two
/// values).
pub fn mean_stderr(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// Pearson's correlation of `x` and `y` (NaN when either is constant or shorter than 2).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return f64::NAN;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

/// Ranks 1..=n, tied values sharing the mean of their ranks.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation: [`pearson`] of [`average_ranks`].
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Fisher-z 95% interval of a correlation `r` over `n` pairs (NaN below 4 pairs or for NaN r).
pub fn correlation_interval(r: f64, n: usize) -> (f64, f64) {
    if n < 4 || !r.is_finite() {
        return (f64::NAN, f64::NAN);
    }
    let z = r.clamp(-1.0 + 1e-15, 1.0 - 1e-15).atanh();
    let half = 1.959963984540054 / ((n - 3) as f64).sqrt();
    ((z - half).tanh(), (z + half).tanh())
}

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom (scipy's
/// `t.ppf(0.975, df)` to 4 decimals for df ≤ 30; the normal 1.96 beyond, within 0.03).
pub fn t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010,
        2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739,
        2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => 1.959963984540054,
    }
}

/// Mean of the finite values of `v` and the half-width of its 95% t-interval over them
/// (NaN half-width below two values), and how many were finite.
pub fn mean_interval(v: &[f64]) -> (f64, f64, usize) {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let n = f.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, 0);
    }
    let (mean, se) = mean_stderr(&f);
    (mean, if n < 2 { f64::NAN } else { t_975(n - 1) * se }, n)
}

/// The index of the largest value (the first of ties; 0 for an empty slice).
pub fn argmax(r: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in r.iter().enumerate() {
        if x > r[best] {
            best = i;
        }
    }
    best as u32
}

// ---------------------------------------------------------------------------------------------
// Eval statistics: clustered standard errors, bootstrap intervals, paired comparisons and the
// distribution functions they need. Too little data (no values, one cluster, fewer than two
// pairs) gives NaN, as `mean_stderr` does; malformed input (slices of different lengths, a
// confidence outside (0, 1), no resamples) is an `Error::Input`.
// ---------------------------------------------------------------------------------------------

/// The significance level of [`Comparison`]'s minimum detectable effect (two-sided).
pub const MDE_ALPHA: f64 = 0.05;
/// The power of [`Comparison`]'s minimum detectable effect.
pub const MDE_POWER: f64 = 0.8;

fn check_confidence(confidence: f64) -> Result<()> {
    if confidence > 0.0 && confidence < 1.0 {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "confidence must lie strictly between 0 and 1, found {confidence}"
        )))
    }
}

fn check_resamples(n_resamples: usize) -> Result<()> {
    if n_resamples == 0 {
        return Err(Error::Input("bootstrap needs at least one resample".into()));
    }
    Ok(())
}

fn check_same_length(what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(Error::Input(format!(
            "{what}: the two slices differ in length ({a} and {b})"
        )));
    }
    Ok(())
}

/// The cluster-robust standard error of the mean: the CR1 sandwich standard error of the
/// intercept of an intercept-only OLS of `values` with items grouped by `clusters` (items
/// sharing a stem or template share a label). With N items, G clusters, residuals
/// eᵢ = yᵢ − ȳ and S_g = Σ_{i∈g} eᵢ,
/// `se² = G/(G−1) · (N−1)/(N−K) · Σ_g S_g² / N²` with K = 1, so the second factor is 1. This is
/// Stata's and statsmodels' small-sample correction:
/// `statsmodels.OLS(y, ones).fit(cov_type="cluster", cov_kwds={"groups": g}).bse[0]`.
/// With every item its own cluster it equals [`mean_stderr`]'s standard error. NaN with fewer
/// than two clusters (the correction G/(G−1) is undefined) or no values; an error when the
/// slices differ in length.
pub fn clustered_stderr<K: Eq + Hash>(values: &[f64], clusters: &[K]) -> Result<f64> {
    check_same_length("clustered_stderr", values.len(), clusters.len())?;
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let mut sums: HashMap<&K, f64> = HashMap::new();
    for (v, k) in values.iter().zip(clusters) {
        *sums.entry(k).or_insert(0.0) += v - mean;
    }
    let g = sums.len() as f64;
    if sums.len() < 2 {
        return Ok(f64::NAN);
    }
    let meat: f64 = sums.values().map(|s| s * s).sum();
    Ok((g / (g - 1.0) * meat / (n * n)).sqrt())
}

/// The `q`-quantile (0 ≤ q ≤ 1) of sorted values by linear interpolation between order
/// statistics at position (len − 1)·q: numpy's default `percentile` method ("linear", R's
/// type 7), which scipy's bootstrap uses.
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// `n_resamples` bootstrap means of `values` (each a mean of `len` indices drawn uniformly with
/// replacement by `rng`), sorted.
fn bootstrap_means(values: &[f64], n_resamples: usize, rng: &mut SplitMix) -> Vec<f64> {
    let n = values.len();
    let mut means: Vec<f64> = (0..n_resamples)
        .map(|_| {
            let s: f64 = (0..n).map(|_| values[rng.below(n as u64) as usize]).sum();
            s / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    means
}

fn percentile_interval(sorted: &[f64], confidence: f64) -> (f64, f64) {
    let alpha = (1.0 - confidence) / 2.0;
    (
        quantile_sorted(sorted, alpha),
        quantile_sorted(sorted, 1.0 - alpha),
    )
}

/// Percentile bootstrap interval of the mean of `values` at level `confidence`: the
/// (1 − c)/2 and (1 + c)/2 quantiles (linear interpolation, as numpy's `percentile`) of
/// `n_resamples` means of resamples drawn with replacement, as
/// `scipy.stats.bootstrap((values,), np.mean, method="percentile")`. Deterministic given
/// `seed` (the resampling stream is [`SplitMix`]'s, fixed forever); scipy's generator differs,
/// so the two agree within Monte-Carlo error, not exactly. (NaN, NaN) for no values; an error
/// for `n_resamples` = 0 or a confidence outside (0, 1).
pub fn bootstrap_mean_ci(
    values: &[f64],
    n_resamples: usize,
    confidence: f64,
    seed: u64,
) -> Result<(f64, f64)> {
    check_confidence(confidence)?;
    check_resamples(n_resamples)?;
    if values.is_empty() {
        return Ok((f64::NAN, f64::NAN));
    }
    let means = bootstrap_means(values, n_resamples, &mut SplitMix::new(seed));
    Ok(percentile_interval(&means, confidence))
}

/// Per-item differences `a[i] − b[i]` of two conditions scored on the same items (an error
/// when the slices differ in length).
pub fn paired_differences(a: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    check_same_length("paired_differences", a.len(), b.len())?;
    Ok(a.iter().zip(b).map(|(x, y)| x - y).collect())
}

/// The discordant pairs of two binary conditions on the same items: (items where only `a` is
/// true, items where only `b` is true), the off-diagonal cells b and c of McNemar's table
/// `[[both, a only], [b only, neither]]`. An error when the slices differ in length.
pub fn discordant_counts(a: &[bool], b: &[bool]) -> Result<(u64, u64)> {
    check_same_length("discordant_counts", a.len(), b.len())?;
    let a_only = a.iter().zip(b).filter(|&(&x, &y)| x && !y).count() as u64;
    let b_only = a.iter().zip(b).filter(|&(&x, &y)| !x && y).count() as u64;
    Ok((a_only, b_only))
}

/// McNemar's exact test of two paired binary conditions, from the discordant counts `b` and `c`
/// (see [`discordant_counts`]): the two-sided binomial test of min(b, c) among b + c trials with
/// p = ½, `min(1, 2·P(X ≤ min(b, c)))`, X ~ Binomial(b + c, ½), as
/// `statsmodels.stats.contingency_tables.mcnemar(table, exact=True).pvalue`. 1 when there are
/// no discordant pairs.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    if b + c == 0 {
        return 1.0;
    }
    (2.0 * binomial_cdf(b.min(c), b + c, 0.5)).min(1.0)
}

/// McNemar's asymptotic test: the statistic `(|b − c| − k)² / (b + c)`, k = 1 with the
/// (Edwards) continuity correction and 0 without, and its p-value from the chi-square
/// distribution with one degree of freedom, as statsmodels' `mcnemar(table, exact=False,
/// correction=…)` and R's `mcnemar.test` (neither clamps |b − c| − 1 at zero, nor does this).
/// Returns (statistic, p). With no discordant pairs it returns (0, 1), where statsmodels gives
/// NaN (and, with the correction, an infinite statistic and p = 0).
pub fn mcnemar_chi_square(b: u64, c: u64, continuity: bool) -> (f64, f64) {
    if b + c == 0 {
        return (0.0, 1.0);
    }
    let k = if continuity { 1.0 } else { 0.0 };
    let stat = ((b as f64 - c as f64).abs() - k).powi(2) / (b + c) as f64;
    (stat, chi_square_sf(stat, 1.0))
}

/// A paired t-test (`scipy.stats.ttest_rel(a, b)`) and its t-interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedTTest {
    /// Number of pairs.
    pub n: usize,
    /// Mean of `a[i] − b[i]`.
    pub mean_difference: f64,
    /// t = mean / (sd / √n), sd with ddof = 1.
    pub statistic: f64,
    /// Degrees of freedom, n − 1.
    pub df: f64,
    /// Two-sided p-value, 2·P(T_df ≥ |t|), from [`student_t_sf`].
    pub p_value: f64,
    /// mean ± t_{(1+c)/2, df}·sd/√n (scipy's `confidence_interval(c)`).
    pub ci: (f64, f64),
    /// The level c of `ci`.
    pub confidence: f64,
}

/// The paired t-test of `a` against `b` (`scipy.stats.ttest_rel`, two-sided): the one-sample t
/// of the differences a − b against 0, with an exact p-value from the Student t distribution
/// and the t-interval of the mean difference at level `confidence`. Fewer than two pairs give
/// NaN statistic, p and interval; differences that are all equal give t = ±∞ and p = 0 (or NaN
/// when they are all zero), as scipy does. An error when the slices differ in length or the
/// confidence lies outside (0, 1).
pub fn paired_t_test(a: &[f64], b: &[f64], confidence: f64) -> Result<PairedTTest> {
    check_confidence(confidence)?;
    let d = paired_differences(a, b)?;
    let n = d.len();
    let (mean, se) = mean_stderr(&d);
    let df = n as f64 - 1.0;
    let nan = PairedTTest {
        n,
        mean_difference: mean,
        statistic: f64::NAN,
        df: if n < 2 { f64::NAN } else { df },
        p_value: f64::NAN,
        ci: (f64::NAN, f64::NAN),
        confidence,
    };
    if n < 2 {
        return Ok(nan);
    }
    if se == 0.0 {
        if mean == 0.0 {
            return Ok(nan);
        }
        return Ok(PairedTTest {
            statistic: mean.signum() * f64::INFINITY,
            p_value: 0.0,
            ci: (mean, mean),
            ..nan
        });
    }
    let t = mean / se;
    let half = student_t_quantile(0.5 + confidence / 2.0, df) * se;
    Ok(PairedTTest {
        statistic: t,
        p_value: (2.0 * student_t_sf(t.abs(), df)).min(1.0),
        ci: (mean - half, mean + half),
        ..nan
    })
}

/// A paired bootstrap of the mean difference of two conditions on the same items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedBootstrap {
    /// Number of pairs.
    pub n: usize,
    /// Mean of `a[i] − b[i]`.
    pub mean_difference: f64,
    /// Percentile interval of the mean difference (see [`bootstrap_mean_ci`]).
    pub ci: (f64, f64),
    /// The level of `ci`.
    pub confidence: f64,
    /// Two-sided bootstrap p-value (see [`paired_bootstrap`]).
    pub p_value: f64,
    /// Number of resamples B.
    pub n_resamples: usize,
}

/// Paired bootstrap of `a` against `b`: items are resampled with replacement as pairs (so the
/// resample means are means of resampled differences d = a − b), giving the percentile
/// interval of the mean difference (as `scipy.stats.bootstrap((a, b), mean-of-difference,
/// paired=True, method="percentile")`) and a two-sided p-value by inverting the percentile
/// interval: with θ*_1..θ*_B the resample means,
/// `p = min(1, 2·min(#{θ* ≤ 0} + 1, #{θ* ≥ 0} + 1) / (B + 1))`, i.e. twice the bootstrap
/// probability of the less likely sign with the +1 of Davison & Hinkley (1997, §4.4) so that p
/// is never 0 (its resolution is 2/(B + 1)). It is close to the smallest α at which the
/// 1 − α percentile interval excludes 0. Deterministic given `seed`. With no pairs everything
/// is NaN; with one pair the interval is the point and p is NaN. An error when the slices
/// differ in length, `n_resamples` = 0 or the confidence lies outside (0, 1).
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    n_resamples: usize,
    confidence: f64,
    seed: u64,
) -> Result<PairedBootstrap> {
    check_confidence(confidence)?;
    check_resamples(n_resamples)?;
    let d = paired_differences(a, b)?;
    let n = d.len();
    let mut out = PairedBootstrap {
        n,
        mean_difference: f64::NAN,
        ci: (f64::NAN, f64::NAN),
        confidence,
        p_value: f64::NAN,
        n_resamples,
    };
    if n == 0 {
        return Ok(out);
    }
    out.mean_difference = d.iter().sum::<f64>() / n as f64;
    let means = bootstrap_means(&d, n_resamples, &mut SplitMix::new(seed));
    out.ci = percentile_interval(&means, confidence);
    if n >= 2 {
        let below = means.iter().filter(|&&m| m <= 0.0).count() + 1;
        let above = means.iter().filter(|&&m| m >= 0.0).count() + 1;
        out.p_value = (2.0 * below.min(above) as f64 / (n_resamples + 1) as f64).min(1.0);
    }
    Ok(out)
}

/// Minimum detectable effect of a paired comparison of `n` items by the normal approximation:
/// `(z_{1−α/2} + z_{power}) · sd / √n`, the smallest true mean difference that a two-sided
/// level-`alpha` test detects with probability `power` (the far rejection tail is ignored), with
/// `sd` the standard deviation of the per-item differences. For paired binary outcomes pass
/// [`binary_difference_sd`]. Infinite for n = 0.
pub fn minimum_detectable_effect(n: usize, sd_difference: f64, alpha: f64, power: f64) -> f64 {
    (normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power)) * sd_difference
        / (n as f64).sqrt()
}

/// The standard deviation of the per-item difference d ∈ {−1, 0, 1} of two paired binary
/// outcomes under the null of equal rates, √ψ with ψ the discordant rate (the share of items on
/// which the conditions disagree): Var(d) = ψ − (p_a − p_b)², and p_a = p_b under the null.
/// NaN outside [0, 1].
pub fn binary_difference_sd(discordant_rate: f64) -> f64 {
    if (0.0..=1.0).contains(&discordant_rate) {
        discordant_rate.sqrt()
    } else {
        f64::NAN
    }
}

/// The discordant rate the MDE of a paired binary comparison plans with: the observed share
/// of disagreeing items, floored at 3/n (the rule-of-three 95% upper bound when none
/// disagree), so that a sample with no disagreements does not report an MDE of 0.
pub fn planning_discordant_rate(discordant: u64, n: usize) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    (discordant as f64 / n as f64).max((3.0 / n as f64).min(1.0))
}

/// The discordant rate of two binary conditions with success rates `rate_a` and `rate_b` if
/// their outcomes were independent across items: p_a(1 − p_b) + p_b(1 − p_a). For planning
/// when only the two rates are known; conditions scored on the same items are usually
/// positively correlated, which lowers the true discordant rate, so the resulting MDE is
/// conservative (larger than with the true rate).
pub fn discordant_rate_if_independent(rate_a: f64, rate_b: f64) -> f64 {
    rate_a * (1.0 - rate_b) + rate_b * (1.0 - rate_a)
}

/// Another test of the same null on the same pairs, reported next to a [`Comparison`]'s.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OtherTest {
    /// The test's name.
    pub test: String,
    /// Its two-sided p-value.
    pub p_value: f64,
}

/// A comparison of two conditions (a − b) on the same items, as a report prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The test behind `p_value`.
    pub test: String,
    /// Why that test.
    pub why: String,
    /// Number of items (pairs).
    pub n: usize,
    /// Mean of a − b: for binary outcomes, the difference of success rates.
    pub effect: f64,
    /// Interval of `effect`.
    pub ci: (f64, f64),
    /// Level of `ci`.
    pub confidence: f64,
    /// How `ci` was computed.
    pub ci_method: String,
    /// Two-sided p-value of `test`.
    pub p_value: f64,
    /// Other tests of the same null on the same pairs.
    pub also: Vec<OtherTest>,
    /// Minimum detectable effect ([`minimum_detectable_effect`]) at [`MDE_ALPHA`] two-sided and
    /// [`MDE_POWER`], with the sd of the observed differences.
    pub mde: f64,
}

impl Comparison {
    /// Binary outcomes (correct or not) of conditions `a` and `b` on the same items: the exact
    /// McNemar test ([`mcnemar_exact`]), with the continuity-corrected chi-square alongside, a
    /// [`paired_bootstrap`] percentile interval of the difference of rates, and the MDE with
    /// the discordant rate [`planning_discordant_rate`] (the observed one, at least 3/n).
    pub fn binary(
        a: &[bool],
        b: &[bool],
        n_resamples: usize,
        confidence: f64,
        seed: u64,
    ) -> Result<Comparison> {
        let (only_a, only_b) = discordant_counts(a, b)?;
        let to_f = |v: &[bool]| -> Vec<f64> { v.iter().map(|&x| f64::from(u8::from(x))).collect() };
        let boot = paired_bootstrap(&to_f(a), &to_f(b), n_resamples, confidence, seed)?;
        let n = a.len();
        Ok(Comparison {
            test: "exact McNemar".into(),
            why: "binary outcomes on the same items: an exact binomial test on the discordant \
                  pairs, valid however few they are"
                .into(),
            n,
            effect: boot.mean_difference,
            ci: boot.ci,
            confidence,
            ci_method: "paired bootstrap percentile".into(),
            p_value: mcnemar_exact(only_a, only_b),
            also: vec![OtherTest {
                test: "McNemar chi-square, continuity-corrected".into(),
                p_value: mcnemar_chi_square(only_a, only_b, true).1,
            }],
            mde: minimum_detectable_effect(
                n,
                binary_difference_sd(planning_discordant_rate(only_a + only_b, n)),
                MDE_ALPHA,
                MDE_POWER,
            ),
        })
    }

    /// Continuous scores of conditions `a` and `b` on the same items: the [`paired_bootstrap`]
    /// (its percentile interval and p-value, which assume nothing about the shape of the
    /// differences), with the paired t-test's p-value alongside, and the MDE with the sample sd
    /// of the differences.
    pub fn continuous(
        a: &[f64],
        b: &[f64],
        n_resamples: usize,
        confidence: f64,
        seed: u64,
    ) -> Result<Comparison> {
        let boot = paired_bootstrap(a, b, n_resamples, confidence, seed)?;
        let t = paired_t_test(a, b, confidence)?;
        let d = paired_differences(a, b)?;
        let sd = mean_stderr(&d).1 * (d.len() as f64).sqrt();
        Ok(Comparison {
            test: "paired bootstrap".into(),
            why: "continuous scores on the same items: resampling items keeps the pairing and \
                  assumes no distribution; the paired t-test is shown as a check"
                .into(),
            n: d.len(),
            effect: boot.mean_difference,
            ci: boot.ci,
            confidence,
            ci_method: "paired bootstrap percentile".into(),
            p_value: boot.p_value,
            also: vec![OtherTest {
                test: "paired t".into(),
                p_value: t.p_value,
            }],
            mde: minimum_detectable_effect(d.len(), sd, MDE_ALPHA, MDE_POWER),
        })
    }
}

/// A p-value for people: four decimals, or two significant digits below 0.0001.
fn format_p(p: f64) -> String {
    if p > 0.0 && p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

impl std::fmt::Display for Comparison {
    /// `a − b = +0.0724 [+0.0216, +0.1233] (95% paired bootstrap percentile), p = 0.0055
    /// (paired bootstrap; paired t p = 0.0103), n = 30, MDE 0.0742`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a − b = {:+.4} [{:+.4}, {:+.4}] ({}% {}), p = {} ({}",
            self.effect,
            self.ci.0,
            self.ci.1,
            (self.confidence * 1e4).round() / 1e2,
            self.ci_method,
            format_p(self.p_value),
            self.test
        )?;
        for o in &self.also {
            write!(f, "; {} p = {}", o.test, format_p(o.p_value))?;
        }
        write!(f, "), n = {}, MDE {:.4}", self.n, self.mde)
    }
}

// ----- Distribution functions -----------------------------------------------------------------

/// The Stirling-series remainder δ(x) = ln Γ(x) − [(x − ½) ln x − x + ½ ln 2π] for x ≥ 10,
/// through the x⁻¹³ term (the next term is below 3·10⁻¹⁷ there).
fn stirling_delta(x: f64) -> f64 {
    const C: [f64; 7] = [
        1.0 / 12.0,
        -1.0 / 360.0,
        1.0 / 1260.0,
        -1.0 / 1680.0,
        1.0 / 1188.0,
        -691.0 / 360360.0,
        1.0 / 156.0,
    ];
    let x2 = 1.0 / (x * x);
    let mut s = 0.0;
    for c in C.iter().rev() {
        s = s * x2 + c;
    }
    s / x
}

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_7;

/// ln Γ(x) for x > 0: the Stirling series with [`stirling_delta`] for x ≥ 10, and below that
/// the recurrence ln Γ(x) = ln Γ(x + k) − ln[x(x + 1)…(x + k − 1)] up to x + k ≥ 10.
fn ln_gamma(x: f64) -> f64 {
    if x >= 10.0 {
        return (x - 0.5) * x.ln() - x + HALF_LN_2PI + stirling_delta(x);
    }
    let mut prod = 1.0;
    let mut y = x;
    while y < 10.0 {
        prod *= y;
        y += 1.0;
    }
    ln_gamma(y) - prod.ln()
}

/// ln B(a, b), with the large Stirling terms cancelled analytically when an argument is ≥ 10
/// (as R's `lbeta`), so that it stays accurate to ~1e-15 relative for large degrees of freedom.
fn ln_beta(a: f64, b: f64) -> f64 {
    let (p, q) = if a < b { (a, b) } else { (b, a) };
    if p >= 10.0 {
        let corr = stirling_delta(p) + stirling_delta(q) - stirling_delta(p + q);
        -0.5 * q.ln()
            + HALF_LN_2PI
            + corr
            + (p - 0.5) * (p / (p + q)).ln()
            + q * (-p / (p + q)).ln_1p()
    } else if q >= 10.0 {
        let corr = stirling_delta(q) - stirling_delta(p + q);
        ln_gamma(p) + corr + p - p * (p + q).ln() + (q - 0.5) * (-p / (p + q)).ln_1p()
    } else {
        ln_gamma(p) + ln_gamma(q) - ln_gamma(p + q)
    }
}

const TINY: f64 = 1e-300;
const MAX_TERMS: usize = 100_000;

/// The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes
/// §6.4 `betacf`), converging fast for x < (a + 1)/(a + b + 2).
fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=MAX_TERMS {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() <= f64::EPSILON {
            return h;
        }
    }
    f64::NAN
}

/// The regularised incomplete beta function and its complement, (I_x(a, b), 1 − I_x(a, b)),
/// by the continued fraction of whichever converges fast. About 1e-14 relative for parameters up
/// to ~10³; the fraction lengthens as √max(a, b) and its rounding grows with it (~1e-11 relative
/// at a ≈ 5·10⁴). `y` = 1 − x is passed separately so that callers who know it precisely (t
/// tails) lose nothing to cancellation.
fn beta_inc(a: f64, b: f64, x: f64, y: f64) -> (f64, f64) {
    if x <= 0.0 {
        return (0.0, 1.0);
    }
    if y <= 0.0 {
        return (1.0, 0.0);
    }
    let ln_x = if x > 0.5 { (-y).ln_1p() } else { x.ln() };
    let ln_y = if y > 0.5 { (-x).ln_1p() } else { y.ln() };
    let front = (a * ln_x + b * ln_y - ln_beta(a, b)).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        let i = front * beta_continued_fraction(a, b, x) / a;
        (i, 1.0 - i)
    } else {
        let j = front * beta_continued_fraction(b, a, y) / b;
        (1.0 - j, j)
    }
}

/// The regularised incomplete gamma functions (P(a, x), Q(a, x)): the series for x < a + 1, the
/// continued fraction (modified Lentz) otherwise (Numerical Recipes §6.2).
fn gamma_inc(a: f64, x: f64) -> (f64, f64) {
    if x <= 0.0 {
        return (0.0, 1.0);
    }
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut ap, mut del) = (a, 1.0 / a);
        let mut sum = del;
        for _ in 0..MAX_TERMS {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * f64::EPSILON {
                break;
            }
        }
        let p = sum * front;
        (p, 1.0 - p)
    } else {
        let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..=MAX_TERMS {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = 1.0 / guard(an * d + b);
            c = guard(b + an / c);
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() <= f64::EPSILON {
                break;
            }
        }
        let q = front * h;
        (1.0 - q, q)
    }
}

/// The upper tail P(X > x) of the chi-square distribution with `df` degrees of freedom: the
/// regularised upper incomplete gamma Q(df/2, x/2) (`scipy.stats.chi2.sf`).
pub fn chi_square_sf(x: f64, df: f64) -> f64 {
    if x.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    gamma_inc(df / 2.0, x / 2.0).1
}

/// erfc(u) for any u, as Q(½, u²) (u ≥ 0) or 2 − Q(½, u²).
fn erfc(u: f64) -> f64 {
    let q = gamma_inc(0.5, u * u).1;
    if u >= 0.0 {
        q
    } else {
        2.0 - q
    }
}

/// The standard normal distribution function Φ(z) = ½ erfc(−z/√2) (`scipy.stats.norm.cdf`),
/// accurate to ~1e-13 relative far into both tails (|z| ≤ 38).
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The standard normal quantile Φ⁻¹(p) (`scipy.stats.norm.ppf`): Wichura's algorithm AS 241
/// (PPND16, Applied Statistics 37, 1988), rational approximations accurate to about 1e-16
/// relative. −∞ at p = 0, +∞ at p = 1, NaN outside [0, 1].
// The coefficients are written with all the digits AS 241 publishes, so that they can be checked
// against the paper; f64 rounds them.
#[allow(clippy::excessive_precision)]
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    fn poly(c: &[f64; 8], x: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
    }
    const A: [f64; 8] = [
        3.387_132_872_796_366_608,
        1.331_416_678_917_843_774_5e2,
        1.971_590_950_306_551_442_7e3,
        1.373_169_376_550_946_112_5e4,
        4.592_195_393_154_987_145_7e4,
        6.726_577_092_700_870_085_3e4,
        3.343_057_558_358_812_810_5e4,
        2.509_080_928_730_122_672_7e3,
    ];
    const B: [f64; 8] = [
        1.0,
        4.231_333_070_160_091_125_2e1,
        6.871_870_074_920_579_083e2,
        5.394_196_021_424_751_107_7e3,
        2.121_379_430_158_659_586_7e4,
        3.930_789_580_009_271_061e4,
        2.872_908_573_572_194_267_4e4,
        5.226_495_278_852_854_561e3,
    ];
    const C: [f64; 8] = [
        1.423_437_110_749_683_577_34,
        4.630_337_846_156_545_295_9,
        5.769_497_221_460_691_405_5,
        3.647_848_324_763_204_605_04,
        1.270_458_252_452_368_382_58,
        2.417_807_251_774_506_117_7e-1,
        2.272_384_498_926_918_458_33e-2,
        7.745_450_142_783_414_076_4e-4,
    ];
    const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_758_821_87,
        1.676_384_830_183_803_849_4,
        6.897_673_349_851_000_045_5e-1,
        1.481_039_764_274_800_745_9e-1,
        1.519_866_656_361_645_719_66e-2,
        5.475_938_084_995_344_946e-4,
        1.050_750_071_644_416_843_24e-9,
    ];
    const E: [f64; 8] = [
        6.657_904_643_501_103_777_2,
        5.463_784_911_164_114_369_9,
        1.784_826_539_917_291_335_8,
        2.965_605_718_285_048_912_3e-1,
        2.653_218_952_657_612_309_3e-2,
        1.242_660_947_388_078_438_6e-3,
        2.711_555_568_743_487_578_15e-5,
        2.010_334_399_292_288_132_65e-7,
    ];
    const F: [f64; 8] = [
        1.0,
        5.998_322_065_558_879_376_9e-1,
        1.369_298_809_227_358_053_1e-1,
        1.487_536_129_085_061_485_25e-2,
        7.868_691_311_456_132_591e-4,
        1.846_318_317_510_054_681_8e-5,
        1.421_511_758_316_445_888_7e-7,
        2.044_263_103_389_939_785_64e-15,
    ];
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let r = if q < 0.0 { p } else { 1.0 - p };
    let r = (-r.ln()).sqrt();
    let x = if r <= 5.0 {
        let r = r - 1.6;
        poly(&C, r) / poly(&D, r)
    } else {
        let r = r - 5.0;
        poly(&E, r) / poly(&F, r)
    };
    if q < 0.0 {
        -x
    } else {
        x
    }
}

/// The upper tail P(T > t) of Student's t with `df` > 0 degrees of freedom
/// (`scipy.stats.t.sf`): ½·I_x(df/2, ½) with x = df/(df + t²) for t > 0 (and 1 minus that for
/// t < 0), the regularised incomplete beta by its continued fraction. Relative accuracy ~1e-13
/// in both tails for df ≤ 1000, ~1e-11 at df = 10⁵ (see `beta_inc`).
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    let t2 = t * t;
    // x = df / (df + t²) and y = t² / (df + t²), written so that neither overflows.
    let x = 1.0 / (1.0 + t2 / df);
    let y = 1.0 / (1.0 + df / t2);
    let (i, j) = beta_inc(df / 2.0, 0.5, x, y);
    if t > 0.0 {
        0.5 * i
    } else {
        0.5 + 0.5 * j
    }
}

/// Student's t distribution function P(T ≤ t) (`scipy.stats.t.cdf`), [`student_t_sf`] of −t.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    student_t_sf(-t, df)
}

/// The quantile of Student's t (`scipy.stats.t.ppf(p, df)`): the root of [`student_t_sf`] in
/// the tail of min(p, 1 − p), found by bisection on ln t to full double precision.
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    if p.is_nan() || df.is_nan() || df <= 0.0 || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.5 {
        return 0.0;
    }
    if p == 0.0 || p == 1.0 {
        return if p == 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    let tail = p.min(1.0 - p);
    let (mut lo, mut hi) = (-745.0f64, 709.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_sf(mid.exp(), df) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= f64::EPSILON {
            break;
        }
    }
    let t = (0.5 * (lo + hi)).exp();
    if p < 0.5 {
        -t
    } else {
        t
    }
}

/// The binomial distribution function P(X ≤ k), X ~ Binomial(n, p) (`scipy.stats.binom.cdf`),
/// as the regularised incomplete beta I_{1−p}(n − k, k + 1) (~1e-13 relative for n ≤ 10⁴,
/// ~1e-11 at n = 10⁵).
pub fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if k >= n || p == 0.0 {
        return 1.0;
    }
    if p == 1.0 {
        return 0.0;
    }
    beta_inc((n - k) as f64, k as f64 + 1.0, 1.0 - p, p).0
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn mean_and_standard_error() {
        // Sample sd of 1..=4 is sqrt(5/3); se = sd / 2.
        let (m, se) = super::mean_stderr(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((se - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
        assert!(super::mean_stderr(&[1.0]).1.is_nan());
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 5.0]),
            vec![2.0, 3.5, 3.5, 1.0]
        );
        // A monotone but non-linear relation: Spearman 1, Pearson below 1.
        let x: Vec<f64> = (1..=10).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| v.powi(4)).collect();
        assert!((spearman(&x, &y) - 1.0).abs() < 1e-12);
        assert!(pearson(&x, &y) < 0.95);
        assert!(pearson(&x, &[1.0; 10]).is_nan());
    }

    #[test]
    fn correlations_match_scipy() {
        // scipy 1.17.1's pearsonr (with its Fisher-z confidence_interval) and spearmanr of
        // vectors with ties, written by scripts/reference/make_memorise_reference.py.
        let f: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/memorise_reference.json"))
                .unwrap();
        let v = |k: &str| -> Vec<f64> {
            f[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let (x, y) = (v("x"), v("y"));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(pearson(&x, &y), f["pearson"].as_f64().unwrap()));
        assert!(close(spearman(&x, &y), f["spearman"].as_f64().unwrap()));
        let (lo, hi) = correlation_interval(pearson(&x, &y), x.len());
        let ci = v("pearson_ci");
        assert!(
            (lo - ci[0]).abs() < 1e-9 && (hi - ci[1]).abs() < 1e-9,
            "{lo} {hi} vs {ci:?}"
        );
    }

    #[test]
    fn t_quantiles_match_scipy() {
        // scipy.stats.t.ppf(0.975, df), written by scripts/reference/make_memorise_reference.py.
        let f: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/memorise_reference.json"))
                .unwrap();
        for (df, q) in f["t_975"].as_array().unwrap().iter().enumerate() {
            let q = q.as_f64().unwrap();
            assert!((super::t_975(df + 1) - q).abs() < 1e-4, "df {}", df + 1);
        }
        let (m, h, n) = super::mean_interval(&[1.0, 2.0, 3.0, f64::NAN]);
        assert_eq!((m, n), (2.0, 3));
        assert!((h - 4.3027 * (1.0f64 / 3.0).sqrt()).abs() < 1e-3);
    }

    #[test]
    fn clustered_stderr_edge_cases() {
        // Every item its own cluster: CR1 reduces to the ordinary standard error.
        let v = [0.3, 1.2, -0.4, 2.2, 0.9, 1.1];
        let own: Vec<usize> = (0..v.len()).collect();
        let se = clustered_stderr(&v, &own).unwrap();
        assert!((se - mean_stderr(&v).1).abs() < 1e-14, "{se}");
        // Labels of any hashable type give the same answer as integer labels.
        let names = ["x", "y", "x", "z", "y", "x"];
        let ids = [0u8, 1, 0, 2, 1, 0];
        assert_eq!(
            clustered_stderr(&v, &names).unwrap(),
            clustered_stderr(&v, &ids).unwrap()
        );
        // One cluster: G/(G − 1) is undefined, NaN. No values: NaN. All equal: 0.
        assert!(clustered_stderr(&v, &[7; 6]).unwrap().is_nan());
        assert!(clustered_stderr(&[], &[0u8; 0]).unwrap().is_nan());
        assert_eq!(clustered_stderr(&[2.0; 4], &[0, 0, 1, 1]).unwrap(), 0.0);
        assert!(clustered_stderr(&v, &[0, 1]).is_err());
    }

    #[test]
    fn bootstrap_edge_cases_and_determinism() {
        let v = [0.1, 0.5, 0.2, 0.9, 0.4];
        let a = bootstrap_mean_ci(&v, 500, 0.95, 7).unwrap();
        assert_eq!(a, bootstrap_mean_ci(&v, 500, 0.95, 7).unwrap());
        assert_ne!(a, bootstrap_mean_ci(&v, 500, 0.95, 8).unwrap());
        assert!(a.0 < 0.42 && 0.42 < a.1, "{a:?}");
        assert_eq!(bootstrap_mean_ci(&[3.5], 100, 0.9, 1).unwrap(), (3.5, 3.5));
        assert_eq!(
            bootstrap_mean_ci(&[2.0; 6], 100, 0.9, 1).unwrap(),
            (2.0, 2.0)
        );
        let empty = bootstrap_mean_ci(&[], 100, 0.9, 1).unwrap();
        assert!(empty.0.is_nan() && empty.1.is_nan());
        assert!(bootstrap_mean_ci(&v, 0, 0.95, 1).is_err());
        assert!(bootstrap_mean_ci(&v, 10, 1.0, 1).is_err());
        assert!(bootstrap_mean_ci(&v, 10, 0.0, 1).is_err());
        // The interpolated quantile is numpy's "linear" percentile.
        assert_eq!(quantile_sorted(&[1.0, 2.0, 4.0], 0.75), 3.0);
        assert_eq!(quantile_sorted(&[1.0, 2.0, 4.0], 0.0), 1.0);
        assert_eq!(quantile_sorted(&[1.0, 2.0, 4.0], 1.0), 4.0);
    }

    #[test]
    fn mcnemar_edge_cases() {
        // No discordant pairs: no evidence of a difference.
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_chi_square(0, 0, true), (0.0, 1.0));
        assert_eq!(mcnemar_chi_square(0, 0, false), (0.0, 1.0));
        // b = c: exact p is capped at 1.
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        // All discordant pairs on one side: 2 · 2^-n.
        assert!((mcnemar_exact(0, 10) - 2.0 / 1024.0).abs() < 1e-16);
        assert_eq!(mcnemar_exact(3, 12), mcnemar_exact(12, 3));
        assert_eq!(format_p(3.7159e-5), "3.7e-5");
        assert_eq!(format_p(0.0352), "0.0352");
        assert_eq!(
            discordant_counts(&[true, false, true, true], &[false, true, true, false]).unwrap(),
            (2, 1)
        );
        assert!(discordant_counts(&[true], &[]).is_err());
    }

    #[test]
    fn paired_edge_cases() {
        assert!(paired_differences(&[1.0, 2.0], &[1.0]).is_err());
        assert!(paired_t_test(&[1.0, 2.0], &[1.0], 0.95).is_err());
        assert!(paired_bootstrap(&[1.0, 2.0], &[1.0], 10, 0.95, 0).is_err());
        // One pair: nothing to estimate a spread from.
        let t = paired_t_test(&[1.0], &[0.0], 0.95).unwrap();
        assert!(t.statistic.is_nan() && t.p_value.is_nan() && t.df.is_nan());
        let b = paired_bootstrap(&[1.0], &[0.0], 100, 0.95, 0).unwrap();
        assert_eq!((b.mean_difference, b.ci), (1.0, (1.0, 1.0)));
        assert!(b.p_value.is_nan());
        let e = paired_bootstrap(&[], &[], 100, 0.95, 0).unwrap();
        assert!(e.mean_difference.is_nan() && e.ci.0.is_nan());
        // Constant non-zero differences: t = inf, p = 0 (scipy's ttest_rel gives the same);
        // all zero: NaN.
        let t = paired_t_test(&[1.0, 2.0, 3.0], &[0.0, 1.0, 2.0], 0.95).unwrap();
        assert_eq!((t.statistic, t.p_value), (f64::INFINITY, 0.0));
        let t = paired_t_test(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], 0.95).unwrap();
        assert!(t.statistic.is_nan() && t.p_value.is_nan());
        // All-zero differences: every resample mean is 0, p = 1.
        let b = paired_bootstrap(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], 99, 0.95, 0).unwrap();
        assert_eq!((b.ci, b.p_value), ((0.0, 0.0), 1.0));
        // Nothing panics on empty comparisons.
        assert!(Comparison::binary(&[], &[], 10, 0.95, 0).unwrap().p_value == 1.0);
        assert!(Comparison::continuous(&[], &[], 10, 0.95, 0)
            .unwrap()
            .effect
            .is_nan());
        assert!(Comparison::binary(&[true], &[], 10, 0.95, 0).is_err());
    }

    #[test]
    fn distribution_identities() {
        for &p in &[1e-12, 0.01, 0.3, 0.5, 0.77, 0.999] {
            let z = normal_quantile(p);
            assert!((normal_cdf(z) - p).abs() < 1e-14 * p.max(1e-3), "{p}");
            for &df in &[1.0, 3.0, 40.0] {
                let t = student_t_quantile(p, df);
                assert!((student_t_cdf(t, df) / p - 1.0).abs() < 1e-12, "{p} {df}");
            }
        }
        // Cauchy (df = 1) and df = 2 have closed forms.
        for &t in &[-7.0f64, -0.3, 0.0, 0.9, 25.0] {
            let cauchy = 0.5 + t.atan() / std::f64::consts::PI;
            let got = student_t_cdf(t, 1.0);
            assert!((got - cauchy).abs() < 1e-14, "{t}: {got} vs {cauchy}");
            let two = 0.5 + t / (2.0 * (2.0 + t * t).sqrt());
            let got = student_t_cdf(t, 2.0);
            assert!((got - two).abs() < 1e-14, "{t}: {got} vs {two}");
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(1.5).is_nan());
        assert_eq!(binomial_cdf(5, 5, 0.3), 1.0);
        assert!((binomial_cdf(0, 3, 0.5) / 0.125 - 1.0).abs() < 1e-14);
        let half = 0.5 * std::f64::consts::PI.ln();
        // The recurrence from ln Γ(10.5) ≈ 13.9 cancels to 0.57: a few ulps of 13.9.
        assert!(
            (ln_gamma(0.5) - half).abs() < 4e-15,
            "{} vs {half}",
            ln_gamma(0.5)
        );
        assert!((ln_gamma(20.0) - (1..20).map(|k| (k as f64).ln()).sum::<f64>()).abs() < 1e-13);
    }

    #[test]
    fn minimum_detectable_effect_scales() {
        let m = minimum_detectable_effect(100, 1.0, 0.05, 0.8);
        assert!((m - (1.959963984540054 + 0.8416212335729143) / 10.0).abs() < 1e-14);
        assert!((minimum_detectable_effect(400, 1.0, 0.05, 0.8) - m / 2.0).abs() < 1e-15);
        assert_eq!(minimum_detectable_effect(0, 1.0, 0.05, 0.8), f64::INFINITY);
        assert_eq!(binary_difference_sd(0.25), 0.5);
        assert!(binary_difference_sd(1.5).is_nan());
        assert!((discordant_rate_if_independent(0.7, 0.65) - 0.44).abs() < 1e-15);
    }
}
