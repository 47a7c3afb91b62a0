//! Reconstruction and sparsity metrics, one definition each (docs/sae.md §Metrics), accumulated
//! in f64 over batches so a result does not depend on how the evaluation set was batched.
//!
//! - `l0`: mean number of nonzero latents per row;
//! - `fvu = Σ_b ‖x_b − x̂_b‖² / Σ_b ‖x_b − x̄‖²`, `x̄` the mean over all rows seen; the
//!   denominator is computed as `Σ‖x‖² − n‖x̄‖²` from per-dimension sums in f64;
//! - `explained_variance = 1 − fvu`;
//! - `dead`: fraction of latents with no nonzero value on any row seen; `dense`: fraction
//!   nonzero on more than 10% of rows; `log10` firing-frequency histogram;
//! - `shrinkage = mean_b ‖x̂_b‖ / mean_b ‖x_b‖`;
//! - `fvu_without_outliers`: `fvu` over the rows with `‖x_b‖ ≤ 10 · median_b ‖x_b‖` only (the
//!   mean taken over those rows too); `outlier_rows` counts the rows left out. Residual streams
//!   hold rare rows of enormous norm (massive activations) that can carry most of the total
//!   variance, so that `fvu` mostly measures them (docs/sae.md §Results); this one measures the
//!   ordinary rows. `None` when more than [`OUTLIER_KEEP`] rows would be left out.

use serde::{Deserialize, Serialize};

use crate::sae::Codes;

/// The most rows `fvu_without_outliers` can leave out (the largest-norm rows are kept aside in
/// full so their contributions can be taken out of the sums at the end).
pub const OUTLIER_KEEP: usize = 4096;

/// A row is an outlier when its norm exceeds this multiple of the median row norm.
pub const OUTLIER_FACTOR: f64 = 10.0;

/// Running sums over evaluation rows.
#[derive(Debug, Clone)]
pub struct Accumulator {
    d: usize,
    rows: u64,
    nnz: u64,
    sq_err: f64,
    sum_x: Vec<f64>,
    sum_x2: f64,
    norm_x: f64,
    norm_xhat: f64,
    /// Every row's ‖x‖ (for the median).
    row_norms: Vec<f64>,
    /// The largest-norm rows seen (at most 2·[`OUTLIER_KEEP`] between prunings): (‖x‖,
    /// ‖x − x̂‖², x).
    largest: Vec<(f64, f64, Vec<f32>)>,
    /// The smallest norm in `largest` after the last pruning (−∞ before).
    largest_floor: f64,
    /// Rows on which each latent fired.
    pub fires: Vec<u64>,
}

/// The metrics of an evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    /// Rows evaluated (the N of `dead`).
    pub tokens: u64,
    pub l0: f64,
    pub fvu: f64,
    pub explained_variance: f64,
    pub mse: f64,
    pub dead: f64,
    pub dense: f64,
    pub shrinkage: f64,
    /// `fvu` over the rows whose norm is at most 10× the median row norm.
    #[serde(default)]
    pub fvu_without_outliers: Option<f64>,
    /// Rows left out of `fvu_without_outliers`.
    #[serde(default)]
    pub outlier_rows: u64,
    /// Histogram of `log10(firing frequency)` of the latents that fired: bin lower edges
    /// (from −8 in steps of 0.25) and counts; dead latents are counted in `dead`.
    pub log_density_edges: Vec<f64>,
    pub log_density_counts: Vec<u64>,
}

impl Accumulator {
    /// For rows of width `d` and `d_sae` latents.
    pub fn new(d: usize, d_sae: usize) -> Accumulator {
        Accumulator {
            d,
            rows: 0,
            nnz: 0,
            sq_err: 0.0,
            sum_x: vec![0.0; d],
            sum_x2: 0.0,
            norm_x: 0.0,
            norm_xhat: 0.0,
            row_norms: Vec::new(),
            largest: Vec::new(),
            largest_floor: f64::NEG_INFINITY,
            fires: vec![0; d_sae],
        }
    }

    /// Add a batch: targets `x`, reconstructions `x_hat` (`[n, d]`), and the codes.
    pub fn add(&mut self, x: &[f32], x_hat: &[f32], codes: &Codes) {
        let d = self.d;
        for (xr, hr) in x.chunks_exact(d).zip(x_hat.chunks_exact(d)) {
            let mut nx = 0.0f64;
            let mut nh = 0.0f64;
            let mut err = 0.0f64;
            for ((s, &a), &b) in self.sum_x.iter_mut().zip(xr).zip(hr) {
                let (a, b) = (a as f64, b as f64);
                *s += a;
                nx += a * a;
                nh += b * b;
                err += (a - b) * (a - b);
            }
            self.sq_err += err;
            self.sum_x2 += nx;
            self.row_norms.push(nx.sqrt());
            // Only a row above the smallest norm kept at the last pruning can be among the
            // largest: the others are not copied.
            if nx.sqrt() > self.largest_floor {
                self.largest.push((nx.sqrt(), err, xr.to_vec()));
                if self.largest.len() >= 2 * OUTLIER_KEEP {
                    self.prune();
                }
            }
            self.norm_x += nx.sqrt();
            self.norm_xhat += nh.sqrt();
            self.rows += 1;
        }
        for b in 0..codes.rows() {
            for (i, v) in codes.row(b) {
                if v != 0.0 {
                    self.fires[i] += 1;
                    self.nnz += 1;
                }
            }
        }
    }

