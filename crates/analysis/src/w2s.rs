//! Weak-to-strong generalisation with linear heads on frozen features (Burns et al., 2023, at
//! CPU scale): a strong student trained on a weak supervisor's labels, with and without the
//! auxiliary confidence loss, against the student trained on the truth.
//!
//! Every head here is the same model and optimiser, so that only the targets differ:
//! `p(x) = σ(w·z(x) + b)` on standardised features `z`, trained by full-batch Adam (learning
//! rate `lr`, `steps` steps, β = (0.9, 0.999)) on the mean cross-entropy against soft targets
//! plus `l2/2·‖w‖²` ([`HeadOptions`]).
//!
//! The confidence loss ([`train_head`] with `confidence = true`), the paper's eq. 1:
//! `L = (1 − α)·CE(p, p_weak) + α·CE(p, ĥ)`, where `ĥ = 1[p > t]` is the student's own
//! hardened prediction (no gradient through it), with the threshold `t` set at every step so
//! that the share of hardened positives equals the mean weak label; α rises linearly from 0 to
//! `alpha_max` over the first `warmup` fraction of the steps, then stays. The paper uses
//! α_max = 0.75 for its large students and 0.5 for small ones; the default here is 0.75.
//!
//! Performance gap recovered: `PGR = (acc_w2s − acc_weak) / (acc_ceiling − acc_weak)`
//! (1 = the student matches its ceiling, 0 = it only imitates its supervisor); undefined
//! (NaN) when the ceiling does not beat the supervisor.

use serde::{Deserialize, Serialize};

use crate::probe::{evaluate, sigmoid, Features, LinearProbe, Standardizer};

/// Training of every head (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadOptions {
    /// Full-batch Adam steps.
    pub steps: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// L2 penalty on the weights (standardised space), `l2/2·‖w‖²`.
    pub l2: f64,
    /// The confidence loss's final α.
    pub alpha_max: f64,
    /// Fraction of the steps over which α rises from 0 to `alpha_max`.
    pub warmup: f64,
}

impl Default for HeadOptions {
    fn default() -> Self {
        HeadOptions {
            steps: 500,
            lr: 0.01,
            l2: 1e-2,
            alpha_max: 0.75,
            warmup: 0.2,
        }
    }
}

/// Train a logistic head on `x` against soft `targets` in [0, 1] (hard labels are 0/1), with
/// the confidence loss when `confidence`; returned in raw feature space.
pub fn train_head(
    x: Features,
    targets: &[f64],
    opts: &HeadOptions,
    confidence: bool,
) -> LinearProbe {
    let st = Standardizer::fit(x);
    let zdata = st.apply(x);
    let d = x.d;
    let z = Features::new(&zdata, d).expect("standardised features keep their shape");
    let n = z.n;
    let prior = targets.iter().sum::<f64>() / n.max(1) as f64;
    let (mut w, mut b) = (vec![0.0f64; d], 0.0f64);
    let (mut mw, mut vw) = (vec![0.0f64; d], vec![0.0f64; d]);
    let (mut mb, mut vb) = (0.0f64, 0.0f64);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let warm = (opts.warmup * opts.steps as f64).max(1.0);
    let mut p = vec![0.0f64; n];
    let mut target = vec![0.0f64; n];
    let mut gw = vec![0.0f64; d];
    for step in 0..opts.steps {
        for (i, pi) in p.iter_mut().enumerate() {
            let row = z.row(i);
            let s: f64 = row.iter().zip(&w).map(|(&a, &c)| a as f64 * c).sum::<f64>() + b;
            *pi = sigmoid(s);
        }
        let alpha = if confidence {
            opts.alpha_max * ((step as f64) / warm).min(1.0)
        } else {
            0.0
        };
        if alpha > 0.0 {
            let t = hardening_threshold(&p, prior);
            for i in 0..n {
                let hard = if p[i] > t { 1.0 } else { 0.0 };
                target[i] = (1.0 - alpha) * targets[i] + alpha * hard;
            }
        } else {
            target.copy_from_slice(targets);
        }
        // d(mean CE)/ds_i = (p_i − target_i) / n.
        gw.iter_mut().for_each(|g| *g = 0.0);
        let mut gb = 0.0;
        for i in 0..n {
            let r = (p[i] - target[i]) / n as f64;
            gb += r;
            for (g, &a) in gw.iter_mut().zip(z.row(i)) {
                *g += r * a as f64;
            }
        }
        let k = step as i32 + 1;
        let (c1, c2) = (1.0 - b1.powi(k), 1.0 - b2.powi(k));
        for j in 0..d {
            let g = gw[j] + opts.l2 * w[j];
            mw[j] = b1 * mw[j] + (1.0 - b1) * g;
            vw[j] = b2 * vw[j] + (1.0 - b2) * g * g;
            w[j] -= opts.lr * (mw[j] / c1) / ((vw[j] / c2).sqrt() + eps);
        }
        mb = b1 * mb + (1.0 - b1) * gb;
        vb = b2 * vb + (1.0 - b2) * gb * gb;
        b -= opts.lr * (mb / c1) / ((vb / c2).sqrt() + eps);
    }
    st.unstandardize(&LinearProbe {
        weights: w,
        bias: b,
    })
}

