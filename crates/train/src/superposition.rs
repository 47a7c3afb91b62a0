//! Toy Models of Superposition (Elhage et al. 2022): `n` features squeezed into `m < n`
//! dimensions, `h = W x`, `x' = ReLU(Wᵀ h + b)` (or the linear `x' = Wᵀ h + b`), many
//! instances (one per sparsity, or per sparsity × importance) trained side by side.
//!
//! Data: feature `i` is 0 with probability `S` (the instance's sparsity), else uniform on
//! [0, 1]. Loss of an instance: the importance-weighted squared error averaged over the batch and
//! the features, `mean_{b,i} I_i (x_i − x'_i)²` (the paper's notebook); instances add. AdamW
//! (PyTorch semantics, no weight decay by default), `W` initialised Xavier-normal
//! (std √(2/(m+n))), `b` zero.
//!
//! Forward and backward are one hand-written pass over flat f32 buffers (see [`Kernel`]): eight
//! samples share each SIMD instruction (the batch is the vector lane), the data are generated
//! inside the pass (no batch buffer), and instances train in parallel, each running a chunk of
//! steps on its own. The data of step `t` of instance `k` come from a counter-based generator
//! keyed by (seed, k, t), so a run is reproducible bit for bit whatever the thread count, and
//! the AVX2 and portable kernels give identical results.

use interplab_core::rng::SplitMix;
use interplab_core::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, AdamWConfig};

/// What to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuperpositionConfig {
    /// Features.
    pub n: usize,
    /// Hidden dimensions.
    pub m: usize,
    /// Importance of feature i is `importance_decay^i` (unless `importances` is given).
    pub importance_decay: f64,
    /// One instance per sparsity S (probability that a feature is zero).
    pub sparsities: Vec<f64>,
    /// Per-instance importance vectors (`[instances][n]`), overriding `importance_decay`; empty
    /// for the decay. The phase diagram varies one feature's importance across instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub importances: Vec<Vec<f64>>,
    /// ReLU output (true) or linear output (false).
    pub relu: bool,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for SuperpositionConfig {
    /// The paper's first experiment: n = 20, m = 5, I_i = 0.7^i, seven sparsities, 10k steps.
    fn default() -> Self {
        SuperpositionConfig {
            n: 20,
            m: 5,
            importance_decay: 0.7,
            sparsities: vec![0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999],
            importances: Vec::new(),
            relu: true,
            steps: 10_000,
            batch: 1024,
            lr: 1e-3,
            seed: 0,
        }
    }
}

impl SuperpositionConfig {
    /// The paper's geometry experiment: n = 200, m = 20, constant importance, `count`
    /// sparsities with 1/(1−S) log-spaced from 1 to `max_inv_density` (both included).
    pub fn geometry(count: usize, max_inv_density: f64) -> SuperpositionConfig {
        SuperpositionConfig {
            n: 200,
            m: 20,
            importance_decay: 1.0,
            sparsities: log_spaced_sparsities(count, max_inv_density),
            ..Default::default()
        }
    }

    /// The 2-features-into-1-dimension phase diagram (n = 2, m = 1): for each (density,
    /// relative importance of feature 2) pair, density-major, `restarts` instances that differ
    /// only in their initialisation (the model has local minima; [`best_restarts`] picks the
    /// lowest expected loss). Feature 1's importance is 1.
    pub fn phase_diagram(
        densities: &[f64],
        ratios: &[f64],
        restarts: usize,
    ) -> SuperpositionConfig {
        let (mut sparsities, mut importances) = (Vec::new(), Vec::new());
        for &d in densities {
            for &r in ratios {
                for _ in 0..restarts.max(1) {
                    sparsities.push(1.0 - d);
                    importances.push(vec![1.0, r]);
                }
            }
        }
        SuperpositionConfig {
            n: 2,
            m: 1,
            importance_decay: 1.0,
            sparsities,
            importances,
            ..Default::default()
        }
    }