    /// Keep only the [`OUTLIER_KEEP`] largest-norm rows aside.
    fn prune(&mut self) {
        self.largest.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        self.largest.truncate(OUTLIER_KEEP);
        self.largest_floor = self.largest.last().map_or(f64::NEG_INFINITY, |r| r.0);
    }

    /// `(fvu_without_outliers, outlier_rows)`.
    fn without_outliers(&self) -> (Option<f64>, u64) {
        let n = self.row_norms.len();
        if n == 0 {
            return (None, 0);
        }
        let mut norms = self.row_norms.clone();
        let (_, median, _) = norms.select_nth_unstable_by(n / 2, f64::total_cmp);
        let cut = OUTLIER_FACTOR * *median;
        let out = self.row_norms.iter().filter(|&&v| v > cut).count();
        let mut largest = self.largest.clone();
        largest.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        if out > OUTLIER_KEEP.min(largest.len()) || out == n {
            return (None, out as u64);
        }
        let (mut sum_x, mut sum_x2, mut sq_err) = (self.sum_x.clone(), self.sum_x2, self.sq_err);
        for (norm, err, x) in &largest[..out] {
            for (s, &a) in sum_x.iter_mut().zip(x) {
                *s -= a as f64;
            }
            sum_x2 -= norm * norm;
            sq_err -= err;
        }
        let kept = (n - out) as f64;
        let var = sum_x2 - sum_x.iter().map(|s| s * s).sum::<f64>() / kept;
        ((var > 0.0).then(|| sq_err / var), out as u64)
    }

    /// The mean target row of everything added.
    pub fn mean(&self) -> Vec<f32> {
        let n = self.rows.max(1) as f64;
        self.sum_x.iter().map(|s| (s / n) as f32).collect()
    }

    /// The metrics of everything added.
    pub fn finish(&self) -> Metrics {
        let n = self.rows.max(1) as f64;
        let mean_sq: f64 = self.sum_x.iter().map(|s| s * s).sum::<f64>() / n;
        let total_var = (self.sum_x2 - mean_sq).max(0.0);
        let fvu = if total_var > 0.0 {
            self.sq_err / total_var
        } else {
            f64::NAN
        };
        let m = self.fires.len().max(1) as f64;
        let dead = self.fires.iter().filter(|&&f| f == 0).count() as f64 / m;
        let dense = self.fires.iter().filter(|&&f| f as f64 / n > 0.1).count() as f64 / m;
        let edges: Vec<f64> = (0..=32).map(|i| -8.0 + 0.25 * i as f64).collect();
        let mut counts = vec![0u64; edges.len()];
        for &f in &self.fires {
            if f == 0 {
                continue;
            }
            let l = (f as f64 / n).log10();
            let bin = (((l + 8.0) / 0.25).floor().max(0.0) as usize).min(edges.len() - 1);
            counts[bin] += 1;
        }
        let (fvu_without_outliers, outlier_rows) = self.without_outliers();
        Metrics {
            tokens: self.rows,
            l0: self.nnz as f64 / n,
            fvu,
            explained_variance: 1.0 - fvu,
            mse: self.sq_err / n,
            dead,
            dense,
            shrinkage: if self.norm_x > 0.0 {
                self.norm_xhat / self.norm_x
            } else {
                f64::NAN
            },
            fvu_without_outliers,
            outlier_rows,
            log_density_edges: edges,
            log_density_counts: counts,
        }
    }
}