/// The threshold `t` such that the share of `p > t` is as close as possible to `share`: the
/// value just below the top `round(share·n)` probabilities.
fn hardening_threshold(p: &[f64], share: f64) -> f64 {
    let mut sorted = p.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let k = ((share * p.len() as f64).round() as usize).min(p.len());
    match k {
        0 => f64::INFINITY,
        k if k == p.len() => f64::NEG_INFINITY,
        k => (sorted[k - 1] + sorted[k]) / 2.0,
    }
}

/// `(w2s − weak) / (ceiling − weak)`; NaN unless the ceiling beats the weak supervisor.
pub fn pgr(weak: f64, w2s: f64, ceiling: f64) -> f64 {
    if ceiling > weak {
        (w2s - weak) / (ceiling - weak)
    } else {
        f64::NAN
    }
}

/// One weak-to-strong trial: accuracies on the test rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The weak supervisor (trained on the truth on its own rows).
    pub weak: f64,
    /// The strong student on the weak labels, plain cross-entropy.
    pub w2s: f64,
    /// The strong student on the weak labels, with the confidence loss.
    pub w2s_confidence: f64,
    /// The strong student on the truth of the same rows.
    pub ceiling: f64,
}

impl Trial {
    /// PGR of the plain student.
    pub fn pgr(&self) -> f64 {
        pgr(self.weak, self.w2s, self.ceiling)
    }
    /// PGR of the student with the confidence loss.
    pub fn pgr_confidence(&self) -> f64 {
        pgr(self.weak, self.w2s_confidence, self.ceiling)
    }
}

/// What one trial is trained and tested on. Rows of `weak_labels` and `student_x` are the
/// student's training rows; `test_*` are held out from every head.
pub struct TrialData<'a> {
    /// The weak supervisor's soft labels on the student's rows, in [0, 1].
    pub weak_labels: &'a [f64],
    /// The truth on the student's rows (for the ceiling).
    pub student_truth: &'a [bool],
    /// Strong features of the student's rows.
    pub student_x: Features<'a>,
    /// Strong features of the test rows, and their truth.
    pub test_x: Features<'a>,
    pub test_truth: &'a [bool],
    /// The weak supervisor's accuracy on the test rows.
    pub weak_accuracy: f64,
}

