//! Linear probes on activations: L2-regularised logistic regression and the difference of class
//! means, scored on held-out examples by accuracy and AUROC with 95% confidence intervals.
//!
//! Features are `n` rows of `d` f32 values, row-major. Every sum is accumulated in f64. A probe
//! is a [`LinearProbe`] `score(x) = w·x + b`; a positive score predicts label 1.
//!
//! Definitions:
//! - [`fit_logistic`] minimises `(1/n) Σ softplus(−s_i (w·x_i + b)) + (λ/2)‖w‖²` with
//!   `s_i = ±1` (the bias is not penalised) by L-BFGS. This is scikit-learn's
//!   `LogisticRegression(C)` objective divided by `C·n`, so `λ = 1 / (C·n)`.
//! - [`mean_difference`]: `w = μ₁ − μ₀`, `b = −w·(μ₁ + μ₀)/2` (the midpoint of the class means).
//! - [`auroc`]: the Mann–Whitney statistic `P(score₁ > score₀) + ½ P(score₁ = score₀)`.
//! - [`auroc_interval`]: ±1.96 of Hanley & McNeil's (1982) standard error, clipped to [0, 1].
//! - [`wilson_interval`]: Wilson's (1927) score interval for a proportion, z = 1.959964.

use interplab_core::rng::SplitMix;
use serde::{Deserialize, Serialize};

/// The 97.5% quantile of the standard normal: two-sided 95% intervals.
pub const Z95: f64 = 1.959_963_984_540_054;

/// `n` rows of `d` features, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Features<'a> {
    /// `n · d` values.
    pub data: &'a [f32],
    /// Rows (examples).
    pub n: usize,
    /// Columns (features).
    pub d: usize,
}

impl<'a> Features<'a> {
    /// Rows of `d` values; `None` when `data` is not a whole number of rows.
    pub fn new(data: &'a [f32], d: usize) -> Option<Self> {
        (d > 0 && data.len() % d == 0).then(|| Features {
            data,
            n: data.len() / d,
            d,
        })
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }
}

/// `score(x) = w·x + b`; positive predicts label 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearProbe {
    /// `w`, one weight per feature.
    pub weights: Vec<f64>,
    /// `b`.
    pub bias: f64,
}

impl LinearProbe {
    /// `w·x + b`.
    pub fn score(&self, x: &[f32]) -> f64 {
        dot(&self.weights, x) + self.bias
    }

    /// The score of every row.
    pub fn scores(&self, x: Features) -> Vec<f64> {
        (0..x.n).map(|i| self.score(x.row(i))).collect()
    }

    /// `w / ‖w‖` (zeros when `w` is zero).
    pub fn direction(&self) -> Vec<f64> {
        let norm = self.weights.iter().map(|w| w * w).sum::<f64>().sqrt();
        let norm = if norm > 0.0 { norm } else { 1.0 };
        self.weights.iter().map(|w| w / norm).collect()
    }
}

/// `Σ w_j x_j` in f64, four accumulators.
fn dot(w: &[f64], x: &[f32]) -> f64 {
    let mut acc = [0f64; 4];
    let (wc, xc) = (w.chunks_exact(4), x.chunks_exact(4));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (w, x) in wc.zip(xc) {
        for k in 0..4 {
            acc[k] += w[k] * x[k] as f64;
        }
    }
    let tail: f64 = wr.iter().zip(xr).map(|(w, &x)| w * x as f64).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Per-feature mean and standard deviation of training rows, to fit probes on standardised
/// features and map them back.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Per-feature mean.
    pub mean: Vec<f64>,
    /// Per-feature population standard deviation (1 where a feature is constant).
    pub sd: Vec<f64>,
}