/// `(CE_ablated − CE_sae) / (CE_ablated − CE_clean)` from mean losses: the fraction of the
/// loss increase of ablating the hook that the reconstruction recovers.
pub fn ce_loss_recovered(ce_clean: f64, ce_sae: f64, ce_ablated: f64) -> f64 {
    (ce_ablated - ce_sae) / (ce_ablated - ce_clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fvu_without_outliers` against a direct two-pass computation on the kept rows, with a few
    /// planted massive rows; the same however the rows are batched.
    #[test]
    fn fvu_without_outliers_leaves_out_the_massive_rows() {
        let (d, n) = (8usize, 3000usize);
        let mut rng = interplab_core::rng::SplitMix::new(5);
        let mut x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
        for b in [17usize, 900, 2999] {
            for v in &mut x[b * d..(b + 1) * d] {
                *v = *v * 100.0 + 40.0;
            }
        }
        let x_hat: Vec<f32> = x.iter().map(|&v| v + 0.3 * rng.normal() as f32).collect();
        // Direct: median norm, the kept rows, their own mean.
        let norms: Vec<f64> = x
            .chunks_exact(d)
            .map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
            .collect();
        let mut sorted = norms.clone();
        sorted.sort_by(f64::total_cmp);
        let cut = 10.0 * sorted[n / 2];
        let kept: Vec<usize> = (0..n).filter(|&b| norms[b] <= cut).collect();
        assert_eq!(kept.len(), n - 3);
        let mut mean = vec![0.0f64; d];
        for &b in &kept {
            for j in 0..d {
                mean[j] += x[b * d + j] as f64 / kept.len() as f64;
            }
        }
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for &b in &kept {
            for j in 0..d {
                num += (x[b * d + j] as f64 - x_hat[b * d + j] as f64).powi(2);
                den += (x[b * d + j] as f64 - mean[j]).powi(2);
            }
        }
        let want = num / den;
        for batch in [n, 1000, 7] {
            let mut acc = Accumulator::new(d, 1);
            for (xs, hs) in x.chunks(batch * d).zip(x_hat.chunks(batch * d)) {
                acc.add(xs, hs, &Codes::from_rows(vec![vec![]; xs.len() / d]));
            }
            let m = acc.finish();
            assert_eq!(m.outlier_rows, 3);
            let got = m.fvu_without_outliers.unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "batch {batch}: {got} vs {want}"
            );
            // With the massive rows in, FVU is much smaller: they hold most of the variance.
            assert!(m.fvu < 0.2 * got, "{} vs {got}", m.fvu);
        }
    }

    fn rows() -> Vec<f32> {
        vec![1.0, 2.0, 0.0, -1.0, 3.0, 5.0, 4.0, 0.5, -2.0, 1.5, 2.5, 1.0]
    }

    #[test]
    fn predicting_the_mean_explains_nothing_and_x_everything() {
        let x = rows();
        let d = 3;
        let n = x.len() / d;
        let mut mean = vec![0.0f32; d];
        for r in x.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v / n as f32;
            }
        }
        let codes = Codes::from_rows(vec![vec![]; n]);
        let mut acc = Accumulator::new(d, 4);
        acc.add(&x, &mean.repeat(n), &codes);
        let m = acc.finish();
        assert!(
            m.explained_variance.abs() < 1e-6,
            "{}",
            m.explained_variance
        );
        let mut acc = Accumulator::new(d, 4);
        acc.add(&x, &x, &codes);
        let m = acc.finish();
        assert_eq!(m.fvu, 0.0);
        assert_eq!(m.explained_variance, 1.0);
        // Predicting zero is not "explaining" the variance about zero.
        let mut acc = Accumulator::new(d, 4);
        acc.add(&x, &vec![0.0; x.len()], &codes);
        let m = acc.finish();
        assert!(m.explained_variance < 0.0);
    }

    #[test]
    fn batching_does_not_change_the_result() {
        let x = rows();
        let d = 3;
        let xh: Vec<f32> = x.iter().map(|v| v * 0.9 + 0.1).collect();
        let codes = Codes::from_rows(vec![
            vec![(0, 1.0), (2, 0.5)],
            vec![(1, 2.0)],
            vec![],
            vec![(0, 0.1), (1, 0.1), (3, 0.2)],
        ]);
        let mut one = Accumulator::new(d, 4);
        one.add(&x, &xh, &codes);
        let mut two = Accumulator::new(d, 4);
        let c1 = Codes::from_rows(vec![vec![(0, 1.0), (2, 0.5)], vec![(1, 2.0)]]);
        let c2 = Codes::from_rows(vec![vec![], vec![(0, 0.1), (1, 0.1), (3, 0.2)]]);
        two.add(&x[..6], &xh[..6], &c1);
        two.add(&x[6..], &xh[6..], &c2);
        let (a, b) = (one.finish(), two.finish());
        assert!((a.fvu - b.fvu).abs() < 1e-12);
        assert_eq!(a.l0, 1.5);
        assert_eq!(a.l0, b.l0);
        assert_eq!(a.dead, 0.0);
        // every latent fires on ≥ 1 of 4 rows (> 10%): all dense
        assert_eq!(a.dense, 1.0);
    }

    #[test]
    fn ce_recovered_is_a_ratio_of_means() {
        assert_eq!(ce_loss_recovered(2.0, 2.0, 6.0), 1.0);
        assert_eq!(ce_loss_recovered(2.0, 6.0, 6.0), 0.0);
        assert!((ce_loss_recovered(2.0, 3.0, 6.0) - 0.75).abs() < 1e-12);
    }
}