/// Train the three strong heads of one trial and test them.
pub fn run_trial(data: &TrialData, opts: &HeadOptions) -> Trial {
    let truth: Vec<f64> = data
        .student_truth
        .iter()
        .map(|&t| f64::from(u8::from(t)))
        .collect();
    let naive = train_head(data.student_x, data.weak_labels, opts, false);
    let conf = train_head(data.student_x, data.weak_labels, opts, true);
    let ceiling = train_head(data.student_x, &truth, opts, false);
    Trial {
        weak: data.weak_accuracy,
        w2s: evaluate(&naive, data.test_x, data.test_truth).accuracy,
        w2s_confidence: evaluate(&conf, data.test_x, data.test_truth).accuracy,
        ceiling: evaluate(&ceiling, data.test_x, data.test_truth).accuracy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use interplab_core::rng::SplitMix;

    fn gaussian(rng: &mut SplitMix) -> f64 {
        let (u1, u2) = (rng.next_f64().max(1e-300), rng.next_f64());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// `n` rows of `d` standard normal features.
    fn features(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix(seed);
        (0..n * d).map(|_| gaussian(&mut rng) as f32).collect()
    }

    /// Truth = sign(x₀); weak labels from `weak(x, rng)`; returns the trial.
    fn synthetic(weak: &dyn Fn(&[f32], &mut SplitMix) -> bool, seed: u64) -> Trial {
        let (n, t, d) = (3000, 1000, 8);
        let xs = features(n, d, seed);
        let xt = features(t, d, seed + 100);
        let truth = |x: &[f32]| x[0] > 0.0;
        let sx = Features::new(&xs, d).unwrap();
        let tx = Features::new(&xt, d).unwrap();
        let mut rng = SplitMix(seed + 7);
        let weak_labels: Vec<f64> = (0..n)
            .map(|i| f64::from(u8::from(weak(sx.row(i), &mut rng))))
            .collect();
        let student_truth: Vec<bool> = (0..n).map(|i| truth(sx.row(i))).collect();
        let test_truth: Vec<bool> = (0..t).map(|i| truth(tx.row(i))).collect();
        let mut rng = SplitMix(seed + 9);
        let weak_accuracy = (0..t)
            .filter(|&i| weak(tx.row(i), &mut rng) == test_truth[i])
            .count() as f64
            / t as f64;
        run_trial(
            &TrialData {
                weak_labels: &weak_labels,
                student_truth: &student_truth,
                student_x: sx,
                test_x: tx,
                test_truth: &test_truth,
                weak_accuracy,
            },
            &HeadOptions::default(),
        )
    }

    #[test]
    fn weak_to_strong_succeeds_when_the_weak_errors_are_noise() {
        // The supervisor is right 70% of the time, its errors independent of x: a linear
        // student fitting those labels still finds sign(x₀), so it recovers most of the gap.
        let tr = synthetic(&|x, rng| (x[0] > 0.0) ^ (rng.next_f64() < 0.3), 1);
        assert!((tr.weak - 0.7).abs() < 0.05, "{tr:?}");
        assert!(tr.ceiling > 0.97, "{tr:?}");
        assert!(tr.pgr() > 0.8, "PGR {} ({tr:?})", tr.pgr());
    }

    #[test]
    fn weak_to_strong_fails_when_the_student_can_imitate_the_errors() {
        // The supervisor answers sign(x₀ + x₁): its mistakes are themselves a linear function of
        // the strong features, so the student learns the supervisor, mistakes and all.
        let tr = synthetic(&|x, _| x[0] + x[1] > 0.0, 2);
        assert!((tr.weak - 0.75).abs() < 0.05, "{tr:?}");
        assert!(tr.ceiling > 0.97, "{tr:?}");
        assert!(tr.pgr().abs() < 0.2, "PGR {} ({tr:?})", tr.pgr());
    }

    #[test]
    fn the_confidence_loss_hardens_toward_the_students_own_split() {
        // Soft weak labels of 0.5 everywhere carry no information; plain cross-entropy then
        // leaves the head flat, while the confidence loss pushes it to commit to its own
        // split (the scores spread out).
        let d = 4;
        let xs = features(400, d, 3);
        let x = Features::new(&xs, d).unwrap();
        let half = vec![0.5; 400];
        let spread =
            |p: &LinearProbe| (0..400).map(|i| p.score(x.row(i)).abs()).sum::<f64>() / 400.0;
        let plain = train_head(x, &half, &HeadOptions::default(), false);
        let conf = train_head(x, &half, &HeadOptions::default(), true);
        assert!(spread(&plain) < 0.05, "{}", spread(&plain));
        assert!(spread(&conf) > 0.5, "{}", spread(&conf));
    }

    #[test]
    fn hardening_threshold_keeps_the_share() {
        let p = [0.9, 0.1, 0.8, 0.3, 0.6];
        let t = hardening_threshold(&p, 0.4);
        assert_eq!(p.iter().filter(|&&x| x > t).count(), 2);
        assert_eq!(hardening_threshold(&p, 0.0), f64::INFINITY);
        assert_eq!(hardening_threshold(&p, 1.0), f64::NEG_INFINITY);
    }

    #[test]
    fn pgr_is_the_share_of_the_gap() {
        assert!((pgr(0.6, 0.8, 1.0) - 0.5).abs() < 1e-12);
        assert!(pgr(0.8, 0.9, 0.8).is_nan());
    }
}