    /// Feature importances of instance `k`.
    pub fn importance(&self, k: usize) -> Vec<f64> {
        match self.importances.get(k) {
            Some(v) => v.clone(),
            None => (0..self.n)
                .map(|i| self.importance_decay.powi(i as i32))
                .collect(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.n == 0 || self.m == 0 || self.batch == 0 || self.sparsities.is_empty() {
            return Err(Error::Input(
                "n, m, batch and the sparsity list must be non-empty".into(),
            ));
        }
        if self.sparsities.iter().any(|s| !(0.0..1.0).contains(s)) {
            return Err(Error::Input("sparsities must be in [0, 1)".into()));
        }
        if self.n * self.batch.div_ceil(LANES) * LANES > u32::MAX as usize {
            return Err(Error::Input("batch × n is too large".into()));
        }
        if !self.importances.is_empty()
            && (self.importances.len() != self.sparsities.len()
                || self
                    .importances
                    .iter()
                    .any(|v| v.len() != self.n || v.iter().any(|x| !x.is_finite() || *x < 0.0)))
        {
            return Err(Error::Input(format!(
                "importances must be one vector of {} finite non-negative values per instance",
                self.n
            )));
        }
        Ok(())
    }
}

/// `count` values log-spaced from `lo` to `hi` (both included; `lo` alone when `count` is 1).
pub fn log_space(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    (0..count)
        .map(|i| {
            let f = if count > 1 {
                i as f64 / (count - 1) as f64
            } else {
                0.0
            };
            lo * (hi / lo).powf(f)
        })
        .collect()
}

/// `count` sparsities with 1/(1−S) log-spaced from 1 to `max_inv_density`.
pub fn log_spaced_sparsities(count: usize, max_inv_density: f64) -> Vec<f64> {
    log_space(1.0, max_inv_density, count)
        .into_iter()
        .map(|inv| 1.0 - 1.0 / inv)
        .collect()
}

/// One trained instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub sparsity: f64,
    /// `[W | b]`: `W` as `[m, n]` row-major (column `i` is feature i's direction `Wᵢ`), then
    /// the bias `[n]`. One buffer, so the optimiser updates it in place.
    params: Vec<f32>,
    /// Features `n` (the bias length).
    n: usize,
    opt: AdamW,
}

impl Instance {
    /// `W`, `[m, n]` row-major.
    pub fn w(&self) -> &[f32] {
        &self.params[..self.params.len() - self.n]
    }

    /// The output bias `b`, `[n]`.
    pub fn b(&self) -> &[f32] {
        &self.params[self.params.len() - self.n..]
    }
}

/// The batched model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToyModel {
    pub cfg: SuperpositionConfig,
    pub instances: Vec<Instance>,
    /// Steps taken.
    pub step: usize,
    /// Mean loss over instances, per step.
    pub loss_history: Vec<f64>,
}

/// Steps an instance runs on its own between progress reports.
const CHUNK: usize = 50;

impl ToyModel {
    /// A freshly initialised model.
    pub fn new(cfg: SuperpositionConfig) -> Result<ToyModel> {
        cfg.validate()?;
        let std = (2.0 / (cfg.m + cfg.n) as f64).sqrt();
        let opt = AdamWConfig {
            lr: cfg.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let instances = cfg
            .sparsities
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let mut rng = SplitMix::new(cfg.seed ^ (0xA11C_E000 + k as u64));
                Instance {
                    sparsity: s,
                    params: (0..cfg.m * cfg.n)
                        .map(|_| (rng.normal() * std) as f32)
                        .chain(std::iter::repeat_n(0.0, cfg.n))
                        .collect(),
                    n: cfg.n,
                    opt: AdamW::new(opt, cfg.m * cfg.n + cfg.n),
                }
            })
            .collect();
        Ok(ToyModel {
            cfg,
            instances,
            step: 0,
            loss_history: Vec::new(),
        })
    }

    /// Train `steps` more steps (up to `cfg.steps` in all) with the fastest kernel this CPU
    /// has, calling `progress(step, loss)` after each.
    pub fn train(&mut self, steps: usize, progress: &mut dyn FnMut(usize, f64)) {
        self.train_with(Kernel::detect(), steps, progress)
            .expect("the detected kernel is available");
    }

    /// [`ToyModel::train`] with a chosen kernel (an error if this CPU lacks it). Every kernel
    /// gives the same weights, bit for bit.
    pub fn train_with(
        &mut self,
        kernel: Kernel,
        steps: usize,
        progress: &mut dyn FnMut(usize, f64),
    ) -> Result<()> {
        if !kernel.available() {
            return Err(Error::Input(format!(
                "this CPU cannot run the {kernel:?} kernel"
            )));
        }
        let cfg = self.cfg.clone();
        let importance: Vec<Vec<f32>> = (0..self.instances.len())
            .map(|k| cfg.importance(k).iter().map(|&v| v as f32).collect())
            .collect();
        let end = (self.step + steps).min(cfg.steps);
        while self.step < end {
            let (t0, t1) = (self.step, (self.step + CHUNK).min(end));
            let losses: Vec<Vec<f64>> = self
                .instances
                .par_iter_mut()
                .enumerate()
                .map(|(k, inst)| {
                    run_steps(
                        kernel,
                        &cfg,
                        &importance[k],
                        inst,
                        k as u64,
                        t0 as u64,
                        t1 as u64,
                    )
                })
                .collect();
            for i in 0..t1 - t0 {
                let loss = losses.iter().map(|l| l[i]).sum::<f64>() / losses.len() as f64;
                self.loss_history.push(loss);
                self.step += 1;
                progress(self.step, loss);
            }
        }
        Ok(())
    }
}