impl Standardizer {
    /// Mean and standard deviation of the rows of `x`.
    pub fn fit(x: Features) -> Standardizer {
        let mut mean = vec![0f64; x.d];
        for i in 0..x.n {
            for (m, &v) in mean.iter_mut().zip(x.row(i)) {
                *m += v as f64;
            }
        }
        let n = x.n.max(1) as f64;
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; x.d];
        for i in 0..x.n {
            for ((s, &v), m) in var.iter_mut().zip(x.row(i)).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let sd = var
            .iter()
            .map(|s| {
                let sd = (s / n).sqrt();
                if sd > 0.0 && sd.is_finite() {
                    sd
                } else {
                    1.0
                }
            })
            .collect();
        Standardizer { mean, sd }
    }

    /// `(x − mean) / sd` of every row.
    pub fn apply(&self, x: Features) -> Vec<f32> {
        let mut out = Vec::with_capacity(x.data.len());
        for i in 0..x.n {
            for ((&v, m), s) in x.row(i).iter().zip(&self.mean).zip(&self.sd) {
                out.push(((v as f64 - m) / s) as f32);
            }
        }
        out
    }

    /// A probe fitted on standardised features as the same function of the raw features.
    pub fn unstandardize(&self, p: &LinearProbe) -> LinearProbe {
        let weights: Vec<f64> = p.weights.iter().zip(&self.sd).map(|(w, s)| w / s).collect();
        let shift: f64 = weights.iter().zip(&self.mean).map(|(w, m)| w * m).sum();
        LinearProbe {
            weights,
            bias: p.bias - shift,
        }
    }
}

/// How [`fit_logistic`] stops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogisticOptions {
    /// `λ` of the L2 penalty `(λ/2)‖w‖²` (mean loss scale).
    pub l2: f64,
    /// Converged when the largest gradient component is below this.
    pub tolerance: f64,
    /// At most this many L-BFGS iterations.
    pub max_iterations: usize,
}

impl Default for LogisticOptions {
    fn default() -> Self {
        LogisticOptions {
            l2: 1e-3,
            tolerance: 1e-6,
            max_iterations: 500,
        }
    }
}

/// A fitted logistic probe and how the fit ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticFit {
    /// The probe.
    pub probe: LinearProbe,
    /// The objective at the end.
    pub loss: f64,
    /// The largest gradient component at the end.
    pub grad_max: f64,
    /// L-BFGS iterations taken.
    pub iterations: usize,
    /// Whether `grad_max` fell below the tolerance.
    pub converged: bool,
}

/// `softplus(t) = ln(1 + e^t)`, without overflow.
fn softplus(t: f64) -> f64 {
    t.max(0.0) + (-t.abs()).exp().ln_1p()
}

/// The logistic function `1 / (1 + e^−t)`, without overflow.
pub fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// The objective and its gradient (`w` then `b`) at `theta` = `[w.., b]`.
fn objective(x: Features, y: &[bool], l2: f64, theta: &[f64], grad: &mut [f64]) -> f64 {
    let d = x.d;
    let (w, b) = (&theta[..d], theta[d]);
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut loss = 0.0;
    for i in 0..x.n {
        let row = x.row(i);
        let z = dot(w, row) + b;
        let (l, r) = if y[i] {
            (softplus(-z), sigmoid(z) - 1.0)
        } else {
            (softplus(z), sigmoid(z))
        };
        loss += l;
        for (g, &v) in grad[..d].iter_mut().zip(row) {
            *g += r * v as f64;
        }
        grad[d] += r;
    }
    let n = x.n as f64;
    grad.iter_mut().for_each(|g| *g /= n);
    let mut penalty = 0.0;
    for (g, &wj) in grad[..d].iter_mut().zip(w) {
        *g += l2 * wj;
        penalty += wj * wj;
    }
    loss / n + 0.5 * l2 * penalty
}

fn inner(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, g| m.max(g.abs()))
}

