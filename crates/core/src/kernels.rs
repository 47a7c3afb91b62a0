//! Fast CPU kernels for the transformer's element-wise hot spots: activations, gated
//! activations, RMSNorm/LayerNorm (with TransformerLens' `hook_scale`), rotary embeddings,
//! softmax and the next-token cross-entropy.
//!
//! Candle's CPU unary ops are scalar and single-threaded. Each function here runs as a candle
//! custom op whose CPU forward splits the work over rayon's global pool (sized by
//! `RAYON_NUM_THREADS`) and whose inner loops auto-vectorise. LLVM does not vectorise calls to
//! `f32::exp`, so `exp` here is a branch-free polynomial, and the loops are compiled three
//! times: with AVX-512, with AVX2+FMA (the best the CPU has, chosen at run time) and portable.
//! The two x86 builds give the same bits: the same fused multiply-adds, and every reduction
//! in [`LANES`] explicit lanes whatever the vector width.
//!
//! Every op has a backward pass, so `Tensor::backward` gives correct gradients (unlike candle-nn's
//! fused softmax and norms). Inputs that are not contiguous f32 tensors on the CPU go through the
//! equivalent composed candle ops instead, so callers never need to care.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// SiLU (swish): `x · σ(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    activation::<Silu>(x)
}

/// GELU, tanh approximation (HF `gelu_new` / `gelu_pytorch_tanh`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    activation::<GeluTanh>(x)
}

/// Exact GELU: `x · Φ(x)` (HF `gelu`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    activation::<GeluErf>(x)
}

/// Gated SiLU, `silu(gate) · up`, in one pass (Llama's MLP).
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gated::<Silu>(gate, up)
}

/// Gated tanh-GELU, `gelu_tanh(gate) · up`, in one pass (Gemma's MLP).
pub fn gelu_tanh_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gated::<GeluTanh>(gate, up)
}

/// TransformerLens' RMSNorm over the last dim: returns `(x / scale · weight, scale)` with
/// `scale = sqrt(mean(x²) + eps)` of shape `[..., 1]` (the `hook_scale` activation).
///
/// Both outputs are computed from `x` and differentiable; the first does not read the second,
/// so a hook that replaces the scale needs the composed form (`x / scale · weight`) instead.
pub fn rms_norm(x: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<(Tensor, Tensor)> {
    norm(NormKind::Rms, x, weight, None, eps)
}

/// TransformerLens' LayerNorm over the last dim: returns `((x - mean) / scale · weight + bias,
/// scale)` with `scale = sqrt(var + eps)` (biased variance) of shape `[..., 1]`. As for
/// [`rms_norm`], the first output does not read the second.
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    norm(NormKind::Layer, x, weight, bias, eps)
}

/// Softmax over the last dim. A row that is entirely `-inf` gives NaN, as in PyTorch.
///
/// candle-nn's fused `softmax_last_dim` is parallel but calls scalar `exp` (4-5× slower on
/// attention-sized inputs) and has no backward; this one has both.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fast(&[x]) && x.rank() > 0 && x.dim(D::Minus1)? > 0 {
        x.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// Cross-entropy of each row of `logits` `[n, v]` against `targets` `[n]` (u32):
/// `logsumexp(logits[i]) − logits[i, targets[i]]`, `[n]` in f32; a row whose target is
/// [`NO_TARGET`] gives 0 and no gradient. One pass over each row forward (max, then the sum of
/// `exp(x − max)` in 16 f32 lanes) and one backward, which writes
/// `g[i] · (softmax(logits[i]) − onehot(targets[i]))` straight into the gradient, instead of
/// the chain of vocabulary-wide temporaries a composed log-softmax and gather build and
/// backpropagate through. Inputs off the fast path go through those composed ops.
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    if targets.dims1()? != n {
        bail!(
            "cross-entropy: {n} rows of logits but {} targets",
            targets.elem_count()
        );
    }
    let targets = targets.to_dtype(DType::U32)?;
    if fast(&[logits]) && v > 0 && targets.device().is_cpu() {
        return logits.apply_op2(&targets.contiguous()?, CrossEntropy);
    }
    let t: Vec<u32> = targets.to_vec1()?;
    let keep: Vec<f32> = t
        .iter()
        .map(|&t| f32::from(u8::from(t != NO_TARGET)))
        .collect();
    let safe: Vec<u32> = t
        .iter()
        .map(|&t| if t == NO_TARGET { 0 } else { t })
        .collect();
    let safe = Tensor::from_vec(safe, n, logits.device())?;
    let keep = Tensor::from_vec(keep, n, logits.device())?.to_dtype(logits.dtype())?;
    let lp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = lp.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?;
    (picked * keep)?.neg()
}

/// The target of a row that counts for nothing in [`cross_entropy_rows`].
pub const NO_TARGET: u32 = u32::MAX;

/// Whether every tensor can take the custom-op path (contiguous f32 on the CPU).
fn fast(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
}

fn activation<A: Activation>(x: &Tensor) -> Result<Tensor> {
    if fast(&[x]) {
        x.apply_op1(Act::<A>::default())
    } else {
        A::composed(x)
    }
}

fn gated<A: Activation>(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if fast(&[gate, up]) && gate.shape() == up.shape() {
        gate.apply_op2(up, ActMul::<A>::default())
    } else {
        A::composed(gate)? * up
    }
}

fn norm(
    kind: NormKind,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let d = x.dim(D::Minus1)?;
    for (what, p) in [("weight", weight), ("bias", bias)] {
        if let Some(p) = p {
            if p.dims() != [d] {
                bail!(
                    "{}: {what} has shape {:?}, expected [{d}]",
                    kind.name(),
                    p.dims()
                );
            }
        }
    }
    let mut all = vec![x];
    all.extend(weight);
    all.extend(bias);
    if !fast(&all) || d == 0 {
        return norm_composed(kind, x, weight, bias, eps);
    }
    let eps = eps as f32;
    let scale = x.apply_op1(NormScale { kind, eps })?;
    let op = Norm {
        kind,
        eps,
        weight: weight.is_some(),
        bias: bias.is_some(),
    };
    let out = match (weight, bias) {
        (None, None) => x.apply_op1(op)?,
        (Some(p), None) | (None, Some(p)) => x.apply_op2(p, op)?,
        (Some(w), Some(b)) => x.apply_op3(w, b, op)?,
    };
    Ok((out, scale))
}