/// Which implementation of the fused forward/backward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable: eight-lane arrays and `f32::mul_add`, the same operations in the same order as
    /// the SIMD kernel (so the same bits), on any CPU.
    Portable,
    /// x86-64 AVX2 + FMA intrinsics, chosen at run time when the CPU has them.
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Kernel {
        if Kernel::Avx2.available() {
            Kernel::Avx2
        } else {
            Kernel::Portable
        }
    }

    /// Whether this CPU runs the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 => false,
        }
    }
}

/// Samples processed side by side in SIMD lanes.
pub const LANES: usize = 8;

/// The per-step constants of one instance's pass.
struct Pass<'a> {
    relu: bool,
    n: usize,
    m: usize,
    /// Samples in the batch.
    bsz: usize,
    w: &'a [f32],
    b: &'a [f32],
    imp: &'a [f32],
    /// ∂loss/∂x'ᵢ = cᵢ (x'ᵢ − xᵢ): cᵢ = 2 Iᵢ / (batch · n).
    c: &'a [f32],
}

/// Where a block of eight samples comes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The counter-based generator: keys of the step, the keep threshold (a feature is
    /// non-zero when its 32 random bits are ≤ `keep_m1`), and 2 / (keep_m1 + 1).
    Random {
        k1: u32,
        k2: u32,
        keep_m1: u32,
        inv: f32,
    },
    /// Given data in lane layout, `[blocks][n][LANES]`.
    Given(&'a [f32]),
}

/// The keep threshold and value scale of a sparsity (see [`Source::Random`]).
fn keep_threshold(sparsity: f64) -> (u32, f32) {
    let keep = ((1.0 - sparsity) * 4_294_967_296.0)
        .round()
        .clamp(1.0, 4_294_967_296.0);
    ((keep - 1.0) as u32, (2.0 / keep) as f32)
}

/// The generator keys of step `t` of instance `k`.
fn step_keys(seed: u64, k: u64, t: u64) -> (u32, u32) {
    let r = SplitMix::new(
        seed.wrapping_mul(0x9E37_79B9)
            .wrapping_add(k << 40)
            .wrapping_add(t),
    )
    .next_u64();
    (r as u32, (r >> 32) as u32)
}

/// A 32-bit integer hash with low bias (C. Wellons' `lowbias32`), a bijection.
#[inline(always)]
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// The 32 random bits of element `e` of a step keyed (k1, k2): two rounds of the hash.
#[inline(always)]
fn random_bits(e: u32, k1: u32, k2: u32) -> u32 {
    lowbias32(lowbias32(e.wrapping_add(k1)) ^ k2)
}

/// One element of data from its random bits: 0, or (given it is kept) uniform on [0, 1] —
/// the kept bits are uniform below the threshold, so they give the value too.
#[inline(always)]
fn element(r: u32, keep_m1: u32, inv: f32) -> f32 {
    if r <= keep_m1 {
        ((r >> 1) as i32 as f32) * inv
    } else {
        0.0
    }
}

/// The batch of step `t` for instance `k` of a configuration, `[batch, n]` row-major (what the
/// training pass generates inside itself).
pub fn batch(cfg: &SuperpositionConfig, sparsity: f64, k: u64, t: u64) -> Vec<f32> {
    let (k1, k2) = step_keys(cfg.seed, k, t);
    let (keep_m1, inv) = keep_threshold(sparsity);
    let n = cfg.n;
    let mut x = vec![0.0; cfg.batch * n];
    for s in 0..cfg.batch {
        let (blk, l) = (s / LANES, s % LANES);
        for j in 0..n {
            let e = ((blk * n + j) * LANES + l) as u32;
            x[s * n + j] = element(random_bits(e, k1, k2), keep_m1, inv);
        }
    }
    x
}