/// Fit a logistic probe by L-BFGS (memory 10, backtracking Armijo line search), starting from
/// zero. Deterministic: the same rows give the same bits. `x` and `y` must have the same rows
/// and both classes should be present (otherwise the optimum is at infinity and the fit stops
/// at `max_iterations`, not converged).
pub fn fit_logistic(x: Features, y: &[bool], opts: &LogisticOptions) -> LogisticFit {
    assert_eq!(x.n, y.len(), "one label per row");
    const MEMORY: usize = 10;
    let dim = x.d + 1;
    let mut theta = vec![0f64; dim];
    let mut grad = vec![0f64; dim];
    let mut loss = objective(x, y, opts.l2, &theta, &mut grad);
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let (mut trial, mut trial_grad) = (vec![0f64; dim], vec![0f64; dim]);
    let mut iterations = 0;
    while max_abs(&grad) > opts.tolerance && iterations < opts.max_iterations {
        iterations += 1;
        // Two-loop recursion: direction = −H·grad.
        let mut q = grad.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, yv, rho) in history.iter().rev() {
            let a = rho * inner(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = match history.last() {
            Some((s, yv, _)) => inner(s, yv) / inner(yv, yv),
            None => 1.0 / max_abs(&grad).max(1.0),
        };
        q.iter_mut().for_each(|qi| *qi *= gamma);
        for ((s, yv, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let bta = rho * inner(yv, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += (a - bta) * si);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = inner(&grad, &dir);
        if slope >= 0.0 {
            // Not a descent direction (rounding): restart from steepest descent.
            history.clear();
            dir = grad.iter().map(|g| -g).collect();
            slope = inner(&grad, &dir);
        }
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..60 {
            trial
                .iter_mut()
                .zip(&theta)
                .zip(&dir)
                .for_each(|((t, th), dv)| *t = th + step * dv);
            let l = objective(x, y, opts.l2, &trial, &mut trial_grad);
            if l <= loss + 1e-4 * step * slope {
                let s: Vec<f64> = trial.iter().zip(&theta).map(|(a, b)| a - b).collect();
                let yv: Vec<f64> = trial_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
                let sy = inner(&s, &yv);
                if sy > 1e-12 * inner(&yv, &yv).max(f64::MIN_POSITIVE) {
                    if history.len() == MEMORY {
                        history.remove(0);
                    }
                    history.push((s, yv, 1.0 / sy));
                }
                std::mem::swap(&mut theta, &mut trial);
                std::mem::swap(&mut grad, &mut trial_grad);
                loss = l;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    let bias = theta[x.d];
    theta.truncate(x.d);
    let grad_max = max_abs(&grad);
    LogisticFit {
        probe: LinearProbe {
            weights: theta,
            bias,
        },
        loss,
        grad_max,
        iterations,
        converged: grad_max <= opts.tolerance,
    }
}

/// The difference-of-means probe: `w = μ₁ − μ₀`, threshold at the midpoint. `None` when a
/// class has no rows.
pub fn mean_difference(x: Features, y: &[bool]) -> Option<LinearProbe> {
    assert_eq!(x.n, y.len(), "one label per row");
    let (mut m1, mut m0) = (vec![0f64; x.d], vec![0f64; x.d]);
    let (mut n1, mut n0) = (0usize, 0usize);
    for i in 0..x.n {
        let (m, c) = if y[i] {
            (&mut m1, &mut n1)
        } else {
            (&mut m0, &mut n0)
        };
        *c += 1;
        for (a, &v) in m.iter_mut().zip(x.row(i)) {
            *a += v as f64;
        }
    }
    if n1 == 0 || n0 == 0 {
        return None;
    }
    m1.iter_mut().for_each(|v| *v /= n1 as f64);
    m0.iter_mut().for_each(|v| *v /= n0 as f64);
    let weights: Vec<f64> = m1.iter().zip(&m0).map(|(a, b)| a - b).collect();
    let bias = -weights
        .iter()
        .zip(m1.iter().zip(&m0))
        .map(|(w, (a, b))| w * (a + b) / 2.0)
        .sum::<f64>();
    Some(LinearProbe { weights, bias })
}

/// Area under the ROC curve of `scores` for `labels`: the Mann–Whitney `U / (n₁ n₀)`, ties
/// counted half. NaN when a class is empty.
pub fn auroc(scores: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Midranks (1-based) of tied runs; the sum of the positives' ranks gives U.
    let (mut rank_sum, mut i) = (0f64, 0);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let n1 = labels.iter().filter(|&&l| l).count() as f64;
    let n0 = labels.len() as f64 - n1;
    if n1 == 0.0 || n0 == 0.0 {
        return f64::NAN;
    }
    (rank_sum - n1 * (n1 + 1.0) / 2.0) / (n1 * n0)
}

/// A 95% interval for an AUROC `a` from `n1` positives and `n0` negatives: ±1.96 of Hanley &
/// McNeil's standard error `√[(A(1−A) + (n₁−1)(Q₁−A²) + (n₀−1)(Q₂−A²)) / (n₁n₀)]`,
/// `Q₁ = A/(2−A)`, `Q₂ = 2A²/(1+A)`, clipped to [0, 1].
pub fn auroc_interval(a: f64, n1: usize, n0: usize) -> (f64, f64) {
    let (n1f, n0f) = (n1 as f64, n0 as f64);
    let q1 = a / (2.0 - a);
    let q2 = 2.0 * a * a / (1.0 + a);
    let var =
        (a * (1.0 - a) + (n1f - 1.0) * (q1 - a * a) + (n0f - 1.0) * (q2 - a * a)) / (n1f * n0f);
    let se = var.max(0.0).sqrt();
    ((a - Z95 * se).max(0.0), (a + Z95 * se).min(1.0))
}

/// Wilson's 95% score interval for `k` successes in `n` trials (`(NaN, NaN)` when `n` is 0).
pub fn wilson_interval(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let (nf, p, z2) = (n as f64, k as f64 / n as f64, Z95 * Z95);
    let centre = (p + z2 / (2.0 * nf)) / (1.0 + z2 / nf);
    let half = Z95 / (1.0 + z2 / nf) * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// How a probe does on labelled rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Rows scored.
    pub n: usize,
    /// Fraction with `(score > 0) == label`.
    pub accuracy: f64,
    /// Wilson 95% interval of the accuracy.
    pub accuracy_ci: (f64, f64),
    /// [`auroc`] of the scores.
    pub auroc: f64,
    /// Hanley–McNeil 95% interval of the AUROC.
    pub auroc_ci: (f64, f64),
}

/// Accuracy and AUROC of `probe` on `x`, `y`.
pub fn evaluate(probe: &LinearProbe, x: Features, y: &[bool]) -> Evaluation {
    let scores = probe.scores(x);
    let correct = scores
        .iter()
        .zip(y)
        .filter(|(s, &l)| (**s > 0.0) == l)
        .count();
    let n1 = y.iter().filter(|&&l| l).count();
    let a = auroc(&scores, y);
    Evaluation {
        n: y.len(),
        accuracy: correct as f64 / y.len().max(1) as f64,
        accuracy_ci: wilson_interval(correct, y.len()),
        auroc: a,
        auroc_ci: auroc_interval(a, n1, y.len() - n1),
    }
}

/// Rows split into (train, test) with whole groups on one side: the distinct groups are
/// shuffled with `seed` and the first `round(test_fraction · groups)` (at least one, at most
/// all but one) go to test. Row order within each side is ascending.
pub fn split_by_group(groups: &[u64], test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut distinct: Vec<u64> = groups.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    SplitMix::new(seed).shuffle(&mut distinct);
    let n_test = ((test_fraction * distinct.len() as f64).round() as usize).clamp(
        1.min(distinct.len()),
        distinct.len().saturating_sub(1).max(1),
    );
    let test: std::collections::HashSet<u64> = distinct[..n_test].iter().copied().collect();
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, g) in groups.iter().enumerate() {
        if test.contains(g) {
            held.push(i);
        } else {
            train.push(i);
        }
    }
    (train, held)
}

/// The rows `idx` of `x`, copied.
pub fn take_rows(x: Features, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * x.d);
    for &i in idx {
        out.extend_from_slice(x.row(i));
    }
    out
}

/// Which rows train and which test, with the task's labels and the control's (shuffled)
/// labels on each side.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Training rows.
    pub train: Vec<usize>,
    /// Held-out rows.
    pub test: Vec<usize>,
    /// Labels of the training rows.
    pub y_train: Vec<bool>,
    /// Labels of the held-out rows.
    pub y_test: Vec<bool>,
    /// Shuffled labels of the training rows (the control task).
    pub control_train: Vec<bool>,
    /// Shuffled labels of the held-out rows.
    pub control_test: Vec<bool>,
}

impl Split {
    /// Rows split by group ([`split_by_group`]); the control task's labels are `labels`
    /// permuted with `seed` over all rows.
    pub fn new(labels: &[bool], groups: &[u64], test_fraction: f64, seed: u64) -> Split {
        let (train, test) = split_by_group(groups, test_fraction, seed);
        let mut shuffled = labels.to_vec();
        SplitMix::new(seed ^ 0x5eed_c0de).shuffle(&mut shuffled);
        let pick = |v: &[bool], idx: &[usize]| idx.iter().map(|&i| v[i]).collect::<Vec<bool>>();
        Split {
            y_train: pick(labels, &train),
            y_test: pick(labels, &test),
            control_train: pick(&shuffled, &train),
            control_test: pick(&shuffled, &test),
            train,
            test,
        }
    }
}

/// Every probe of one set of features: logistic on standardised features (and mapped back),
/// difference of means, and the shuffled-label control.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSet {
    /// The logistic probe on held-out rows.
    pub logistic: Evaluation,
    /// Its accuracy on the training rows.
    pub logistic_train_accuracy: f64,
    /// How its fit ended (the probe there is in standardised space).
    pub fit: LogisticFit,
    /// The logistic probe as a function of the raw features.
    pub logistic_probe: LinearProbe,
    /// The difference-of-means probe on held-out rows.
    pub mean_diff: Evaluation,
    /// The difference-of-means probe (raw features).
    pub mean_diff_probe: LinearProbe,
    /// The control: a logistic probe trained and tested on shuffled labels.
    pub control: Evaluation,
}

/// [`fit_logistic`] on `x` standardised ([`Standardizer`]), and the fitted probe as a function
/// of the raw features.
pub fn fit_logistic_standardized(
    x: Features,
    y: &[bool],
    opts: &LogisticOptions,
) -> (LogisticFit, LinearProbe) {
    let st = Standardizer::fit(x);
    let z = st.apply(x);
    let fit = fit_logistic(Features::new(&z, x.d).expect("same rows"), y, opts);
    let raw = st.unstandardize(&fit.probe);
    (fit, raw)
}

/// Fit and score every probe of `x` on `split`. `None` when the training rows lack a class.
pub fn probe_set(x: Features, split: &Split, opts: &LogisticOptions) -> Option<ProbeSet> {
    let d = x.d;
    let (xtr, xte) = (take_rows(x, &split.train), take_rows(x, &split.test));
    let (ftr, fte) = (Features::new(&xtr, d)?, Features::new(&xte, d)?);
    let mean_diff_probe = mean_difference(ftr, &split.y_train)?;
    let st = Standardizer::fit(ftr);
    let (ztr, zte) = (st.apply(ftr), st.apply(fte));
    let (ztr, zte) = (Features::new(&ztr, d)?, Features::new(&zte, d)?);
    let fit = fit_logistic(ztr, &split.y_train, opts);
    let control = fit_logistic(ztr, &split.control_train, opts);
    Some(ProbeSet {
        logistic: evaluate(&fit.probe, zte, &split.y_test),
        logistic_train_accuracy: evaluate(&fit.probe, ztr, &split.y_train).accuracy,
        logistic_probe: st.unstandardize(&fit.probe),
        fit,
        mean_diff: evaluate(&mean_diff_probe, fte, &split.y_test),
        mean_diff_probe,
        control: evaluate(&control.probe, zte, &split.control_test),
    })
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let (na, nb) = (inner(a, a).sqrt(), inner(b, b).sqrt());
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        inner(a, b) / (na * nb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows `x = μ·(label ? +1 : −1)·u + noise` for a planted unit direction `u`.
    fn planted(n: usize, d: usize, sep: f64, seed: u64) -> (Vec<f32>, Vec<bool>, Vec<f64>) {
        let mut rng = SplitMix::new(seed);
        let mut u: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        let norm = inner(&u, &u).sqrt();
        u.iter_mut().for_each(|v| *v /= norm);
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let label = i % 2 == 0;
            let s = if label { sep } else { -sep };
            for j in 0..d {
                x.push((s * u[j] + rng.normal()) as f32);
            }
            y.push(label);
        }
        (x, y, u)
    }

    #[test]
    fn logistic_and_mean_difference_recover_a_planted_direction() {
        let (d, n) = (32, 2000);
        let (x, y, u) = planted(n, d, 1.5, 7);
        let f = Features::new(&x, d).unwrap();
        let fit = fit_logistic(f, &y, &LogisticOptions::default());
        assert!(fit.converged, "{fit:?}");
        let cos = cosine(&fit.probe.weights, &u);
        assert!(cos > 0.95, "logistic cosine {cos}");
        let md = mean_difference(f, &y).unwrap();
        let cos_md = cosine(&md.weights, &u);
        assert!(cos_md > 0.95, "mean-difference cosine {cos_md}");
    }

    #[test]
    fn held_out_accuracy_is_near_the_bayes_rate_and_shuffled_labels_near_chance() {
        // Same planted direction for train and test: generate once, split by group.
        let (d, n) = (32, 4000);
        let (x, y, _) = planted(n, d, 1.5, 11);
        let f = Features::new(&x, d).unwrap();
        let groups: Vec<u64> = (0..n as u64).collect();
        let (tr, te) = split_by_group(&groups, 0.5, 3);
        let (xtr, xte) = (take_rows(f, &tr), take_rows(f, &te));
        let ytr: Vec<bool> = tr.iter().map(|&i| y[i]).collect();
        let yte: Vec<bool> = te.iter().map(|&i| y[i]).collect();
        let (ftr, fte) = (
            Features::new(&xtr, d).unwrap(),
            Features::new(&xte, d).unwrap(),
        );
        let fit = fit_logistic(ftr, &ytr, &LogisticOptions::default());
        let ev = evaluate(&fit.probe, fte, &yte);
        // Bayes accuracy Φ(1.5) = 0.9332; 2000 test rows give a ±0.011 interval.
        assert!((ev.accuracy - 0.9332).abs() < 0.03, "{ev:?}");
        assert!(ev.accuracy_ci.0 < ev.accuracy && ev.accuracy < ev.accuracy_ci.1);
        // Shuffled labels: no signal, held-out accuracy at chance.
        let mut perm = y.clone();
        SplitMix::new(99).shuffle(&mut perm);
        let ctr: Vec<bool> = tr.iter().map(|&i| perm[i]).collect();
        let cte: Vec<bool> = te.iter().map(|&i| perm[i]).collect();
        let control = fit_logistic(ftr, &ctr, &LogisticOptions::default());
        let ce = evaluate(&control.probe, fte, &cte);
        assert!((ce.accuracy - 0.5).abs() < 0.04, "{ce:?}");
        assert!(
            ce.auroc_ci.0 < 0.5 + 0.04 && ce.auroc_ci.1 > 0.5 - 0.04,
            "{ce:?}"
        );
    }

    #[test]
    fn the_fit_satisfies_the_optimality_condition() {
        // Overlapping classes, so the optimum is finite; the gradient there is zero.
        let (d, n) = (16, 500);
        let (x, y, _) = planted(n, d, 0.5, 5);
        let f = Features::new(&x, d).unwrap();
        let opts = LogisticOptions {
            l2: 1e-2,
            tolerance: 1e-9,
            max_iterations: 1000,
        };
        let fit = fit_logistic(f, &y, &opts);
        assert!(fit.converged && fit.grad_max <= 1e-9, "{fit:?}");
        // Recompute the gradient independently of the solver's bookkeeping.
        let mut theta = fit.probe.weights.clone();
        theta.push(fit.probe.bias);
        let mut g = vec![0.0; d + 1];
        let loss = objective(f, &y, opts.l2, &theta, &mut g);
        assert!(max_abs(&g) < 1e-9 && (loss - fit.loss).abs() < 1e-12);
        // Any perturbation raises the (strictly convex) objective.
        for j in [0, 3, d] {
            for eps in [1e-3, -1e-3] {
                let mut t = theta.clone();
                t[j] += eps;
                assert!(objective(f, &y, opts.l2, &t, &mut g) > loss);
            }
        }
    }

    #[test]
    fn auroc_equals_the_pair_count() {
        let mut rng = SplitMix::new(1);
        for trial in 0..20 {
            let n = 5 + trial * 3;
            // Scores on a coarse grid so that ties occur.
            let s: Vec<f64> = (0..n).map(|_| rng.below(7) as f64).collect();
            let l: Vec<bool> = (0..n)
                .map(|i| i == 0 || (i != 1 && rng.below(2) == 1))
                .collect();
            let (mut wins, mut pairs) = (0.0, 0.0);
            for i in 0..n {
                for j in 0..n {
                    if l[i] && !l[j] {
                        pairs += 1.0;
                        wins += if s[i] > s[j] {
                            1.0
                        } else if s[i] == s[j] {
                            0.5
                        } else {
                            0.0
                        };
                    }
                }
            }
            let a = auroc(&s, &l);
            assert!((a - wins / pairs).abs() < 1e-12, "{a} vs {}", wins / pairs);
        }
        assert!(auroc(&[1.0, 2.0], &[true, true]).is_nan());
    }

    #[test]
    fn standardized_probe_maps_back_to_the_same_scores() {
        let (d, n) = (8, 300);
        let (mut x, y, _) = planted(n, d, 1.0, 2);
        // Give the features offsets and scales, as residual streams have.
        for (i, v) in x.iter_mut().enumerate() {
            *v = *v * (1.0 + (i % d) as f32) + 10.0 * (i % d) as f32;
        }
        let f = Features::new(&x, d).unwrap();
        let st = Standardizer::fit(f);
        let z = st.apply(f);
        let fz = Features::new(&z, d).unwrap();
        let fit = fit_logistic(fz, &y, &LogisticOptions::default());
        let raw = st.unstandardize(&fit.probe);
        for i in 0..n {
            let (a, b) = (fit.probe.score(fz.row(i)), raw.score(f.row(i)));
            assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn groups_never_straddle_the_split() {
        let groups: Vec<u64> = (0..100).map(|i| i / 2).collect();
        let (tr, te) = split_by_group(&groups, 0.25, 4);
        assert_eq!(tr.len() + te.len(), 100);
        assert_eq!(te.len(), 2 * 13); // round(0.25 · 50) = 13 groups of two rows
        for &i in &te {
            assert!(!tr.iter().any(|&j| groups[j] == groups[i]));
        }
        assert_eq!(split_by_group(&groups, 0.25, 4), (tr, te));
    }
}