/// The same norm from elementary candle ops, whose gradients candle gets right.
fn norm_composed(
    kind: NormKind,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let xc = match kind {
        NormKind::Rms => x.clone(),
        NormKind::Layer => x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?,
    };
    let scale = (xc.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    let mut out = xc.broadcast_div(&scale)?;
    if let Some(w) = weight {
        out = out.broadcast_mul(w)?;
    }
    if let Some(b) = bias {
        out = out.broadcast_add(b)?;
    }
    Ok((out, scale))
}

// ---------------------------------------------------------------------------------------------
// Scalar math, written so that a loop over it vectorises: no calls, no branches (only selects).
// ---------------------------------------------------------------------------------------------

/// How a kernel computes `a·b + c`: one fused instruction where the CPU has FMA, else two.
/// (`f32::mul_add` without hardware FMA is a slow libm call, so the portable build avoids it.)
trait Fma {
    fn fma(a: f32, b: f32, c: f32) -> f32;
}

struct Fused;
impl Fma for Fused {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
struct Unfused;
impl Fma for Unfused {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// The variant for CPUs without the AVX2+FMA path: NEON always has FMA.
#[cfg(target_arch = "aarch64")]
type Portable = Fused;
#[cfg(not(target_arch = "aarch64"))]
type Portable = Unfused;

/// `c[0] + c[1]·x + … + c[N-1]·x^(N-1)` by Horner's rule.
#[inline(always)]
fn poly<F: Fma, const N: usize>(x: f32, c: &[f32; N]) -> f32 {
    let mut acc = c[N - 1];
    for i in (0..N - 1).rev() {
        acc = F::fma(acc, x, c[i]);
    }
    acc
}

const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer held in the low bits
#[allow(clippy::excessive_precision)] // exactly representable
const LN2_HI: f32 = 0.693_145_751_953_125; // few mantissa bits, so k·LN2_HI is exact
const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 − LN2_HI

/// e^r on |r| ≤ ln2/2: the degree-6 Chebyshev interpolant (relative error 3.9e-9 in exact
/// arithmetic; rounding to f32 dominates).
#[allow(clippy::excessive_precision)]
const EXP_POLY: [f32; 7] = [
    1.0,
    1.000_000_04,
    0.500_000_005,
    0.166_664_155,
    0.041_666_353,
    0.008_375_126_4,
    0.001_394_110_8,
];

/// e^x to about 1 ulp: x = k·ln2 + r, e^x = 2^k·e^r. Overflows to +inf, underflows to 0
/// (through the subnormals), NaN in gives NaN out.
#[inline(always)]
fn exp<F: Fma>(x: f32) -> f32 {
    // Past these bounds e^x is inf or 0 anyway; clamping keeps k in [-150, 129]. NaN passes.
    let x = x.clamp(-104.0, 89.0);
    let t = F::fma(x, std::f32::consts::LOG2_E, ROUND);
    let k = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let kf = t - ROUND;
    let r = F::fma(kf, -LN2_HI, x);
    let r = F::fma(kf, -LN2_LO, r);
    let p = poly::<F, 7>(r, &EXP_POLY);
    // 2^k does not fit one f32 exponent over that range, so it is applied as two factors.
    let k1 = k >> 1;
    p * pow2(k1) * pow2(k.wrapping_sub(k1))
}

/// 2^k for k in [-126, 127], built in the exponent field.
#[inline(always)]
fn pow2(k: i32) -> f32 {
    f32::from_bits((k.wrapping_add(127) as u32) << 23)
}

/// σ(y) and 1 − σ(y), each without cancellation, from e^(−|y|) which cannot overflow.
#[inline(always)]
fn sigmoid_pair<F: Fma>(y: f32) -> (f32, f32) {
    let e = exp::<F>(-y.abs());
    let big = 1.0 / (1.0 + e); // σ(|y|)
    let small = e * big; // σ(−|y|)
    if y >= 0.0 {
        (big, small)
    } else {
        (small, big)
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// gelu_tanh(x) = x·σ(2u), u = √(2/π)(x + 0.044715x³): so 2u = x·(K0 + K1·x²).
const GELU_K0: f32 = (2.0 * SQRT_2_OVER_PI) as f32;
const GELU_K1: f32 = (2.0 * SQRT_2_OVER_PI * 0.044715) as f32;

/// erfc(z) = t·exp(P(u) − z²) with t = 1/(1 + z/2), u = ERFC_U_SCALE·t + ERFC_U_SHIFT. P is the
/// degree-9 Chebyshev interpolant of ln(erfc(z)/t) + z² over z ∈ [0, 14.2] (mapped to u ∈
/// [-1, 1]); relative error of erfc 9e-8 with these f32 coefficients. Fitted for this file.
#[allow(clippy::excessive_precision)]
const ERFC_U_SCALE: f32 = 2.281_690_1;
#[allow(clippy::excessive_precision)]
const ERFC_U_SHIFT: f32 = -1.281_690_1;
#[allow(clippy::excessive_precision)]
const ERFC_POLY: [f32; 10] = [
    -0.588_120_47,
    0.597_911_86,
    0.022_471_171,
    -0.033_927_461,
    -0.002_493_885,
    0.004_843_205_5,
    -2.134_527_3e-5,
    -8.263_438_8e-4,
    6.091_441_5e-5,
    1.024_304_4e-4,
];
/// 1/√(2π).
const INV_SQRT_2PI: f32 =
    (std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 * 0.5) as f32;

/// Φ(x), the standard normal CDF, with small relative error in both tails.
#[inline(always)]
fn normal_cdf<F: Fma>(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / F::fma(0.5, z, 1.0);
    let p = poly::<F, 10>(F::fma(t, ERFC_U_SCALE, ERFC_U_SHIFT), &ERFC_POLY);
    // z² = x²/2 goes inside the fma so that it is not rounded on its own.
    let half_erfc = 0.5 * t * exp::<F>(F::fma(-0.5 * x, x, p));
    if x >= 0.0 {
        1.0 - half_erfc
    } else {
        half_erfc
    }
}

/// An activation as scalar value and derivative, plus its composed-candle fallback.
trait Activation: Send + Sync + 'static {
    const NAME: &'static str;
    const GRAD_NAME: &'static str;
    const MUL_NAME: &'static str;
    const MUL_GRAD_NAME: &'static str;
    fn value<F: Fma>(x: f32) -> f32;
    fn deriv<F: Fma>(x: f32) -> f32;
    fn composed(x: &Tensor) -> Result<Tensor>;
}

struct Silu;
impl Activation for Silu {
    const NAME: &'static str = "interplab-silu";
    const GRAD_NAME: &'static str = "interplab-silu-grad";
    const MUL_NAME: &'static str = "interplab-silu-mul";
    const MUL_GRAD_NAME: &'static str = "interplab-silu-mul-grad";

    #[inline(always)]
    fn value<F: Fma>(x: f32) -> f32 {
        // Below -120 the result rounds to -0; the select also makes silu(-inf) = -0, not NaN.
        let (s, _) = sigmoid_pair::<F>(x);
        if x < -120.0 {
            -0.0
        } else {
            x * s
        }
    }

    #[inline(always)]
    fn deriv<F: Fma>(x: f32) -> f32 {
        // σ(x)·(1 + x·(1 − σ(x))); outside ±120 it is exactly 0 or 1 in f32, and the clamp keeps
        // ±inf from making inf·0.
        let x = x.clamp(-120.0, 120.0);
        let (s, sc) = sigmoid_pair::<F>(x);
        s * F::fma(x, sc, 1.0)
    }

    fn composed(x: &Tensor) -> Result<Tensor> {
        x.silu()
    }
}

struct GeluTanh;
impl Activation for GeluTanh {
    const NAME: &'static str = "interplab-gelu-tanh";
    const GRAD_NAME: &'static str = "interplab-gelu-tanh-grad";
    const MUL_NAME: &'static str = "interplab-gelu-tanh-mul";
    const MUL_GRAD_NAME: &'static str = "interplab-gelu-tanh-mul-grad";

    #[inline(always)]
    fn value<F: Fma>(x: f32) -> f32 {
        // 0.5·x·(1 + tanh u) = x·σ(2u), which needs no tanh and has no cancellation for x < 0.
        let (s, _) = sigmoid_pair::<F>(x * F::fma(GELU_K1, x * x, GELU_K0));
        if x < -20.0 {
            -0.0
        } else {
            x * s
        }
    }

    #[inline(always)]
    fn deriv<F: Fma>(x: f32) -> f32 {
        // σ(2u) + x·σ(2u)(1 − σ(2u))·(2u)'; exactly 0 or 1 in f32 outside ±20.
        let x = x.clamp(-20.0, 20.0);
        let x2 = x * x;
        let (s, sc) = sigmoid_pair::<F>(x * F::fma(GELU_K1, x2, GELU_K0));
        let dy = F::fma(3.0 * GELU_K1, x2, GELU_K0);
        F::fma(x * s * sc, dy, s)
    }

    fn composed(x: &Tensor) -> Result<Tensor> {
        x.gelu()
    }
}

struct GeluErf;
impl Activation for GeluErf {
    const NAME: &'static str = "interplab-gelu-erf";
    const GRAD_NAME: &'static str = "interplab-gelu-erf-grad";
    const MUL_NAME: &'static str = "interplab-gelu-erf-mul";
    const MUL_GRAD_NAME: &'static str = "interplab-gelu-erf-mul-grad";

    #[inline(always)]
    fn value<F: Fma>(x: f32) -> f32 {
        let phi = normal_cdf::<F>(x);
        if x < -20.0 {
            -0.0
        } else {
            x * phi
        }
    }

    #[inline(always)]
    fn deriv<F: Fma>(x: f32) -> f32 {
        // Φ(x) + x·φ(x); exactly 0 or 1 in f32 outside ±20.
        let x = x.clamp(-20.0, 20.0);
        let density = INV_SQRT_2PI * exp::<F>(-0.5 * x * x);
        F::fma(x, density, normal_cdf::<F>(x))
    }

    fn composed(x: &Tensor) -> Result<Tensor> {
        x.gelu_erf()
    }
}

// ---------------------------------------------------------------------------------------------
// Running a kernel: split the output over rayon, pick the instruction set per chunk.
// ---------------------------------------------------------------------------------------------

/// Work that fills any slice of a flat f32 output, generic over how `a·b + c` is computed.
trait Job: Sync {
    /// Fills `out`, the part of the output that starts at element `start`.
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2_fma<J: Job>(job: &J, start: usize, out: &mut [MaybeUninit<f32>]) {
    job.run::<Fused>(start, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn run_avx512<J: Job>(job: &J, start: usize, out: &mut [MaybeUninit<f32>]) {
    job.run::<Fused>(start, out)
}

fn run_best<J: Job>(job: &J, start: usize, out: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vl") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { run_avx512(job, start, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { run_avx2_fma(job, start, out) };
    }
    job.run::<Portable>(start, out)
}

/// Elements per rayon task: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 14;

/// Runs `job` over an output of `len` elements in tasks of `chunk` elements.
fn par_run<J: Job>(job: &J, len: usize, chunk: usize) -> Vec<f32> {
    // Not zero-filled first: on reused heap memory that memset would cost ~15% of a fast op.
    let mut out = Vec::with_capacity(len);
    let buf = &mut out.spare_capacity_mut()[..len];
    if len <= chunk {
        run_best(job, 0, buf);
    } else {
        buf.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, o)| run_best(job, i * chunk, o));
    }
    // SAFETY: every job writes every element of the slice it is given.
    unsafe { out.set_len(len) };
    out
}

/// `s` as initialised floats.
///
/// # Safety
/// Every element of `s` has been written.
unsafe fn assume_init(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and the caller guarantees initialisation.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Runs a row-wise `job` (`out_width` outputs per row of `in_width` inputs), whole rows per task.
fn par_rows<J: Job>(job: &J, rows: usize, in_width: usize, out_width: usize) -> Vec<f32> {
    let rows_per_task = (CHUNK / in_width.max(1)).max(1);
    par_run(job, rows * out_width, rows_per_task * out_width)
}

/// Folds `step` over `x` in LANES independent accumulators, so that the loop vectorises.
const LANES: usize = 16;

#[inline(always)]
fn lanes1(x: &[f32], init: f32, step: impl Fn(f32, f32) -> f32) -> [f32; LANES] {
    let mut acc = [init; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        let c: &[f32; LANES] = c.try_into().unwrap();
        for j in 0..LANES {
            acc[j] = step(acc[j], c[j]);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = step(*a, v);
    }
    acc
}

#[inline(always)]
fn lanes2(a: &[f32], b: &[f32], step: impl Fn(f32, f32, f32) -> f32) -> [f32; LANES] {
    let mut acc = [0.0; LANES];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let x: &[f32; LANES] = x.try_into().unwrap();
        let y: &[f32; LANES] = y.try_into().unwrap();
        for j in 0..LANES {
            acc[j] = step(acc[j], x[j], y[j]);
        }
    }
    for ((s, &x), &y) in acc.iter_mut().zip(ca.remainder()).zip(cb.remainder()) {
        *s = step(*s, x, y);
    }
    acc
}

#[inline(always)]
fn total(acc: [f32; LANES]) -> f32 {
    acc.iter().sum()
}

/// The contiguous f32 data behind a custom op's argument.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("{op}: expects a contiguous f32 tensor"),
    }
}

fn same_shape(op: &str, a: &Layout, b: &Layout) -> Result<()> {
    if a.shape() != b.shape() {
        bail!("{op}: shape mismatch {:?} vs {:?}", a.shape(), b.shape());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Element-wise ops: activation, its gradient, gated activation, its gate gradient.
// ---------------------------------------------------------------------------------------------

/// `act(x)`.
struct Act<A>(PhantomData<fn() -> A>);
/// `g · act'(x)`, args (x, g).
struct ActGrad<A>(PhantomData<fn() -> A>);
/// `act(a) · b`, args (gate, up).
struct ActMul<A>(PhantomData<fn() -> A>);
/// `g · up · act'(gate)`, args (gate, up, g).
struct ActMulGrad<A>(PhantomData<fn() -> A>);

macro_rules! impl_default {
    ($($t:ident),*) => {$(
        impl<A> Default for $t<A> {
            fn default() -> Self {
                Self(PhantomData)
            }
        }
    )*};
}
impl_default!(Act, ActGrad, ActMul, ActMulGrad);

struct ActJob<'a, A> {
    x: &'a [f32],
    act: PhantomData<fn() -> A>,
}
impl<A: Activation> Job for ActJob<'_, A> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let x = &self.x[start..start + out.len()];
        for (o, &x) in out.iter_mut().zip(x) {
            o.write(A::value::<F>(x));
        }
    }
}

struct ActGradJob<'a, A> {
    x: &'a [f32],
    g: &'a [f32],
    act: PhantomData<fn() -> A>,
}
impl<A: Activation> Job for ActGradJob<'_, A> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let r = start..start + out.len();
        for ((o, &x), &g) in out.iter_mut().zip(&self.x[r.clone()]).zip(&self.g[r]) {
            o.write(g * A::deriv::<F>(x));
        }
    }
}