/// Operations on eight f32 lanes (and the generator's u32 lanes), implemented by the portable
/// and the AVX2 kernels with the same rounding.
trait Simd: Copy {
    type V: Copy;
    fn zero(self) -> Self::V;
    fn splat(self, v: f32) -> Self::V;
    fn load_lanes(self, a: [f32; LANES]) -> Self::V;
    fn to_array(self, v: Self::V) -> [f32; LANES];
    /// `a · b + c`, rounded once.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `v` where `y > 0`, else 0.
    fn where_pos(self, y: Self::V, v: Self::V) -> Self::V;
    /// Elements `e0 .. e0 + 8` of the step's data ([`random_bits`], [`element`]).
    fn random(self, e0: u32, k1: u32, k2: u32, keep_m1: u32, inv: f32) -> Self::V;
}

#[derive(Clone, Copy)]
struct Portable;

impl Simd for Portable {
    type V = [f32; LANES];
    #[inline(always)]
    fn zero(self) -> Self::V {
        [0.0; LANES]
    }
    #[inline(always)]
    fn splat(self, v: f32) -> Self::V {
        [v; LANES]
    }
    #[inline(always)]
    fn load_lanes(self, a: [f32; LANES]) -> Self::V {
        a
    }
    #[inline(always)]
    fn to_array(self, v: Self::V) -> [f32; LANES] {
        v
    }
    #[inline(always)]
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l].mul_add(b[l], c[l]))
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l] + b[l])
    }
    #[inline(always)]
    fn sub(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l] - b[l])
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l] * b[l])
    }
    #[inline(always)]
    fn where_pos(self, y: Self::V, v: Self::V) -> Self::V {
        std::array::from_fn(|l| if y[l] > 0.0 { v[l] } else { 0.0 })
    }
    #[inline(always)]
    fn random(self, e0: u32, k1: u32, k2: u32, keep_m1: u32, inv: f32) -> Self::V {
        std::array::from_fn(|l| element(random_bits(e0 + l as u32, k1, k2), keep_m1, inv))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{Simd, LANES};
    use std::arch::x86_64::*;

    /// Only constructed after `is_x86_feature_detected!("avx2")` and `("fma")`.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2(());

    impl Avx2 {
        /// # Safety
        /// The CPU must have AVX2 and FMA.
        pub(super) unsafe fn new() -> Avx2 {
            Avx2(())
        }
    }

    // Safety of every method: an `Avx2` exists only on a CPU with AVX2 and FMA; the methods
    // are inlined into `#[target_feature(enable = "avx2,fma")]` functions.
    impl Simd for Avx2 {
        type V = __m256;
        #[inline(always)]
        fn zero(self) -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, v: f32) -> __m256 {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        fn load_lanes(self, a: [f32; LANES]) -> __m256 {
            unsafe { _mm256_loadu_ps(a.as_ptr()) }
        }
        #[inline(always)]
        fn to_array(self, v: __m256) -> [f32; LANES] {
            let mut a = [0.0; LANES];
            unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
            a
        }
        #[inline(always)]
        fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn where_pos(self, y: __m256, v: __m256) -> __m256 {
            unsafe { _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(y, _mm256_setzero_ps()), v) }
        }
        #[inline(always)]
        fn random(self, e0: u32, k1: u32, k2: u32, keep_m1: u32, inv: f32) -> __m256 {
            unsafe {
                #[inline(always)]
                unsafe fn lowbias(x: __m256i) -> __m256i {
                    let x = _mm256_xor_si256(x, _mm256_srli_epi32::<16>(x));
                    let x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb_352d));
                    let x = _mm256_xor_si256(x, _mm256_srli_epi32::<15>(x));
                    let x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x846c_a68bu32 as i32));
                    _mm256_xor_si256(x, _mm256_srli_epi32::<16>(x))
                }
                let e = _mm256_add_epi32(
                    _mm256_set1_epi32(e0.wrapping_add(k1) as i32),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                let r = lowbias(_mm256_xor_si256(lowbias(e), _mm256_set1_epi32(k2 as i32)));
                // r ≤ keep_m1 (unsigned) ⇔ not (r ^ 2³¹ > keep_m1 ^ 2³¹) (signed).
                let sign = _mm256_set1_epi32(i32::MIN);
                let drop = _mm256_cmpgt_epi32(
                    _mm256_xor_si256(r, sign),
                    _mm256_set1_epi32((keep_m1 ^ 0x8000_0000) as i32),
                );
                let v = _mm256_mul_ps(
                    _mm256_cvtepi32_ps(_mm256_srli_epi32::<1>(r)),
                    _mm256_set1_ps(inv),
                );
                _mm256_andnot_ps(_mm256_castsi256_ps(drop), v)
            }
        }
    }
}

/// Reusable buffers of one instance's pass (allocated once per chunk of steps).
struct Work<V> {
    x: Vec<V>,
    h: Vec<V>,
    dh: Vec<V>,
    d: Vec<V>,
    gw: Vec<V>,
    gb: Vec<V>,
}

impl<V: Copy> Work<V> {
    fn new(n: usize, m: usize, zero: V) -> Self {
        Work {
            x: vec![zero; n],
            h: vec![zero; m],
            dh: vec![zero; m],
            d: vec![zero; n],
            gw: vec![zero; m * n],
            gb: vec![zero; n],
        }
    }
}

/// `out[k] = Σ_j W[k][j] v[j]` for every row k, four rows at a time (four independent
/// accumulators sharing each load of `v[j]`), each sum taken in order of j.
#[inline(always)]
fn rows_times<S: Simd>(s: S, w: &[f32], n: usize, v: &[S::V], out: &mut [S::V]) {
    let m = out.len();
    let mut k = 0;
    while k + 4 <= m {
        let (w0, w1, w2, w3) = (
            &w[k * n..(k + 1) * n],
            &w[(k + 1) * n..(k + 2) * n],
            &w[(k + 2) * n..(k + 3) * n],
            &w[(k + 3) * n..(k + 4) * n],
        );
        let (mut a0, mut a1, mut a2, mut a3) = (s.zero(), s.zero(), s.zero(), s.zero());
        for j in 0..n {
            let vj = v[j];
            a0 = s.fma(s.splat(w0[j]), vj, a0);
            a1 = s.fma(s.splat(w1[j]), vj, a1);
            a2 = s.fma(s.splat(w2[j]), vj, a2);
            a3 = s.fma(s.splat(w3[j]), vj, a3);
        }
        out[k] = a0;
        out[k + 1] = a1;
        out[k + 2] = a2;
        out[k + 3] = a3;
        k += 4;
    }
    while k < m {
        let wk = &w[k * n..(k + 1) * n];
        let mut a = s.zero();
        for j in 0..n {
            a = s.fma(s.splat(wk[j]), v[j], a);
        }
        out[k] = a;
        k += 1;
    }
}