struct ActMulJob<'a, A> {
    gate: &'a [f32],
    up: &'a [f32],
    act: PhantomData<fn() -> A>,
}
impl<A: Activation> Job for ActMulJob<'_, A> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let r = start..start + out.len();
        for ((o, &a), &b) in out.iter_mut().zip(&self.gate[r.clone()]).zip(&self.up[r]) {
            o.write(A::value::<F>(a) * b);
        }
    }
}

struct ActMulGradJob<'a, A> {
    gate: &'a [f32],
    up: &'a [f32],
    g: &'a [f32],
    act: PhantomData<fn() -> A>,
}
impl<A: Activation> Job for ActMulGradJob<'_, A> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let r = start..start + out.len();
        let args = self.gate[r.clone()].iter().zip(&self.up[r.clone()]);
        for ((o, (&a, &b)), &g) in out.iter_mut().zip(args).zip(&self.g[r]) {
            o.write(g * b * A::deriv::<F>(a));
        }
    }
}

impl<A: Activation> CustomOp1 for Act<A> {
    fn name(&self) -> &'static str {
        A::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, A::NAME)?;
        let job = ActJob::<A> {
            x,
            act: PhantomData,
        };
        let out = par_run(&job, x.len(), CHUNK);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let g = g.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(&g, &ActGrad::<A>::default())?))
    }
}

impl<A: Activation> CustomOp2 for ActGrad<A> {
    fn name(&self) -> &'static str {
        A::GRAD_NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(A::GRAD_NAME, l1, l2)?;
        let job = ActGradJob::<A> {
            x: f32_slice(s1, l1, A::GRAD_NAME)?,
            g: f32_slice(s2, l2, A::GRAD_NAME)?,
            act: PhantomData,
        };
        let out = par_run(&job, job.x.len(), CHUNK);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

impl<A: Activation> CustomOp2 for ActMul<A> {
    fn name(&self) -> &'static str {
        A::MUL_NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(A::MUL_NAME, l1, l2)?;
        let job = ActMulJob::<A> {
            gate: f32_slice(s1, l1, A::MUL_NAME)?,
            up: f32_slice(s2, l2, A::MUL_NAME)?,
            act: PhantomData,
        };
        let out = par_run(&job, job.gate.len(), CHUNK);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let d_gate = gate.apply_op3_no_bwd(up, &g, &ActMulGrad::<A>::default())?;
        let d_up = gate.apply_op2_no_bwd(&g, &ActMul::<A>::default())?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

impl<A: Activation> CustomOp3 for ActMulGrad<A> {
    fn name(&self) -> &'static str {
        A::MUL_GRAD_NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(A::MUL_GRAD_NAME, l1, l2)?;
        same_shape(A::MUL_GRAD_NAME, l1, l3)?;
        let job = ActMulGradJob::<A> {
            gate: f32_slice(s1, l1, A::MUL_GRAD_NAME)?,
            up: f32_slice(s2, l2, A::MUL_GRAD_NAME)?,
            g: f32_slice(s3, l3, A::MUL_GRAD_NAME)?,
            act: PhantomData,
        };
        let out = par_run(&job, job.gate.len(), CHUNK);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Norms. The normalised output and the scale are two ops, each with its own backward, so a loss
// that uses either (or both) gets the right gradient.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum NormKind {
    Rms,
    Layer,
}

impl NormKind {
    fn name(self) -> &'static str {
        match self {
            NormKind::Rms => "interplab-rms-norm",
            NormKind::Layer => "interplab-layer-norm",
        }
    }
}

/// A row's mean (0 for RMSNorm) and scale `sqrt(mean((x − mean)²) + eps)`.
#[inline(always)]
fn row_stats<F: Fma>(kind: NormKind, eps: f32, x: &[f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = match kind {
        NormKind::Rms => 0.0,
        NormKind::Layer => total(lanes1(x, 0.0, |a, v| a + v)) / n,
    };
    let ss = total(lanes1(x, 0.0, |a, v| F::fma(v - mean, v - mean, a)));
    (mean, (ss / n + eps).sqrt())
}

/// The normalised output; args x, then weight if `weight`, then bias if `bias`.
#[derive(Clone, Copy)]
struct Norm {
    kind: NormKind,
    eps: f32,
    weight: bool,
    bias: bool,
}

/// The per-row scale, shape `[..., 1]`.
struct NormScale {
    kind: NormKind,
    eps: f32,
}

/// d loss / d x of the normalised output; args (x, g) or (x, g, weight).
struct NormGrad {
    kind: NormKind,
    eps: f32,
}

struct NormJob<'a> {
    kind: NormKind,
    eps: f32,
    d: usize,
    x: &'a [f32],
    w: Option<&'a [f32]>,
    b: Option<&'a [f32]>,
}
impl Job for NormJob<'_> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let d = self.d;
        let x = &self.x[start..start + out.len()];
        for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let (mean, scale) = row_stats::<F>(self.kind, self.eps, x);
            let inv = 1.0 / scale;
            let xs = o.iter_mut().zip(x);
            match (self.w, self.b) {
                (None, None) => xs.for_each(|(o, &x)| {
                    o.write((x - mean) * inv);
                }),
                (Some(w), None) => xs.zip(w).for_each(|((o, &x), &w)| {
                    o.write((x - mean) * inv * w);
                }),
                (None, Some(b)) => xs.zip(b).for_each(|((o, &x), &b)| {
                    o.write(F::fma(x - mean, inv, b));
                }),
                (Some(w), Some(b)) => xs.zip(w).zip(b).for_each(|(((o, &x), &w), &b)| {
                    o.write(F::fma((x - mean) * inv, w, b));
                }),
            }
        }
    }
}

struct NormScaleJob<'a> {
    kind: NormKind,
    eps: f32,
    d: usize,
    x: &'a [f32],
}
impl Job for NormScaleJob<'_> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let x = &self.x[start * self.d..(start + out.len()) * self.d];
        for (o, x) in out.iter_mut().zip(x.chunks_exact(self.d)) {
            o.write(row_stats::<F>(self.kind, self.eps, x).1);
        }
    }
}

struct NormGradJob<'a> {
    kind: NormKind,
    eps: f32,
    d: usize,
    x: &'a [f32],
    g: &'a [f32],
    w: Option<&'a [f32]>,
}
impl Job for NormGradJob<'_> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let d = self.d;
        let n = d as f32;
        let r = start..start + out.len();
        let rows = out
            .chunks_exact_mut(d)
            .zip(self.x[r.clone()].chunks_exact(d))
            .zip(self.g[r].chunks_exact(d));
        for ((o, x), g) in rows {
            // With n = (x − mean)/scale and gw = g·w:
            // dx = (gw − mean(gw) − n·mean(gw·n)) / scale (no mean(gw) term for RMSNorm).
            match self.w {
                Some(w) => o.iter_mut().zip(g).zip(w).for_each(|((o, &g), &w)| {
                    o.write(g * w);
                }),
                None => o.iter_mut().zip(g).for_each(|(o, &g)| {
                    o.write(g);
                }),
            }
            // SAFETY: the match above wrote every element.
            let o = unsafe { assume_init(o) };
            let (mean, scale) = row_stats::<F>(self.kind, self.eps, x);
            let inv = 1.0 / scale;
            let gw_mean = match self.kind {
                NormKind::Rms => 0.0,
                NormKind::Layer => total(lanes1(o, 0.0, |a, v| a + v)) / n,
            };
            let dot = total(lanes2(o, x, |a, gw, x| F::fma(gw, x - mean, a)));
            let c = inv * inv * inv * dot / n;
            for (o, &x) in o.iter_mut().zip(x) {
                *o = F::fma(inv, *o - gw_mean, -c * (x - mean));
            }
        }
    }
}

impl Norm {
    fn forward(
        &self,
        x: &[f32],
        shape: &Shape,
        w: Option<&[f32]>,
        b: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let d = shape.dims().last().copied().unwrap_or(1);
        if d == 0 {
            bail!("{}: empty last dim", self.kind.name());
        }
        let job = NormJob {
            kind: self.kind,
            eps: self.eps,
            d,
            x,
            w,
            b,
        };
        let out = par_rows(&job, x.len() / d, d, d);
        Ok((CpuStorage::F32(out), shape.clone()))
    }

    /// Gradients w.r.t. x, weight and bias (the latter two when the op has them).
    fn grads(
        &self,
        x: &Tensor,
        w: Option<&Tensor>,
        g: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let op = NormGrad {
            kind: self.kind,
            eps: self.eps,
        };
        let dx = match w {
            Some(w) => x.apply_op3_no_bwd(&g, w, &op)?,
            None => x.apply_op2_no_bwd(&g, &op)?,
        };
        // Weight and bias gradients sum over every row: Σ g·normalized and Σ g.
        let dw = if self.weight {
            let plain = Norm {
                weight: false,
                bias: false,
                ..*self
            };
            let normalized = x.apply_op1_no_bwd(&plain)?;
            Some(normalized.apply_op2_no_bwd(&g, &ColumnSum)?)
        } else {
            None
        };
        let db = if self.bias {
            Some(g.apply_op1_no_bwd(&ColumnSum)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

impl CustomOp1 for Norm {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(f32_slice(s, l, self.kind.name())?, l.shape(), None, None)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.grads(x, None, g)?.0))
    }
}

impl CustomOp2 for Norm {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.kind.name())?;
        let p = Some(f32_slice(s2, l2, self.kind.name())?);
        let (w, b) = if self.weight { (p, None) } else { (None, p) };
        self.forward(x, l1.shape(), w, b)
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, self.weight.then_some(p), g)?;
        Ok((Some(dx), if self.weight { dw } else { db }))
    }
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.kind.name())?;
        let w = f32_slice(s2, l2, self.kind.name())?;
        let b = f32_slice(s3, l3, self.kind.name())?;
        self.forward(x, l1.shape(), Some(w), Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, Some(w), g)?;
        Ok((Some(dx), dw, db))
    }
}

impl CustomOp1 for NormScale {
    fn name(&self) -> &'static str {
        "interplab-norm-scale"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let dims = l.shape().dims();
        let Some((&d, lead)) = dims.split_last() else {
            bail!("{}: needs at least one dim", self.name())
        };
        if d == 0 {
            bail!("{}: empty last dim", self.name());
        }
        let job = NormScaleJob {
            kind: self.kind,
            eps: self.eps,
            d,
            x,
        };
        let out = par_rows(&job, x.len() / d, d, 1);
        let mut out_dims = lead.to_vec();
        out_dims.push(1);
        Ok((CpuStorage::F32(out), Shape::from_dims(&out_dims)))
    }

    fn bwd(&self, x: &Tensor, scale: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        // d scale / d x = (x − mean) / (d · scale).
        let d = x.dim(D::Minus1)? as f64;
        let xc = match self.kind {
            NormKind::Rms => x.clone(),
            NormKind::Layer => x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?,
        };
        let coef = (g / (scale * d)?)?;
        Ok(Some(xc.broadcast_mul(&coef)?))
    }
}

impl NormGrad {
    fn run(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        w: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let name = "interplab-norm-grad";
        same_shape(name, l1, l2)?;
        let d = l1.shape().dims().last().copied().unwrap_or(1);
        if d == 0 {
            bail!("{name}: empty last dim");
        }
        let job = NormGradJob {
            kind: self.kind,
            eps: self.eps,
            d,
            x: f32_slice(s1, l1, name)?,
            g: f32_slice(s2, l2, name)?,
            w,
        };
        let out = par_rows(&job, job.x.len() / d, d, d);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

impl CustomOp2 for NormGrad {
    fn name(&self) -> &'static str {
        "interplab-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for NormGrad {
    fn name(&self) -> &'static str {
        "interplab-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let w = f32_slice(s3, l3, "interplab-norm-grad")?;
        self.run((s1, l1), (s2, l2), Some(w))
    }
}

/// Sums over all rows, leaving the last dim: `Σ_rows a` (one arg) or `Σ_rows a·b` (two).
struct ColumnSum;

struct ColumnSumJob<'a> {
    d: usize,
    a: &'a [f32],
    b: Option<&'a [f32]>,
}
impl Job for ColumnSumJob<'_> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        // Each task owns a block of columns and streams through every row, accumulating in f64:
        // a thousand rows summed in f32 would lose ~1e-5 relative.
        let cols = start..start + out.len();
        let mut acc = vec![0f64; out.len()];
        for (r, a) in self.a.chunks_exact(self.d).enumerate() {
            let a = &a[cols.clone()];
            match self.b {
                Some(b) => {
                    let b = &b[r * self.d..][cols.clone()];
                    for ((s, &a), &b) in acc.iter_mut().zip(a).zip(b) {
                        *s += (a * b) as f64;
                    }
                }
                None => acc.iter_mut().zip(a).for_each(|(s, &a)| *s += a as f64),
            }
        }
        for (o, s) in out.iter_mut().zip(acc) {
            o.write(s as f32);
        }
    }
}

impl ColumnSum {
    fn run(&self, a: &[f32], l: &Layout, b: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l, "interplab-column-sum")?;
        let job = ColumnSumJob { d, a, b };
        // A few column blocks per thread when there is enough work; one task otherwise.
        let chunk = if a.len() <= CHUNK {
            d
        } else {
            d.div_ceil(8).next_multiple_of(LANES)
        };
        Ok((CpuStorage::F32(par_run(&job, d, chunk)), Shape::from(d)))
    }
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "interplab-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(f32_slice(s, l, "interplab-column-sum")?, l, None)
    }
}

impl CustomOp2 for ColumnSum {
    fn name(&self) -> &'static str {
        "interplab-column-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape("interplab-column-sum", l1, l2)?;
        let b = f32_slice(s2, l2, "interplab-column-sum")?;
        self.run(f32_slice(s1, l1, "interplab-column-sum")?, l1, Some(b))
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding (rotate-half), one pass. Its backward is the inverse rotation.
// ---------------------------------------------------------------------------------------------

/// Rotate-half rotary embedding of the first `dim` features of each head of `x`
/// `[b, p, n, d_head]` by the angles whose `cos` and `sin` are given `[b, p, 1, dim / 2]`:
/// `(x₁ cos − x₂ sin, x₂ cos + x₁ sin, rest)`, the two halves `x₁`, `x₂` of the first `dim`
/// features. One pass instead of the composed chain's six products and sums, two narrows and a
/// concatenation; the same f32 operations in the same order, so the same bits. The gradient is
/// the rotation by the negated angles. Inputs off the fast path go through the composed ops.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, dim: usize) -> Result<Tensor> {
    let (b, p, _, d_head) = x.dims4()?;
    let half = dim / 2;
    if !dim.is_multiple_of(2)
        || dim > d_head
        || cos.dims() != [b, p, 1, half]
        || sin.dims() != cos.dims()
    {
        bail!(
            "rope: x {:?}, cos {:?}, sin {:?}, rotary dim {dim}",
            x.dims(),
            cos.dims(),
            sin.dims()
        );
    }
    if fast(&[x, cos, sin]) && half > 0 {
        return x.apply_op3(
            cos,
            sin,
            Rope {
                dim,
                inverse: false,
            },
        );
    }
    rope_composed(x, cos, sin, dim)
}

/// [`rope`] as composed candle ops.
fn rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor, dim: usize) -> Result<Tensor> {
    let (half, d_head) = (dim / 2, x.dim(D::Minus1)?);
    let x1 = x.narrow(3, 0, half)?;
    let x2 = x.narrow(3, half, half)?;
    let o1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let o2 = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    if dim == d_head {
        Tensor::cat(&[o1, o2], 3)
    } else {
        Tensor::cat(&[o1, o2, x.narrow(3, dim, d_head - dim)?], 3)
    }
}

/// `rope` forward, or (`inverse`) the rotation by the negated angles (its gradient).
struct Rope {
    dim: usize,
    inverse: bool,
}

struct RopeJob<'a> {
    x: &'a [f32],
    cos: &'a [f32],
    sin: &'a [f32],
    d_head: usize,
    heads: usize,
    dim: usize,
    inverse: bool,
}
impl Job for RopeJob<'_> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let (dh, half) = (self.d_head, self.dim / 2);
        let first_row = start / dh;
        let x = &self.x[start..start + out.len()];
        for (i, (o, x)) in out.chunks_exact_mut(dh).zip(x.chunks_exact(dh)).enumerate() {
            let t = (first_row + i) / self.heads;
            let c = &self.cos[t * half..][..half];
            let s = &self.sin[t * half..][..half];
            let (x1, rest) = x.split_at(half);
            let (x2, pass) = rest.split_at(half);
            let (o1, rest) = o.split_at_mut(half);
            let (o2, o_pass) = rest.split_at_mut(half);
            if self.inverse {
                for j in 0..half {
                    o1[j].write(x1[j] * c[j] + x2[j] * s[j]);
                    o2[j].write(x2[j] * c[j] - x1[j] * s[j]);
                }
            } else {
                for j in 0..half {
                    o1[j].write(x1[j] * c[j] - x2[j] * s[j]);
                    o2[j].write(x2[j] * c[j] + x1[j] * s[j]);
                }
            }
            for (o, &v) in o_pass.iter_mut().zip(pass) {
                o.write(v);
            }
        }
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "interplab-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, p, n, dh) = l1.shape().dims4()?;
        if l2.shape().dims() != [b, p, 1, self.dim / 2] || l3.shape() != l2.shape() {
            bail!(
                "{}: tables {:?} for x {:?}",
                self.name(),
                l2.shape(),
                l1.shape()
            );
        }
        let job = RopeJob {
            x: f32_slice(s1, l1, self.name())?,
            cos: f32_slice(s2, l2, self.name())?,
            sin: f32_slice(s3, l3, self.name())?,
            d_head: dh,
            heads: n,
            dim: self.dim,
            inverse: self.inverse,
        };
        let out = par_rows(&job, b * p * n, dh, dh);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let inverse = Rope {
            dim: self.dim,
            inverse: !self.inverse,
        };
        Ok((Some(g.apply_op3_no_bwd(cos, sin, &inverse)?), None, None))
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax over the last dim.
// ---------------------------------------------------------------------------------------------