/// Loss and gradient of one instance on one batch, accumulated lane-wise in `ws.gw`, `ws.gb`
/// (zeroed here) and reduced into `grad` (`[W | b]`). Returns the loss.
#[inline(always)]
fn pass<S: Simd>(s: S, p: &Pass, src: Source, ws: &mut Work<S::V>, grad: &mut [f32]) -> f64 {
    let (n, m) = (p.n, p.m);
    ws.gw.fill(s.zero());
    ws.gb.fill(s.zero());
    let mut loss = s.zero();
    let blocks = p.bsz.div_ceil(LANES);
    for blk in 0..blocks {
        let live = (p.bsz - blk * LANES).min(LANES);
        let mask = (live < LANES)
            .then(|| s.load_lanes(std::array::from_fn(|l| if l < live { 1.0 } else { 0.0 })));
        // The block's data, x[j] = feature j of the eight samples.
        for j in 0..n {
            let e0 = ((blk * n + j) * LANES) as u32;
            let xj = match src {
                Source::Random {
                    k1,
                    k2,
                    keep_m1,
                    inv,
                } => s.random(e0, k1, k2, keep_m1, inv),
                Source::Given(x) => s.load_lanes(std::array::from_fn(|l| x[e0 as usize + l])),
            };
            ws.x[j] = match mask {
                Some(mk) => s.mul(xj, mk),
                None => xj,
            };
        }
        // h = W x
        rows_times(s, p.w, n, &ws.x, &mut ws.h);
        // y = Wᵀ h + b, the loss, and d = ∂loss/∂y.
        for j in 0..n {
            let mut y = s.splat(p.b[j]);
            for k in 0..m {
                y = s.fma(s.splat(p.w[k * n + j]), ws.h[k], y);
            }
            let out = if p.relu { s.where_pos(y, y) } else { y };
            let mut e = s.sub(out, ws.x[j]);
            if let Some(mk) = mask {
                e = s.mul(e, mk);
            }
            loss = s.fma(s.mul(s.splat(p.imp[j]), e), e, loss);
            let mut dj = s.mul(s.splat(p.c[j]), e);
            if p.relu {
                dj = s.where_pos(y, dj);
            }
            ws.d[j] = dj;
            ws.gb[j] = s.add(ws.gb[j], dj);
        }
        // dh = W d; ∂loss/∂W[k][j] += h[k] d[j] + dh[k] x[j]
        rows_times(s, p.w, n, &ws.d, &mut ws.dh);
        for k in 0..m {
            let (hk, dhk) = (ws.h[k], ws.dh[k]);
            for ((g, &dj), &xj) in ws.gw[k * n..(k + 1) * n].iter_mut().zip(&ws.d).zip(&ws.x) {
                *g = s.fma(dhk, xj, s.fma(hk, dj, *g));
            }
        }
    }
    for (g, v) in grad.iter_mut().zip(ws.gw.iter().chain(&ws.gb)) {
        *g = s.to_array(*v).iter().fold(0.0, |a, b| a + b);
    }
    let loss: f64 = s.to_array(loss).iter().map(|&v| v as f64).sum();
    loss / (p.bsz * n) as f64
}

/// Steps `t0..t1` of instance `k` with simd `s`: returns the losses.
#[inline(always)]
fn steps_with<S: Simd>(
    s: S,
    cfg: &SuperpositionConfig,
    imp: &[f32],
    inst: &mut Instance,
    k: u64,
    t0: u64,
    t1: u64,
) -> Vec<f64> {
    let (n, m) = (cfg.n, cfg.m);
    let scale = 2.0 / (cfg.batch * n) as f32;
    let c: Vec<f32> = imp.iter().map(|&i| scale * i).collect();
    let (keep_m1, inv) = keep_threshold(inst.sparsity);
    let mut ws = Work::new(n, m, s.zero());
    let mut grad = vec![0.0f32; m * n + n];
    let mut losses = Vec::with_capacity((t1 - t0) as usize);
    for t in t0..t1 {
        let (k1, k2) = step_keys(cfg.seed, k, t);
        let (w, b) = inst.params.split_at(m * n);
        let p = Pass {
            relu: cfg.relu,
            n,
            m,
            bsz: cfg.batch,
            w,
            b,
            imp,
            c: &c,
        };
        let src = Source::Random {
            k1,
            k2,
            keep_m1,
            inv,
        };
        losses.push(pass(s, &p, src, &mut ws, &mut grad));
        inst.opt.step(&mut inst.params, &grad);
    }
    losses
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn steps_avx2(
    cfg: &SuperpositionConfig,
    imp: &[f32],
    inst: &mut Instance,
    k: u64,
    t0: u64,
    t1: u64,
) -> Vec<f64> {
    // Safety: only called when `Kernel::Avx2.available()`.
    let s = unsafe { avx::Avx2::new() };
    steps_with(s, cfg, imp, inst, k, t0, t1)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn pass_avx2(p: &Pass, src: Source, grad: &mut [f32]) -> f64 {
    // Safety: only called when `Kernel::Avx2.available()`.
    let s = unsafe { avx::Avx2::new() };
    let mut ws = Work::new(p.n, p.m, s.zero());
    pass(s, p, src, &mut ws, grad)
}

fn run_steps(
    kernel: Kernel,
    cfg: &SuperpositionConfig,
    imp: &[f32],
    inst: &mut Instance,
    k: u64,
    t0: u64,
    t1: u64,
) -> Vec<f64> {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // Safety: callers check `kernel.available()`.
        Kernel::Avx2 => unsafe { steps_avx2(cfg, imp, inst, k, t0, t1) },
        _ => steps_with(Portable, cfg, imp, inst, k, t0, t1),
    }
}

/// Loss and gradient (`[W (m×n) | b (n)]`) of one instance on one batch `x` (`[batch, n]`
/// row-major), with the given kernel — the training pass on given data.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grad_with(
    kernel: Kernel,
    relu: bool,
    n: usize,
    m: usize,
    w: &[f32],
    b: &[f32],
    imp: &[f32],
    x: &[f32],
) -> Result<(f64, Vec<f32>)> {
    if !kernel.available() {
        return Err(Error::Input(format!(
            "this CPU cannot run the {kernel:?} kernel"
        )));
    }
    let bsz = x.len() / n;
    if bsz == 0 || x.len() != bsz * n || w.len() != m * n || b.len() != n || imp.len() != n {
        return Err(Error::Input("loss_and_grad: inconsistent shapes".into()));
    }
    // To lane layout, [blocks][n][LANES], padded with zero samples.
    let blocks = bsz.div_ceil(LANES);
    let mut xl = vec![0.0f32; blocks * n * LANES];
    for (smp, row) in x.chunks_exact(n).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            xl[((smp / LANES) * n + j) * LANES + smp % LANES] = v;
        }
    }
    let scale = 2.0 / (bsz * n) as f32;
    let c: Vec<f32> = imp.iter().map(|&i| scale * i).collect();
    let p = Pass {
        relu,
        n,
        m,
        bsz,
        w,
        b,
        imp,
        c: &c,
    };
    let mut grad = vec![0.0f32; m * n + n];
    let loss = match kernel {
        #[cfg(target_arch = "x86_64")]
        // Safety: checked above.
        Kernel::Avx2 => unsafe { pass_avx2(&p, Source::Given(&xl), &mut grad) },
        _ => {
            let mut ws = Work::new(n, m, Portable.zero());
            pass(Portable, &p, Source::Given(&xl), &mut ws, &mut grad)
        }
    };
    Ok((loss, grad))
}

/// [`loss_and_grad_with`] with the fastest kernel.
pub fn loss_and_grad(
    relu: bool,
    n: usize,
    m: usize,
    w: &[f32],
    b: &[f32],
    imp: &[f32],
    x: &[f32],
) -> (f64, Vec<f32>) {
    loss_and_grad_with(Kernel::detect(), relu, n, m, w, b, imp, x)
        .expect("consistent shapes and an available kernel")
}
/// Geometry of one trained instance.
#[derive(Debug, Clone, Serialize)]
pub struct Geometry {
    pub sparsity: f64,
    /// ‖W_i‖ per feature.
    pub norms: Vec<f64>,
    /// Σ_{j≠i} (Ŵ_i · W_j)² per feature.
    pub superposition: Vec<f64>,
    /// Features with ‖W_i‖ > 0.5.
    pub represented: usize,
    /// Dimensions per feature D* = m / ‖W‖²_F.
    pub dims_per_feature: f64,
    /// Per-feature D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)² (0 for a zero column).
    pub feature_dims: Vec<f64>,
    /// WᵀW, `[n][n]`.
    pub wtw: Vec<Vec<f64>>,
}

/// Measure an instance's geometry.
pub fn geometry(n: usize, m: usize, inst: &Instance) -> Geometry {
    let col = |i: usize| -> Vec<f64> { (0..m).map(|k| inst.w()[k * n + i] as f64).collect() };
    let cols: Vec<Vec<f64>> = (0..n).map(col).collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let wtw: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| dot(&cols[i], &cols[j])).collect())
        .collect();
    let norms: Vec<f64> = (0..n).map(|i| wtw[i][i].sqrt()).collect();
    let mut superposition = Vec::new();
    let mut feature_dims = Vec::new();
    for i in 0..n {
        if norms[i] < 1e-12 {
            superposition.push(0.0);
            feature_dims.push(0.0);
            continue;
        }
        let proj: Vec<f64> = (0..n).map(|j| (wtw[i][j] / norms[i]).powi(2)).collect();
        superposition.push(
            proj.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, v)| v)
                .sum(),
        );
        feature_dims.push(wtw[i][i] / proj.iter().sum::<f64>());
    }
    let frob2: f64 = (0..n).map(|i| wtw[i][i]).sum();
    Geometry {
        sparsity: inst.sparsity,
        represented: norms.iter().filter(|&&v| v > 0.5).count(),
        dims_per_feature: m as f64 / frob2,
        norms,
        superposition,
        feature_dims,
        wtw,
    }
}