struct Softmax;
/// `y · (g − Σ g·y)`, args (y, g).
struct SoftmaxGrad;

struct SoftmaxJob<'a> {
    d: usize,
    x: &'a [f32],
}
impl Job for SoftmaxJob<'_> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let d = self.d;
        let x = &self.x[start..start + out.len()];
        for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let lane_max = lanes1(x, f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
            let max = lane_max.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            for (o, &x) in o.iter_mut().zip(x) {
                o.write(exp::<F>(x - max));
            }
            // SAFETY: the loop above wrote every element.
            let o = unsafe { assume_init(o) };
            let inv = 1.0 / total(lanes1(o, 0.0, |a, v| a + v));
            o.iter_mut().for_each(|o| *o *= inv);
        }
    }
}

struct SoftmaxGradJob<'a> {
    d: usize,
    y: &'a [f32],
    g: &'a [f32],
}
impl Job for SoftmaxGradJob<'_> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let d = self.d;
        let r = start..start + out.len();
        let rows = out
            .chunks_exact_mut(d)
            .zip(self.y[r.clone()].chunks_exact(d))
            .zip(self.g[r].chunks_exact(d));
        for ((o, y), g) in rows {
            let dot = total(lanes2(g, y, |a, g, y| F::fma(g, y, a)));
            for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                o.write(y * (g - dot));
            }
        }
    }
}

/// Softmax of each row of `d` values of `x` into `out` (the rows of [`softmax_last_dim`], the
/// same bits), on the calling thread.
pub(crate) fn softmax_rows(x: &[f32], d: usize, out: &mut [MaybeUninit<f32>]) {
    run_best(&SoftmaxJob { d, x }, 0, out)
}

fn last_dim(l: &Layout, name: &str) -> Result<usize> {
    match l.shape().dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => bail!("{name}: needs a non-empty last dim"),
    }
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "interplab-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(l, self.name())?;
        let job = SoftmaxJob {
            d,
            x: f32_slice(s, l, self.name())?,
        };
        let out = par_rows(&job, job.x.len() / d, d, d);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let g = g.contiguous()?;
        Ok(Some(y.apply_op2_no_bwd(&g, &SoftmaxGrad)?))
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "interplab-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(self.name(), l1, l2)?;
        let d = last_dim(l1, self.name())?;
        let job = SoftmaxGradJob {
            d,
            y: f32_slice(s1, l1, self.name())?,
            g: f32_slice(s2, l2, self.name())?,
        };
        let out = par_rows(&job, job.y.len() / d, d, d);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy of rows against target indices.
// ---------------------------------------------------------------------------------------------

/// Args (logits `[n, v]`, targets `[n]` u32) → losses `[n]`.
struct CrossEntropy;
/// Args (logits, targets, g `[n]`) → `g · (softmax − onehot)` `[n, v]`.
struct CrossEntropyGrad;

/// `ln Σ exp(x)` of one row, shifted by its maximum.
#[inline(always)]
fn log_sum_exp<F: Fma>(x: &[f32]) -> f32 {
    let lane_max = lanes1(x, f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
    let max = lane_max.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum = total(lanes1(x, 0.0, |a, v| a + exp::<F>(v - max)));
    max + sum.ln()
}

struct CrossEntropyJob<'a> {
    v: usize,
    x: &'a [f32],
    t: &'a [u32],
}
impl Job for CrossEntropyJob<'_> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        for (i, o) in out.iter_mut().enumerate() {
            let row = start + i;
            let t = self.t[row];
            if t == NO_TARGET {
                o.write(0.0);
                continue;
            }
            let x = &self.x[row * self.v..][..self.v];
            o.write(log_sum_exp::<F>(x) - x[t as usize]);
        }
    }
}

struct CrossEntropyGradJob<'a> {
    v: usize,
    x: &'a [f32],
    t: &'a [u32],
    g: &'a [f32],
}
impl Job for CrossEntropyGradJob<'_> {
    #[inline(always)]
    fn run<F: Fma>(&self, start: usize, out: &mut [MaybeUninit<f32>]) {
        let v = self.v;
        let first = start / v;
        for (i, o) in out.chunks_exact_mut(v).enumerate() {
            let row = first + i;
            let t = self.t[row];
            if t == NO_TARGET {
                o.iter_mut().for_each(|o| {
                    o.write(0.0);
                });
                continue;
            }
            let x = &self.x[row * v..][..v];
            let (lse, g) = (log_sum_exp::<F>(x), self.g[row]);
            for (o, &x) in o.iter_mut().zip(x) {
                o.write(g * exp::<F>(x - lse));
            }
            // SAFETY: the loop above wrote every element of the row.
            let o = unsafe { assume_init(o) };
            o[t as usize] -= g;
        }
    }
}

fn check_targets(name: &str, t: &[u32], n: usize, v: usize) -> Result<()> {
    if t.len() != n {
        bail!("{name}: {n} rows but {} targets", t.len());
    }
    if let Some(&bad) = t.iter().find(|&&t| t != NO_TARGET && t as usize >= v) {
        bail!("{name}: target {bad} is outside the {v} classes");
    }
    Ok(())
}