/// The longest run of consecutive indices whose value lies in `[lo, hi]`, as `(first, last)`
/// (the earliest if several are as long); `None` if no value does.
pub fn longest_band(values: &[f64], lo: f64, hi: f64) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    let mut start = None;
    for (i, v) in values.iter().enumerate() {
        if (lo..=hi).contains(v) {
            let s = *start.get_or_insert(i);
            if best.is_none_or(|(a, b)| i - s > b - a) {
                best = Some((s, i));
            }
        } else {
            start = None;
        }
    }
    best
}

/// What the 2-features-into-1-dimension model did with feature 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairPhase {
    /// ‖W₂‖ ≤ 0.5: feature 2 is not represented.
    NotRepresented,
    /// Both ‖W₁‖, ‖W₂‖ > 0.5 and antipodal (cosine < −0.9): stored in superposition.
    Superposition,
    /// ‖W₂‖ > 0.5, ‖W₁‖ ≤ 0.5: feature 2 has the dimension alone.
    Dedicated,
    /// Both represented but not antipodal (not expected).
    Other,
}

/// Classify a trained two-feature instance (`n = 2`, any `m`) from its `W` with the thresholds
/// of [`PairPhase`].
pub fn classify_pair(m: usize, inst: &Instance) -> PairPhase {
    let w = inst.w();
    let col = |i: usize| -> Vec<f64> { (0..m).map(|k| w[k * 2 + i] as f64).collect() };
    let (a, b) = (col(0), col(1));
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (na, nb) = (norm(&a), norm(&b));
    if nb <= 0.5 {
        PairPhase::NotRepresented
    } else if na <= 0.5 {
        PairPhase::Dedicated
    } else {
        let cos = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>() / (na * nb);
        if cos < -0.9 {
            PairPhase::Superposition
        } else {
            PairPhase::Other
        }
    }
}

/// The expected loss of a two-feature instance (`n = 2`, any `m`) under its data distribution
/// (each feature non-zero with probability 1 − S, then uniform on [0, 1]), by the midpoint rule
/// on a `grid`-point (per axis) lattice over the active features; the mean over features, as
/// in training.
pub fn pair_expected_loss(m: usize, inst: &Instance, imp: &[f64], grid: usize) -> f64 {
    let (w, b) = (inst.w(), inst.b());
    let p = 1.0 - inst.sparsity;
    let loss_at = |x: [f64; 2]| -> f64 {
        let mut total = 0.0;
        let h: Vec<f64> = (0..m)
            .map(|k| w[k * 2] as f64 * x[0] + w[k * 2 + 1] as f64 * x[1])
            .collect();
        for i in 0..2 {
            let y: f64 = (0..m).map(|k| w[k * 2 + i] as f64 * h[k]).sum::<f64>() + b[i] as f64;
            total += imp[i] * (x[i] - y.max(0.0)).powi(2);
        }
        total / 2.0
    };
    let mid = |g: usize| (g as f64 + 0.5) / grid as f64;
    let none = loss_at([0.0, 0.0]);
    let one = |i: usize| -> f64 {
        (0..grid)
            .map(|g| {
                let mut x = [0.0; 2];
                x[i] = mid(g);
                loss_at(x)
            })
            .sum::<f64>()
            / grid as f64
    };
    let both = (0..grid * grid)
        .map(|g| loss_at([mid(g / grid), mid(g % grid)]))
        .sum::<f64>()
        / (grid * grid) as f64;
    (1.0 - p).powi(2) * none + p * (1.0 - p) * (one(0) + one(1)) + p * p * both
}

/// For a [`SuperpositionConfig::phase_diagram`] model, the index of the restart with the
/// lowest [`pair_expected_loss`] in each cell (cells in the config's order).
pub fn best_restarts(model: &ToyModel, restarts: usize) -> Vec<usize> {
    let r = restarts.max(1);
    (0..model.instances.len() / r)
        .map(|c| {
            let loss = |k: usize| {
                pair_expected_loss(
                    model.cfg.m,
                    &model.instances[k],
                    &model.cfg.importance(k),
                    64,
                )
            };
            (c * r..(c + 1) * r)
                .min_by(|&a, &b| loss(a).total_cmp(&loss(b)))
                .unwrap_or(c * r)
        })
        .collect()
}