fn u32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [u32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::U32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("{op}: expects contiguous u32 targets"),
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "interplab-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = l1.shape().dims2()?;
        let x = f32_slice(s1, l1, self.name())?;
        let t = u32_slice(s2, l2, self.name())?;
        check_targets(self.name(), t, n, v)?;
        let job = CrossEntropyJob { v, x, t };
        Ok((CpuStorage::F32(par_rows(&job, n, v, 1)), Shape::from(n)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        Ok((Some(x.apply_op3_no_bwd(t, &g, &CrossEntropyGrad)?), None))
    }
}

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "interplab-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = l1.shape().dims2()?;
        let x = f32_slice(s1, l1, self.name())?;
        let t = u32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        check_targets(self.name(), t, n, v)?;
        if g.len() != n {
            bail!("{}: {n} rows but {} gradients", self.name(), g.len());
        }
        let job = CrossEntropyGradJob { v, x, t, g };
        Ok((CpuStorage::F32(par_rows(&job, n, v, v)), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Deterministic pseudo-random numbers (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            bits as f32 / (1u64 << 24) as f32
        }

        /// Roughly standard normal (sum of four uniforms).
        fn normal(&mut self) -> f32 {
            ((0..4).map(|_| self.uniform()).sum::<f32>() - 2.0) * 3f32.sqrt()
        }

        fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
            let n = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| self.normal() * scale).collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        }
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn f64_tensor(t: &Tensor) -> Tensor {
        t.to_dtype(DType::F64).unwrap()
    }

    /// Largest `|got − want| / max(|want|, 1)` (absolute for small values, relative for large),
    /// after checking that NaN and infinities agree.
    fn max_err(name: &str, got: &[f64], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len(), "{name}: lengths");
        let mut worst = 0f64;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if w.is_nan() || w.is_infinite() {
                assert!(
                    g.is_nan() == w.is_nan() && g == w || w.is_nan() && g.is_nan(),
                    "{name}[{i}]: got {g}, want {w}"
                );
                continue;
            }
            assert!(g.is_finite(), "{name}[{i}]: got {g}, want {w}");
            worst = worst.max((g - w).abs() / w.abs().max(1.0));
        }
        worst
    }

    /// Largest relative error over entries with `|want| ≥ floor`.
    fn max_rel(got: &[f64], want: &[f64], floor: f64) -> f64 {
        got.iter()
            .zip(want)
            .filter(|(_, w)| w.is_finite() && w.abs() >= floor)
            .map(|(g, w)| ((g - w) / w).abs())
            .fold(0.0, f64::max)
    }

    /// A dense sweep over the interesting range plus large and special values.
    fn sweep() -> Vec<f32> {
        let mut v: Vec<f32> = (-30_000..=30_000).map(|i| i as f32 * 1e-3).collect();
        for x in [
            1e-30,
            1e-7,
            40.0,
            87.0,
            88.8,
            89.5,
            100.0,
            120.5,
            1e3,
            1e10,
            1e20,
            1e30,
            f32::MAX,
        ] {
            v.push(x);
            v.push(-x);
        }
        v
    }

    fn on_cpu(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap()
    }

    #[test]
    fn exp_is_accurate_and_saturates() {
        fn check<F: Fma>() {
            let mut worst = 0f64;
            for i in -1_100_000..=900_000 {
                let x = i as f32 * 1e-4;
                let got = exp::<F>(x) as f64;
                let want = (x as f64).exp();
                if want > f32::MAX as f64 {
                    assert_eq!(got, f64::INFINITY, "exp({x})");
                } else if want >= f32::MIN_POSITIVE as f64 {
                    worst = worst.max((got / want - 1.0).abs());
                } else {
                    // Subnormal results: a few units of the smallest subnormal.
                    assert!((got - want).abs() <= 4e-45, "exp({x}) = {got}, want {want}");
                }
            }
            assert!(worst < 2.5e-7, "exp max relative error {worst}");
            assert_eq!(exp::<F>(f32::INFINITY), f32::INFINITY);
            assert_eq!(exp::<F>(f32::NEG_INFINITY), 0.0);
            assert_eq!(exp::<F>(-200.0), 0.0);
            assert!(exp::<F>(f32::NAN).is_nan());
            println!("exp max relative error {worst:.2e}");
        }
        check::<Fused>();
        check::<Unfused>();
    }

    /// Scalar f64 references, written to avoid the cancellation in `1 + tanh` / `1 + erf`
    /// that makes the textbook forms useless as references for large negative x.
    fn reference_f64(name: &str, x: f64) -> f64 {
        match name {
            "interplab-silu" => x / (1.0 + (-x).exp()),
            "interplab-gelu-tanh" => {
                let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
                x / (1.0 + (-2.0 * u).exp())
            }
            "interplab-gelu-erf" => {
                x * 0.5 * candle_core::cpu::erf::erfc_f64(-x / std::f64::consts::SQRT_2)
            }
            _ => unreachable!(),
        }
    }

    /// The fast path (AVX2+FMA here) and the scalar portable one, against f64. Returns the
    /// rel-ish error, the relative error for x ≥ -5 and the relative error wherever the
    /// result is a normal f32.
    fn check_activation<A: Activation>(public: fn(&Tensor) -> Result<Tensor>) -> [f64; 3] {
        let x = sweep();
        let want: Vec<f64> = x
            .iter()
            .map(|&v| reference_f64(A::NAME, v as f64))
            .collect();
        let candle = vals(&A::composed(&f64_tensor(&on_cpu(&x))).unwrap());
        assert!(max_err("candle", &candle, &want) < 1e-12);
        let fast = vals(&public(&on_cpu(&x)).unwrap());
        let portable: Vec<f64> = x.iter().map(|&v| A::value::<Unfused>(v) as f64).collect();
        let err = max_err(A::NAME, &fast, &want).max(max_err(A::NAME, &portable, &want));
        let rel = |keep: &dyn Fn(f32) -> bool, floor: f64| {
            let idx: Vec<usize> = (0..x.len()).filter(|&i| keep(x[i])).collect();
            let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
            let w = pick(&want);
            max_rel(&pick(&fast), &w, floor).max(max_rel(&pick(&portable), &w, floor))
        };
        let moderate = rel(&|x| x >= -5.0, 1e-300);
        let normal = rel(&|_| true, f32::MIN_POSITIVE as f64);
        println!(
            "{}: max |err|/max(1,|y|) {err:.2e}; relative for x ≥ -5 {moderate:.2e}, \
             wherever y is a normal f32 {normal:.2e}",
            A::NAME
        );
        [err, moderate, normal]
    }

    #[test]
    fn activations_match_f64_reference() {
        for (name, [err, moderate, normal]) in [
            ("silu", check_activation::<Silu>(silu)),
            ("gelu_tanh", check_activation::<GeluTanh>(gelu_tanh)),
            ("gelu_erf", check_activation::<GeluErf>(gelu_erf)),
        ] {
            // Relative error in the negative tail is bounded by the conditioning: there
            // |d ln y / d ln x| ≈ x² (erf) or 3·|2u| (tanh), about 50 at x = -5, so one ulp of x
            // already moves y by ~3e-6, and by ~1e-5 far out (on values below 1e-20).
            assert!(
                err < 5e-7 && moderate < 2e-6 && normal < 3e-5,
                "{name}: {err} {moderate} {normal}"
            );
        }
    }

    #[test]
    fn activations_at_infinities_and_nan() {
        let x = on_cpu(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0]);
        for f in [silu, gelu_tanh, gelu_erf] {
            let y: Vec<f32> = f(&x).unwrap().to_vec1().unwrap();
            assert_eq!(y[0], f32::INFINITY);
            assert_eq!(y[1], 0.0);
            assert!(y[2].is_nan());
            assert_eq!(y[3], 0.0);
        }
        // Derivatives: 1 at +inf, 0 at -inf, NaN at NaN.
        fn derivs<A: Activation>() {
            for d in [A::deriv::<Fused>, A::deriv::<Unfused>] {
                assert_eq!(d(f32::INFINITY), 1.0, "{}", A::NAME);
                assert_eq!(d(f32::NEG_INFINITY), 0.0, "{}", A::NAME);
                assert!(d(f32::NAN).is_nan(), "{}", A::NAME);
            }
        }
        derivs::<Silu>();
        derivs::<GeluTanh>();
        derivs::<GeluErf>();
    }

    const SHAPES: [&[usize]; 5] = [&[7, 13], &[1, 1], &[3, 577], &[2, 3, 5], &[40, 1537]];

    #[test]
    fn odd_shapes_and_gated_forms_match_f64() {
        let mut rng = Rng(1);
        for shape in SHAPES {
            let x = rng.tensor(shape, 4.0);
            let up = rng.tensor(shape, 2.0);
            let (x64, up64) = (f64_tensor(&x), f64_tensor(&up));
            let cases: [(&str, Tensor, Tensor); 5] = [
                ("silu", silu(&x).unwrap(), x64.silu().unwrap()),
                ("gelu_tanh", gelu_tanh(&x).unwrap(), x64.gelu().unwrap()),
                ("gelu_erf", gelu_erf(&x).unwrap(), x64.gelu_erf().unwrap()),
                (
                    "silu_mul",
                    silu_mul(&x, &up).unwrap(),
                    (x64.silu().unwrap() * &up64).unwrap(),
                ),
                (
                    "gelu_tanh_mul",
                    gelu_tanh_mul(&x, &up).unwrap(),
                    (x64.gelu().unwrap() * &up64).unwrap(),
                ),
            ];
            for (name, got, want) in cases {
                assert_eq!(got.dims(), shape, "{name}");
                let err = max_err(name, &vals(&got), &vals(&want));
                assert!(err < 2e-6, "{name} {shape:?}: {err}");
            }
        }
    }

    #[test]
    fn non_contiguous_and_other_dtypes_fall_back() {
        let mut rng = Rng(2);
        let xt = rng.tensor(&[13, 7], 3.0).t().unwrap();
        let upt = rng.tensor(&[13, 7], 3.0).t().unwrap();
        assert!(!xt.is_contiguous());
        let (xc, upc) = (xt.contiguous().unwrap(), upt.contiguous().unwrap());
        let pairs: [(Tensor, Tensor); 6] = [
            (silu(&xt).unwrap(), silu(&xc).unwrap()),
            (gelu_tanh(&xt).unwrap(), gelu_tanh(&xc).unwrap()),
            (gelu_erf(&xt).unwrap(), gelu_erf(&xc).unwrap()),
            (silu_mul(&xt, &upc).unwrap(), silu_mul(&xc, &upc).unwrap()),
            (
                gelu_tanh_mul(&xc, &upt).unwrap(),
                gelu_tanh_mul(&xc, &upc).unwrap(),
            ),
            (
                softmax_last_dim(&xt).unwrap(),
                softmax_last_dim(&xc).unwrap(),
            ),
        ];
        for (i, (a, b)) in pairs.iter().enumerate() {
            assert_eq!(a.dims(), b.dims());
            let err = max_err("fallback", &vals(a), &vals(b));
            assert!(err < 2e-6, "case {i}: {err}");
        }
        let w = rng.tensor(&[13], 1.0);
        let b = rng.tensor(&[13], 1.0);
        let (o1, s1) = layer_norm(&xt, Some(&w), Some(&b), 1e-5).unwrap();
        let (o2, s2) = layer_norm(&xc, Some(&w), Some(&b), 1e-5).unwrap();
        assert!(max_err("ln", &vals(&o1), &vals(&o2)) < 2e-6);
        assert!(max_err("ln scale", &vals(&s1), &vals(&s2)) < 2e-6);
        // f64 input takes the composed path and stays f64.
        let x64 = f64_tensor(&xc);
        let y = gelu_erf(&x64).unwrap();
        assert_eq!(y.dtype(), DType::F64);
        assert!(max_err("f64", &vals(&y), &vals(&x64.gelu_erf().unwrap())) < 1e-12);
        let (o, s) = rms_norm(&x64, None, 1e-6).unwrap();
        assert_eq!((o.dtype(), s.dims()), (DType::F64, &[7usize, 1][..]));
    }

    /// Gradient of `sum(f(x) · r)` w.r.t. x (a Var), in f64.
    fn grad_of(x: &Tensor, r: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Vec<f64> {
        let v = Var::from_tensor(x).unwrap();
        let loss = (f(v.as_tensor()).unwrap() * r).unwrap().sum_all().unwrap();
        vals(loss.backward().unwrap().get(v.as_tensor()).unwrap())
    }

    /// Element-wise central differences of an f64 function.
    fn elementwise_fd(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Vec<f64> {
        let h = 1e-5;
        let x = f64_tensor(x);
        let up = f(&(&x + h).unwrap()).unwrap();
        let down = f(&(&x - h).unwrap()).unwrap();
        vals(&((up - down).unwrap() / (2.0 * h)).unwrap())
    }

    #[test]
    fn activation_gradients_match_finite_differences() {
        let mut rng = Rng(3);
        let mut xs = vec![rng.tensor(&[7, 13], 4.0), rng.tensor(&[3, 577], 2.0)];
        xs.push(on_cpu(
            &(-2500..=2500).map(|i| i as f32 * 1e-2).collect::<Vec<_>>(),
        ));
        for x in &xs {
            let r = rng.tensor(x.dims(), 1.0);
            let r64 = f64_tensor(&r);
            type Case = (
                &'static str,
                fn(&Tensor) -> Result<Tensor>,
                fn(&Tensor) -> Result<Tensor>,
            );
            let cases: [Case; 3] = [
                ("silu", silu, |x| x.silu()),
                ("gelu_tanh", gelu_tanh, |x| x.gelu()),
                ("gelu_erf", gelu_erf, |x| x.gelu_erf()),
            ];
            for (name, fast, reference) in cases {
                let got = grad_of(x, &r, fast);
                let want = vals(
                    &(Tensor::new(elementwise_fd(x, reference), &Device::Cpu)
                        .unwrap()
                        .reshape(x.dims())
                        .unwrap()
                        * &r64)
                        .unwrap(),
                );
                let err = max_err(name, &got, &want);
                println!("{name} grad {:?}: max error {err:.2e}", x.dims());
                assert!(err < 2e-6, "{name} grad: {err}");
            }
        }
    }

    #[test]
    fn gated_gradients_match_finite_differences() {
        let mut rng = Rng(4);
        for shape in [&[7, 13][..], &[3, 577], &[1, 1]] {
            let gate = rng.tensor(shape, 4.0);
            let up = rng.tensor(shape, 2.0);
            let r = rng.tensor(shape, 1.0);
            let (up64, r64) = (f64_tensor(&up), f64_tensor(&r));
            type Case = (
                &'static str,
                fn(&Tensor, &Tensor) -> Result<Tensor>,
                fn(&Tensor) -> Result<Tensor>,
            );
            let cases: [Case; 2] = [
                ("silu_mul", silu_mul, |x| x.silu()),
                ("gelu_tanh_mul", gelu_tanh_mul, |x| x.gelu()),
            ];
            for (name, fast, act) in cases {
                let (g, u) = (
                    Var::from_tensor(&gate).unwrap(),
                    Var::from_tensor(&up).unwrap(),
                );
                let y = fast(g.as_tensor(), u.as_tensor()).unwrap();
                let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let d_gate = vals(grads.get(g.as_tensor()).unwrap());
                let d_up = vals(grads.get(u.as_tensor()).unwrap());
                let fd = Tensor::new(elementwise_fd(&gate, act), &Device::Cpu)
                    .unwrap()
                    .reshape(shape)
                    .unwrap();
                let want_gate = vals(&((fd * &up64).unwrap() * &r64).unwrap());
                let want_up = vals(&(act(&f64_tensor(&gate)).unwrap() * &r64).unwrap());
                let (e1, e2) = (
                    max_err(name, &d_gate, &want_gate),
                    max_err(name, &d_up, &want_up),
                );
                assert!(e1 < 2e-6 && e2 < 2e-6, "{name} {shape:?}: {e1} {e2}");
            }
        }
    }

    type NormFn = fn(&Tensor, Option<&Tensor>, Option<&Tensor>, f64) -> Result<(Tensor, Tensor)>;

    fn rms(
        x: &Tensor,
        w: Option<&Tensor>,
        _b: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, Tensor)> {
        rms_norm(x, w, eps)
    }

    fn reference(kind: NormKind) -> NormFn {
        match kind {
            NormKind::Rms => |x, w, _b, eps| norm_composed(NormKind::Rms, x, w, None, eps),
            NormKind::Layer => |x, w, b, eps| norm_composed(NormKind::Layer, x, w, b, eps),
        }
    }

    /// The norm cases: (kind, public fn, with weight, with bias).
    fn norm_cases() -> Vec<(NormKind, NormFn, bool, bool)> {
        let mut v: Vec<(NormKind, NormFn, bool, bool)> = vec![
            (NormKind::Rms, rms, false, false),
            (NormKind::Rms, rms, true, false),
        ];
        for w in [false, true] {
            for b in [false, true] {
                v.push((NormKind::Layer, layer_norm, w, b));
            }
        }
        v
    }

    #[test]
    fn norms_match_f64_reference() {
        let mut rng = Rng(5);
        for shape in SHAPES.iter().chain([&[300usize, 577][..]].iter()) {
            let d = *shape.last().unwrap();
            // An offset, so that LayerNorm's centring matters.
            let x = (rng.tensor(shape, 3.0) + 2.0).unwrap();
            let w = rng.tensor(&[d], 1.0);
            let b = rng.tensor(&[d], 1.0);
            for (kind, f, has_w, has_b) in norm_cases() {
                let (w, b) = (has_w.then_some(&w), has_b.then_some(&b));
                let (out, scale) = f(&x, w, b, 1e-5).unwrap();
                let (w64, b64) = (w.map(f64_tensor), b.map(f64_tensor));
                let (want_out, want_scale) =
                    reference(kind)(&f64_tensor(&x), w64.as_ref(), b64.as_ref(), 1e-5).unwrap();
                assert_eq!(scale.dims(), want_scale.dims());
                let e1 = max_err("norm", &vals(&out), &vals(&want_out));
                let e2 = max_err("scale", &vals(&scale), &vals(&want_scale));
                assert!(
                    e1 < 2e-6 && e2 < 1e-6,
                    "{kind:?} {shape:?} w={has_w} b={has_b}: {e1} {e2}"
                );
            }
        }
    }

    #[test]
    fn norm_gradients_match_finite_differences() {
        let mut rng = Rng(6);
        for shape in [&[3usize, 7][..], &[2, 2, 9], &[1, 1]] {
            let d = *shape.last().unwrap();
            let x = (rng.tensor(shape, 2.0) + 1.0).unwrap();
            let w = rng.tensor(&[d], 1.0);
            let b = rng.tensor(&[d], 1.0);
            let r = rng.tensor(shape, 1.0);
            let mut scale_shape = shape.to_vec();
            *scale_shape.last_mut().unwrap() = 1;
            let r_scale = rng.tensor(&scale_shape, 1.0);
            let eps = 1e-5;
            for (kind, f, has_w, has_b) in norm_cases() {
                // Analytic: a loss that uses both outputs.
                let (xv, wv, bv) = (
                    Var::from_tensor(&x).unwrap(),
                    Var::from_tensor(&w).unwrap(),
                    Var::from_tensor(&b).unwrap(),
                );
                let (wt, bt) = (
                    has_w.then_some(wv.as_tensor()),
                    has_b.then_some(bv.as_tensor()),
                );
                let (out, scale) = f(xv.as_tensor(), wt, bt, eps).unwrap();
                let loss = ((out * &r).unwrap().sum_all().unwrap()
                    + (scale * &r_scale).unwrap().sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                let got = |v: &Var| vals(grads.get(v.as_tensor()).unwrap());

                // Central differences of the f64 reference, one parameter at a time.
                let (r64, rs64) = (f64_tensor(&r), f64_tensor(&r_scale));
                let loss64 = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
                    let t =
                        |v: &[f64], s: &[usize]| Tensor::from_slice(v, s, &Device::Cpu).unwrap();
                    let (w, b) = (t(w, &[d]), t(b, &[d]));
                    let (o, s) = reference(kind)(
                        &t(x, shape),
                        has_w.then_some(&w),
                        has_b.then_some(&b),
                        eps,
                    )
                    .unwrap();
                    let l = ((o * &r64).unwrap().sum_all().unwrap()
                        + (s * &rs64).unwrap().sum_all().unwrap())
                    .unwrap();
                    l.to_scalar::<f64>().unwrap()
                };
                let base = [vals(&x), vals(&w), vals(&b)];
                let fd = |which: usize| -> Vec<f64> {
                    (0..base[which].len())
                        .map(|i| {
                            let h = 1e-6;
                            let mut p = base.clone();
                            p[which][i] += h;
                            let up = loss64(&p[0], &p[1], &p[2]);
                            p[which][i] -= 2.0 * h;
                            let down = loss64(&p[0], &p[1], &p[2]);
                            (up - down) / (2.0 * h)
                        })
                        .collect()
                };
                let tag = format!("{kind:?} {shape:?} w={has_w} b={has_b}");
                let err = max_err(&tag, &got(&xv), &fd(0));
                assert!(err < 1e-5, "{tag} dx: {err}");
                if has_w {
                    let err = max_err(&tag, &got(&wv), &fd(1));
                    assert!(err < 1e-5, "{tag} dw: {err}");
                }
                if has_b {
                    let err = max_err(&tag, &got(&bv), &fd(2));
                    assert!(err < 1e-5, "{tag} db: {err}");
                }
            }
        }
    }

    /// Sizes where every kernel splits over rayon, against the composed reference's autograd in
    /// f64 (elementary ops only, which candle differentiates correctly).
    #[test]
    fn large_norm_gradients_match_composed_autograd() {
        let mut rng = Rng(9);
        let shape = [300, 577];
        let x = (rng.tensor(&shape, 2.0) + 0.5).unwrap();
        let w = rng.tensor(&[577], 1.0);
        let b = rng.tensor(&[577], 1.0);
        let r = rng.tensor(&shape, 1.0);
        let r_scale = rng.tensor(&[300, 1], 1.0);
        for (kind, f, has_w, has_b) in norm_cases() {
            let run = |x: &Tensor, w: &Tensor, b: &Tensor, r: &Tensor, rs: &Tensor, f: NormFn| {
                let vars = [x, w, b].map(|t| Var::from_tensor(t).unwrap());
                let (o, s) = f(
                    vars[0].as_tensor(),
                    has_w.then_some(vars[1].as_tensor()),
                    has_b.then_some(vars[2].as_tensor()),
                    1e-5,
                )
                .unwrap();
                let loss = ((o * r).unwrap().sum_all().unwrap()
                    + (s * rs).unwrap().sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                vars.map(|v| grads.get(v.as_tensor()).map(vals))
            };
            let got = run(&x, &w, &b, &r, &r_scale, f);
            let [x64, w64, b64, r64, rs64] = [&x, &w, &b, &r, &r_scale].map(f64_tensor);
            let want = run(&x64, &w64, &b64, &r64, &rs64, reference(kind));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let tag = format!("{kind:?} w={has_w} b={has_b} arg {i}");
                match (g, w) {
                    (Some(g), Some(w)) => {
                        let err = max_err(&tag, g, w);
                        assert!(err < 1e-5, "{tag}: {err}");
                    }
                    (None, None) => {}
                    _ => panic!("{tag}: gradient presence differs"),
                }
            }
        }
    }

    #[test]
    fn softmax_values_gradients_and_masks() {
        let mut rng = Rng(7);
        for shape in [&[7usize, 13][..], &[1, 1], &[3, 577], &[2, 3, 130]] {
            let x = rng.tensor(shape, 5.0);
            let r = rng.tensor(shape, 1.0);
            let want = candle_nn::ops::softmax(&f64_tensor(&x), D::Minus1).unwrap();
            let err = max_err(
                "softmax",
                &vals(&softmax_last_dim(&x).unwrap()),
                &vals(&want),
            );
            assert!(err < 1e-6, "softmax {shape:?}: {err}");
            let got = grad_of(&x, &r, softmax_last_dim);
            let want = grad_of(&f64_tensor(&x), &f64_tensor(&r), |x| {
                candle_nn::ops::softmax(x, D::Minus1)
            });
            let err = max_err("softmax grad", &got, &want);
            assert!(err < 1e-6, "softmax grad {shape:?}: {err}");
        }
        // A causal mask: -inf entries get exactly 0; an all -inf row gives NaN as in PyTorch.
        let inf = f32::INFINITY;
        let x = Tensor::new(
            &[[0.5f32, -inf, -inf], [1.0, 2.0, -inf], [-inf, -inf, -inf]],
            &Device::Cpu,
        )
        .unwrap();
        let y: Vec<Vec<f32>> = softmax_last_dim(&x).unwrap().to_vec2().unwrap();
        assert_eq!(y[0], [1.0, 0.0, 0.0]);
        assert_eq!(y[1][2], 0.0);
        assert!((y[1][0] + y[1][1] - 1.0).abs() < 1e-7);
        assert!(y[2].iter().all(|v| v.is_nan()));
    }

    #[test]
    fn cross_entropy_rows_values_and_gradients() {
        // Reference: candle's composed log-softmax and gather in f64 (the fallback path).
        let mut rng = Rng(11);
        for (n, v) in [(7usize, 13usize), (1, 1), (5, 577), (3, 4099)] {
            let x = rng.tensor(&[n, v], 5.0);
            let r = rng.tensor(&[n], 1.0);
            let t: Vec<u32> = (0..n)
                .map(|i| {
                    if i % 4 == 3 {
                        NO_TARGET
                    } else {
                        ((rng.normal().abs() * 1e4) as usize % v) as u32
                    }
                })
                .collect();
            let t = Tensor::from_vec(t, n, &Device::Cpu).unwrap();
            let f = |x: &Tensor| cross_entropy_rows(x, &t);
            let want = f(&f64_tensor(&x)).unwrap();
            let err = max_err("cross-entropy", &vals(&f(&x).unwrap()), &vals(&want));
            assert!(err < 1e-5, "cross-entropy [{n}, {v}]: {err}");
            let got = grad_of(&x, &r, f);
            let want = grad_of(&f64_tensor(&x), &f64_tensor(&r), f);
            let err = max_err("cross-entropy grad", &got, &want);
            assert!(err < 1e-6, "cross-entropy grad [{n}, {v}]: {err}");
            // A row without a target has no gradient at all.
            if n > 3 {
                assert!(got[3 * v..4 * v].iter().all(|&g| g == 0.0));
            }
        }
        // A known case: uniform logits over 4 classes cost ln 4 and their gradient is 1/4 − 1.
        let x = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::new(&[2u32], &Device::Cpu).unwrap();
        let l: Vec<f32> = cross_entropy_rows(&x, &t).unwrap().to_vec1().unwrap();
        assert!((l[0] - 4f32.ln()).abs() < 1e-6);
        let g = grad_of(&x, &Tensor::new(&[1f32], &Device::Cpu).unwrap(), |x| {
            cross_entropy_rows(x, &t)
        });
        assert_eq!(g, [0.25, 0.25, -0.75, 0.25]);
        // A target outside the classes is an error, not a panic.
        let bad = Tensor::new(&[4u32], &Device::Cpu).unwrap();
        let e = cross_entropy_rows(&x, &bad).unwrap_err().to_string();
        assert!(e.contains("outside the 4 classes"), "{e}");
    }

    #[test]
    fn fallback_gradients_agree_with_fast_gradients() {
        let mut rng = Rng(8);
        let x = rng.tensor(&[9, 5], 3.0);
        let w = rng.tensor(&[9], 1.0);
        let r = rng.tensor(&[5, 9], 1.0);
        let cases: [fn(&Tensor, &Tensor) -> Result<Tensor>; 3] = [
            |x, _| gelu_erf(x),
            |x, w| Ok(rms_norm(x, Some(w), 1e-5)?.0),
            |x, w| {
                let (o, s) = layer_norm(x, Some(w), None, 1e-5)?;
                o.broadcast_mul(&s)
            },
        ];
        for (i, f) in cases.iter().enumerate() {
            // Through the transpose (composed path) and through a contiguous copy (fast path).
            let slow = grad_of(&x, &r, |x| f(&x.t()?, &w));
            let fast = grad_of(&x, &r, |x| f(&x.t()?.contiguous()?, &w));
            let err = max_err("fallback grad", &slow, &fast);
            assert!(err < 1e-5, "case {i}: {err}");
        }
    }

    #[test]
    fn norms_reject_bad_parameter_shapes() {
        let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        assert!(rms_norm(&x, Some(&w), 1e-5).is_err());
        assert!(layer_norm(&x, None, Some(&w), 1e-5).is_err());
        let up = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(silu_mul(&x, &up).is_err());
    }

    #[test]
    fn rope_is_the_composed_rotation_bit_for_bit_and_its_gradient_the_inverse() {
        let mut rng = Rng(0x5eed_0f0e);
        let (b, p, n, dh) = (2, 5, 3, 8);
        for dim in [8, 6] {
            let x = rng.tensor(&[b, p, n, dh], 1.0);
            let angles: Vec<f32> = (0..b * p * dim / 2).map(|_| rng.normal() * 3.0).collect();
            let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
            let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
            let cos = Tensor::from_vec(cos, (b, p, 1, dim / 2), &Device::Cpu).unwrap();
            let sin = Tensor::from_vec(sin, (b, p, 1, dim / 2), &Device::Cpu).unwrap();
            let fused = rope(&x, &cos, &sin, dim).unwrap();
            let composed = rope_composed(&x, &cos, &sin, dim).unwrap();
            let (f, c): (Vec<f32>, Vec<f32>) = (
                fused.flatten_all().unwrap().to_vec1().unwrap(),
                composed.flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert!(
                f.iter().zip(&c).all(|(a, b)| a.to_bits() == b.to_bits()),
                "dim {dim}: fused and composed rotations differ"
            );
            // The gradient of Σ w·rope(x), against the composed chain's in f64.
            let w = rng.tensor(&[b, p, n, dh], 1.0);
            let xv = Var::from_tensor(&x).unwrap();
            let loss = (rope(xv.as_tensor(), &cos, &sin, dim).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap();
            let got = loss.backward().unwrap();
            let got = vals(got.get(xv.as_tensor()).unwrap());
            let x64 = Var::from_tensor(&f64_tensor(&x)).unwrap();
            let loss = (rope_composed(x64.as_tensor(), &f64_tensor(&cos), &f64_tensor(&sin), dim)
                .unwrap()
                * f64_tensor(&w))
            .unwrap()
            .sum_all()
            .unwrap();
            let want = loss.backward().unwrap();
            let want = vals(want.get(x64.as_tensor()).unwrap());
            assert!(max_err("rope grad", &got, &want) < 1e-6, "dim {dim}");
        }
        // A known case: a quarter turn maps (x₁, x₂) to (−x₂, x₁); the unrotated tail stays.
        let x =
            Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], (1, 1, 1, 6), &Device::Cpu).unwrap();
        let cos = Tensor::from_vec(vec![0f32, 0.], (1, 1, 1, 2), &Device::Cpu).unwrap();
        let sin = Tensor::from_vec(vec![1f32, 1.], (1, 1, 1, 2), &Device::Cpu).unwrap();
        let y: Vec<f32> = rope(&x, &cos, &sin, 4)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, vec![-3., -4., 1., 2., 5., 6.]);
        // Tables of the wrong shape are an error.
        assert!(rope(&x, &cos, &sin, 6).is_err());
    }

    /// The AVX-512 and AVX2 builds of a kernel give the same bits (where the CPU has both).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_and_avx2_builds_agree_bit_for_bit() {
        if !(is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma"))
        {
            return;
        }
        fn both<J: Job>(name: &str, job: &J, len: usize) {
            let run = |f: unsafe fn(&J, usize, &mut [MaybeUninit<f32>])| -> Vec<u32> {
                let mut out = vec![MaybeUninit::new(f32::NAN); len];
                // SAFETY: the CPU has AVX-512 (checked above) and AVX2 + FMA.
                unsafe { f(job, 0, &mut out) };
                // SAFETY: the job wrote every element.
                unsafe { assume_init(&mut out) }
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(run(run_avx512::<J>), run(run_avx2_fma::<J>), "{name}");
        }
        let mut rng = Rng(0xa5a5_0517);
        let d = 200;
        let x: Vec<f32> = (0..7 * d).map(|_| rng.normal() * 4.0).collect();
        let y: Vec<f32> = (0..7 * d).map(|_| rng.normal()).collect();
        let w: Vec<f32> = (0..d).map(|_| rng.normal()).collect();
        both("softmax", &SoftmaxJob { d, x: &x }, x.len());
        both(
            "silu",
            &ActJob::<Silu> {
                x: &x,
                act: PhantomData,
            },
            x.len(),
        );
        both(
            "gelu",
            &ActJob::<GeluErf> {
                x: &x,
                act: PhantomData,
            },
            x.len(),
        );
        let gated = ActMulJob::<GeluTanh> {
            gate: &x,
            up: &y,
            act: PhantomData,
        };
        both("gelu_tanh_mul", &gated, x.len());
        for kind in [NormKind::Rms, NormKind::Layer] {
            let job = NormJob {
                kind,
                eps: 1e-5,
                d,
                x: &x,
                w: Some(&w),
                b: None,
            };
            both("norm", &job, x.len());
        }
    }
}
