//! Attention for calls in which nothing can change the scores or the pattern: each group's
//! scores, mask and softmax in a buffer of the task's own, multiplied by the values at once.
//!
//! The composed path forms `[batch, heads, q_len, k_len]` scores and pattern tensors and walks
//! them six times (product, scale, bias, softmax, product, plus the transposes of q, k, v and
//! z into and out of head-major layout); at 4,096 tokens of 128 that is ~19 MB a pass, out of
//! every cache. Here a task takes one kv group of one sequence: it gathers the group's query
//! rows head-major, reads k and v in their `[batch, pos, head, d_head]` layout through strides,
//! and writes its rows of z in place. The arithmetic is the composed path's, operation for
//! operation, so the results are the same bits: the two gemm products with the composed ones'
//! shapes (`[rep · q_len, d_head] · [d_head, k_len]` and `[rep · q_len, k_len] · [k_len,
//! d_head]`; gemm picks its kernel by shape, and a different kernel can round a row
//! differently), `scores · (1 / scale)` as candle's affine computes it, the optional soft cap
//! as `tanh(s · (1 / cap)) · cap`, the additive bias, and [`crate::kernels::softmax_rows`]
//! (whose sums are unchanged by the masked tail's zeros, so the tail is skipped).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType, Storage, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::Result;

/// A raw pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes only its own rows of its own head (see `fused`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer `i` elements in (a method, so closures capture the `Sync` wrapper).
    ///
    /// # Safety
    /// `i` lies inside the buffer.
    unsafe fn at(&self, i: usize) -> *mut f32 {
        // SAFETY: the caller's promise.
        unsafe { self.0.add(i) }
    }
}

/// `dst = a · b` for `a` `[m, k]` and `b` `[k, n]`, each given as (first element, row stride,
/// column stride), into the row-major `dst` with row stride `ldd`; on the calling thread (the
/// tasks are the parallelism).
///
/// # Safety
/// Every element the shapes and strides address lies inside its buffer, and `dst`'s are
/// writable.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    ldd: usize,
    (a, a_rs, a_cs): (*const f32, isize, isize),
    (b, b_rs, b_cs): (*const f32, isize, isize),
) {
    // SAFETY: the caller's promise.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            ldd as isize,
            false,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// What [`fused`] computed: `z`, and with `keep` the scores and the pattern
/// `[b, h, p, kl]` (for a cache; the values the composed ops give).
pub(crate) struct Attended {
    pub z: Tensor,
    pub kept: Option<(Tensor, Tensor)>,
}

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    p: usize,
    h: usize,
    dh: usize,
    kl: usize,
    kvh: usize,
    /// 1 (one bias for every sequence) or `b`.
    bias_rows: usize,
}

impl Dims {
    fn of(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor) -> Result<Dims> {
        let (b, p, h, dh) = q.dims4()?;
        let (_, kl, kvh, _) = k.dims4()?;
        let (bias_rows, _, _, _) = bias.dims4()?;
        if k.dims() != v.dims()
            || k.dims()[0] != b
            || k.dims()[3] != dh
            || kvh == 0
            || h % kvh != 0
            || bias.dims()[1..] != [1, p, kl]
            || (bias_rows != 1 && bias_rows != b)
        {
            return Err(crate::Error::Input(format!(
                "attention: q {:?}, k {:?}, v {:?}, bias {:?}",
                q.dims(),
                k.dims(),
                v.dims(),
                bias.dims()
            )));
        }
        Ok(Dims {
            b,
            p,
            h,
            dh,
            kl,
            kvh,
            bias_rows,
        })
    }
}

/// The scalars of one attention call: `1 / scale`, and the soft cap as `(1 / cap, cap)`.
#[derive(Debug, Clone, Copy)]
struct Scaling {
    inv_scale: f32,
    cap: Option<(f32, f32)>,
}

impl Scaling {
    fn new(scale: f64, softcap: Option<f64>) -> Scaling {
        Scaling {
            inv_scale: (1.0 / scale) as f32,
            cap: softcap.map(|c| ((1.0 / c) as f32, c as f32)),
        }
    }

    /// A raw score `q·k` as the composed ops take it to the softmax's input (before the
    /// bias): `· (1 / scale)` as candle's affine, then `tanh(x · (1 / cap)) · cap`.
    #[inline(always)]
    fn apply(&self, s: f32) -> f32 {
        let x = s * self.inv_scale + 0.0;
        match self.cap {
            Some((inv_cap, cap)) => (x * inv_cap + 0.0).tanh() * cap + 0.0,
            None => x,
        }
    }
}

/// Each bias row's length up to its last visible key: a causal row's masked tail needs no
/// exponentials (its pattern entries are exactly 0, and zeros change no sum, so the visible
/// entries come out the same as over the whole row).
fn visible_lengths(bs: &[f32], kl: usize) -> Vec<usize> {
    bs.chunks_exact(kl)
        .map(|row| {
            row.iter()
                .rposition(|&x| x != f32::NEG_INFINITY)
                .map_or(kl, |j| j + 1)
        })
        .collect()
}

/// The group's query rows (or rows of `z`'s gradient, laid out as q), head-major
/// (`[rep · p, dh]`), as the composed path lays them out: its products then have the composed
/// ones' shapes exactly, and gemm's choice of kernel (which can change the rounding of a row)
/// is the same.
fn gather_group(x: &[f32], d: Dims, bi: usize, g: usize) -> Vec<f32> {
    let (p, h, dh) = (d.p, d.h, d.dh);
    let rep = h / d.kvh;
    let mut out: Vec<f32> = Vec::with_capacity(rep * p * dh);
    for r in 0..rep {
        for i in 0..p {
            out.extend_from_slice(&x[((bi * p + i) * h + g * rep + r) * dh..][..dh]);
        }
    }
    out
}

/// The inverse of [`gather_group`]: the group's head-major rows `[rep · p, dh]` written to
/// their places in the `[b, p, h, dh]` buffer behind `out`.
///
/// # Safety
/// `out` holds `b · p · h · dh` values, and no other thread writes the rows of kv group `g`'s
/// query heads of sequence `bi` meanwhile.
unsafe fn scatter_group(rows: &[f32], out: Out, d: Dims, bi: usize, g: usize) {
    let (p, h, dh) = (d.p, d.h, d.dh);
    let rep = h / d.kvh;
    for (row, src) in rows.chunks_exact(dh).enumerate() {
        let (r, i) = (row / p, row % p);
        // SAFETY: the caller's promises; row i of head g·rep + r of sequence bi is inside.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                out.at(((bi * p + i) * h + g * rep + r) * dh),
                dh,
            )
        };
    }
}

/// `z = softmax(cap(q kᵀ / scale) + bias) v` for `q` `[b, p, h, dh]`, `k` and `v`
/// `[b, kl, kvh, dh]` (query head `i` reads kv head `i / (h / kvh)`), `bias` `[1 or b, 1, p,
/// kl]`: `z` `[b, p, h, dh]`; with `keep` also the scores and the pattern, written in place
/// of the task's buffers. `None` when the inputs are not contiguous f32 CPU tensors, or when
/// scores or pattern are to be kept of inputs that need a gradient (the caller then composes
/// the ops). Inputs that need a gradient (fine-tuning) get `z` from an op with its own
/// backward ([`backward`]), which forms no scores or pattern tensors either.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    scale: f64,
    softcap: Option<f64>,
    keep: bool,
) -> Result<Option<Attended>> {
    let all = [q, k, v, bias];
    if all
        .iter()
        .any(|t| t.dtype() != DType::F32 || !t.device().is_cpu() || !t.is_contiguous())
    {
        return Ok(None);
    }
    let d = Dims::of(q, k, v, bias)?;
    let sc = Scaling::new(scale, softcap);
    if [q, k, v].iter().any(|t| t.track_op()) {
        if keep || bias.track_op() {
            return Ok(None);
        }
        let op = Trainable {
            bias: bias.clone(),
            d,
            sc,
        };
        return Ok(Some(Attended {
            z: q.apply_op3(k, v, op)?,
            kept: None,
        }));
    }
    if bias.track_op() {
        return Ok(None);
    }
    let guards: Vec<_> = all.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(4);
    for (s, l) in &guards {
        match (&**s, l.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(data)), Some((a, e))) => slices.push(&data[a..e]),
            _ => return Ok(None),
        }
    }
    let (z, kept) = forward(slices[0], slices[1], slices[2], slices[3], d, sc, keep);
    drop(guards);
    let (b, p, h, dh, kl) = (d.b, d.p, d.h, d.dh, d.kl);
    let kept = match kept {
        Some((s, pat)) => Some((
            Tensor::from_vec(s, (b, h, p, kl), q.device())?,
            Tensor::from_vec(pat, (b, h, p, kl), q.device())?,
        )),
        None => None,
    };
    Ok(Some(Attended {
        z: Tensor::from_vec(z, (b, p, h, dh), q.device())?,
        kept,
    }))
}

/// The scores and the pattern, `[b, h, p, kl]` each, as flat buffers.
type Kept = (Vec<f32>, Vec<f32>);

/// [`fused`]'s arithmetic on contiguous slices: `z`, and with `keep` the scores and pattern.
fn forward(
    qs: &[f32],
    ks: &[f32],
    vs: &[f32],
    bs: &[f32],
    d: Dims,
    sc: Scaling,
    keep: bool,
) -> (Vec<f32>, Option<Kept>) {
    let Dims {
        b,
        p,
        h,
        dh,
        kl,
        kvh,
        bias_rows,
    } = d;
    let rep = h / kvh;
    let visible = visible_lengths(bs, kl);
    let len = b * p * h * dh;
    let mut z: Vec<f32> = Vec::with_capacity(len);
    let out = Out(z.as_mut_ptr());
    let kept_len = if keep { b * h * p * kl } else { 0 };
    let mut kept_scores: Vec<f32> = Vec::with_capacity(kept_len);
    let mut kept_pattern: Vec<f32> = Vec::with_capacity(kept_len);
    let (kept_s, kept_p) = (
        Out(kept_scores.as_mut_ptr()),
        Out(kept_pattern.as_mut_ptr()),
    );
    (0..b * kvh).into_par_iter().for_each(|task| {
        let (bi, g) = (task / kvh, task % kvh);
        let m = rep * p;
        let qg = gather_group(qs, d, bi, g);
        // The group's scores and pattern: the task's own buffers, or (keep) its heads' rows of
        // the kept `[b, h, p, kl]` tensors, which are contiguous.
        let (mut own_s, mut own_p) = (Vec::new(), Vec::new());
        let (scores, pattern): (&mut [MaybeUninit<f32>], &mut [MaybeUninit<f32>]) = if keep {
            let at = (bi * h + g * rep) * p * kl;
            // SAFETY: the rows of heads g·rep..(g + 1)·rep of sequence bi lie inside the kept
            // buffers' capacity and belong to this task alone.
            unsafe {
                (
                    std::slice::from_raw_parts_mut(kept_s.at(at).cast(), m * kl),
                    std::slice::from_raw_parts_mut(kept_p.at(at).cast(), m * kl),
                )
            }
        } else {
            own_s.resize(m * kl, MaybeUninit::<f32>::uninit());
            own_p.resize(m * kl, MaybeUninit::<f32>::uninit());
            (&mut own_s[..], &mut own_p[..])
        };
        let kv0 = (bi * kl * kvh + g) * dh;
        let kv_rs = (kvh * dh) as isize;
        let mut zg: Vec<f32> = Vec::with_capacity(m * dh);
        // SAFETY (both products): every pointer and stride stays inside its buffer — `qg`
        // m × dh, key/value rows 0..kl of kv head g, `scores` and `pattern` m × kl, `zg`
        // m × dh (its capacity).
        unsafe {
            // scores = q kᵀ: [m, dh] · [dh, kl] (kᵀ read through k's strides).
            product(
                (m, kl, dh),
                scores.as_mut_ptr().cast::<f32>(),
                kl,
                (qg.as_ptr(), dh as isize, 1),
                (ks.as_ptr().add(kv0), 1, kv_rs),
            );
        }
        // SAFETY: the product wrote every element of `scores`.
        let scores: &mut [f32] = unsafe { &mut *(scores as *mut [MaybeUninit<f32>] as *mut [f32]) };
        let bias_b = if bias_rows == 1 { 0 } else { bi };
        let bias = &bs[bias_b * p * kl..][..p * kl];
        let visible = &visible[bias_b * p..][..p];
        let rows_of = scores
            .chunks_exact_mut(kl)
            .zip(pattern.chunks_exact_mut(kl))
            .enumerate();
        for (row, (s, out)) in rows_of {
            let i = row % p;
            let (bias, len) = (&bias[i * kl..][..kl], visible[i]);
            // Kept scores are whole rows (the masked tail is −∞, as composed).
            let formed = if keep { kl } else { len };
            for (s, &m) in s[..formed].iter_mut().zip(bias) {
                *s = sc.apply(*s) + m;
            }
            crate::kernels::softmax_rows(&s[..len], len, &mut out[..len]);
            out[len..].iter_mut().for_each(|o| {
                o.write(0.0);
            });
        }
        // SAFETY: as above; every element of `pattern` was written (softmax or zero), and the
        // product writes all m × dh values of `zg`.
        unsafe {
            // z = pattern · v: [m, kl] · [kl, dh].
            product(
                (m, dh, kl),
                zg.as_mut_ptr(),
                dh,
                (pattern.as_ptr().cast::<f32>(), kl as isize, 1),
                (vs.as_ptr().add(kv0), kv_rs, 1),
            );
            zg.set_len(m * dh);
        }
        // SAFETY: the rows of the group's heads of sequence bi are this task's alone.
        unsafe { scatter_group(&zg, out, d, bi, g) };
    });
    // SAFETY: the tasks cover every (sequence, head, query row) once and each wrote its dh
    // values of z and (keep) its rows of scores and pattern.
    unsafe {
        z.set_len(len);
        kept_scores.set_len(kept_len);
        kept_pattern.set_len(kept_len);
    }
    (z, keep.then_some((kept_scores, kept_pattern)))
}

/// The gradients of [`fused`]'s `z` with respect to q, k and v, given `dz` (`[b, p, h, dh]`,
/// contiguous): per (sequence, kv group), the pattern `P` recomputed as the forward forms it,
/// then `dP = dz vᵀ`, `dS = P ⊙ (dP − Σ_j P_j dP_j)` (the softmax's backward; zero where
/// masked), times `1 − tanh²` of the capped score under a soft cap and `1 / scale`;
/// `dq = dS k`, `dk = dSᵀ q` (summed over the group's query heads), `dv = Pᵀ dz`. Every
/// (sequence, kv group) writes its own rows of dq, dk and dv.
fn backward(
    qs: &[f32],
    ks: &[f32],
    vs: &[f32],
    bs: &[f32],
    dzs: &[f32],
    d: Dims,
    sc: Scaling,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims {
        b,
        p,
        h,
        dh,
        kl,
        kvh,
        bias_rows,
    } = d;
    let rep = h / kvh;
    let visible = visible_lengths(bs, kl);
    // Written by the tasks, not zero-filled first: every row of each is one task's.
    let (q_len, kv_len) = (b * p * h * dh, b * kl * kvh * dh);
    let mut dq: Vec<f32> = Vec::with_capacity(q_len);
    let mut dk: Vec<f32> = Vec::with_capacity(kv_len);
    let mut dv: Vec<f32> = Vec::with_capacity(kv_len);
    let (oq, ok, ov) = (
        Out(dq.as_mut_ptr()),
        Out(dk.as_mut_ptr()),
        Out(dv.as_mut_ptr()),
    );
    (0..b * kvh).into_par_iter().for_each(|task| {
        let (bi, g) = (task / kvh, task % kvh);
        let m = rep * p;
        let qg = gather_group(qs, d, bi, g);
        let dzg = gather_group(dzs, d, bi, g);
        let kv0 = (bi * kl * kvh + g) * dh;
        let kv_rs = (kvh * dh) as isize;
        let mut s = vec![0f32; m * kl];
        let mut dp = vec![0f32; m * kl];
        // SAFETY (every product below): the pointers and strides stay inside their buffers —
        // `qg`, `dzg` m × dh, key/value rows 0..kl of kv head g, `s` and `dp` m × kl, the
        // outputs their sizes.
        unsafe {
            // S = q kᵀ, dP = dz vᵀ: [m, dh] · [dh, kl].
            product(
                (m, kl, dh),
                s.as_mut_ptr(),
                kl,
                (qg.as_ptr(), dh as isize, 1),
                (ks.as_ptr().add(kv0), 1, kv_rs),
            );
            product(
                (m, kl, dh),
                dp.as_mut_ptr(),
                kl,
                (dzg.as_ptr(), dh as isize, 1),
                (vs.as_ptr().add(kv0), 1, kv_rs),
            );
        }
        let bias_b = if bias_rows == 1 { 0 } else { bi };
        let bias = &bs[bias_b * p * kl..][..p * kl];
        let visible = &visible[bias_b * p..][..p];
        // `s` becomes the pattern P and `dp` the score gradient dS, row by row.
        let mut x = vec![0f32; kl];
        let mut pr = vec![0f32; kl];
        for (row, (s, dp)) in s
            .chunks_exact_mut(kl)
            .zip(dp.chunks_exact_mut(kl))
            .enumerate()
        {
            let i = row % p;
            let (bias, len) = (&bias[i * kl..][..kl], visible[i]);
            for ((x, &raw), &m) in x[..len].iter_mut().zip(&s[..len]).zip(bias) {
                *x = sc.apply(raw) + m;
            }
            let out = &mut pr[..len];
            // SAFETY: `softmax_rows` only writes f32 values into its output.
            let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
            crate::kernels::softmax_rows(&x[..len], len, out);
            let dot: f32 = pr[..len].iter().zip(&dp[..len]).map(|(a, b)| a * b).sum();
            for j in 0..len {
                let mut ds = pr[j] * (dp[j] - dot);
                if let Some((inv_cap, _)) = sc.cap {
                    let t = (s[j] * sc.inv_scale * inv_cap).tanh();
                    ds *= 1.0 - t * t;
                }
                dp[j] = ds * sc.inv_scale;
                s[j] = pr[j];
            }
            s[len..].fill(0.0);
            dp[len..].fill(0.0);
        }
        let (pat, ds) = (&s, &dp);
        let mut dqg = vec![0f32; m * dh];
        let mut dkg = vec![0f32; kl * dh];
        let mut dvg = vec![0f32; kl * dh];
        // SAFETY: as above; `ds` and `pat` m × kl, the outputs m × dh and kl × dh.
        unsafe {
            // dq = dS k: [m, kl] · [kl, dh].
            product(
                (m, dh, kl),
                dqg.as_mut_ptr(),
                dh,
                (ds.as_ptr(), kl as isize, 1),
                (ks.as_ptr().add(kv0), kv_rs, 1),
            );
            // dk = dSᵀ q, dv = Pᵀ dz: [kl, m] · [m, dh].
            product(
                (kl, dh, m),
                dkg.as_mut_ptr(),
                dh,
                (ds.as_ptr(), 1, kl as isize),
                (qg.as_ptr(), dh as isize, 1),
            );
            product(
                (kl, dh, m),
                dvg.as_mut_ptr(),
                dh,
                (pat.as_ptr(), 1, kl as isize),
                (dzg.as_ptr(), dh as isize, 1),
            );
        }
        // SAFETY: the rows of the group's heads of sequence bi are this task's alone.
        unsafe { scatter_group(&dqg, oq, d, bi, g) };
        for j in 0..kl {
            let at = ((bi * kl + j) * kvh + g) * dh;
            // SAFETY: key row j of kv head g of sequence bi is this task's alone.
            unsafe {
                std::ptr::copy_nonoverlapping(dkg[j * dh..].as_ptr(), ok.at(at), dh);
                std::ptr::copy_nonoverlapping(dvg[j * dh..].as_ptr(), ov.at(at), dh);
            }
        }
    });
    // SAFETY: the tasks cover every (sequence, kv group): each wrote the rows of its query
    // heads in dq and its key and value rows in dk and dv, so every value is written.
    unsafe {
        dq.set_len(q_len);
        dk.set_len(kv_len);
        dv.set_len(kv_len);
    }
    (dq, dk, dv)
}

/// The contiguous f32 values of a CPU tensor's storage under `layout`.
fn values_of<'a>(s: &'a CpuStorage, l: &candle_core::Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((a, e))) => Ok(&data[a..e]),
        _ => candle_core::bail!("interplab-attention: expects contiguous f32 inputs"),
    }
}

/// [`fused`] as an op of the autograd graph, for inputs that need gradients.
struct Trainable {
    bias: Tensor,
    d: Dims,
    sc: Scaling,
}

impl Trainable {
    /// `f` on the bias's values.
    fn with_bias<R>(
        &self,
        f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
    ) -> candle_core::Result<R> {
        let (s, l) = self.bias.storage_and_layout();
        match &*s {
            Storage::Cpu(c) => f(values_of(c, l)?),
            _ => candle_core::bail!("interplab-attention: the bias is not on the CPU"),
        }
    }
}

impl candle_core::CustomOp3 for Trainable {
    fn name(&self) -> &'static str {
        "interplab-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &candle_core::Layout,
        s2: &CpuStorage,
        l2: &candle_core::Layout,
        s3: &CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(CpuStorage, candle_core::Shape)> {
        let (q, k, v) = (values_of(s1, l1)?, values_of(s2, l2)?, values_of(s3, l3)?);
        let z = self.with_bias(|bs| Ok(forward(q, k, v, bs, self.d, self.sc, false).0))?;
        let d = self.d;
        Ok((CpuStorage::F32(z), (d.b, d.p, d.h, d.dh).into()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _z: &Tensor,
        dz: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dz = dz.contiguous()?;
        let ts = [q, k, v, &dz];
        let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
        let mut sl = Vec::with_capacity(4);
        for (s, l) in &guards {
            match &**s {
                Storage::Cpu(c) => sl.push(values_of(c, l)?),
                _ => candle_core::bail!("interplab-attention: expects tensors on the CPU"),
            }
        }
        let (dq, dk, dv) =
            self.with_bias(|bs| Ok(backward(sl[0], sl[1], sl[2], bs, sl[3], self.d, self.sc)))?;
        drop(guards);
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), q.device())?),
            Some(Tensor::from_vec(dk, k.shape(), k.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The definition, in f64 loops: for each sequence, query head and row,
    /// `softmax_j(cap(q·k_j / scale) + bias_j)` weighting the value rows.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        bias: &[f32],
        (b, p, h, dh, kl, kvh, bias_rows): (usize, usize, usize, usize, usize, usize, usize),
        scale: f64,
        cap: Option<f64>,
    ) -> Vec<f64> {
        let mut z = vec![0f64; b * p * h * dh];
        for bi in 0..b {
            for hi in 0..h {
                let g = hi / (h / kvh);
                for i in 0..p {
                    let qrow = &q[((bi * p + i) * h + hi) * dh..][..dh];
                    let mut s: Vec<f64> = (0..kl)
                        .map(|j| {
                            let krow = &k[((bi * kl + j) * kvh + g) * dh..][..dh];
                            let mut x = qrow
                                .iter()
                                .zip(krow)
                                .map(|(&a, &c)| a as f64 * c as f64)
                                .sum::<f64>()
                                / scale;
                            if let Some(c) = cap {
                                x = (x / c).tanh() * c;
                            }
                            let br = if bias_rows == 1 { 0 } else { bi };
                            x + bias[(br * p + i) * kl + j] as f64
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    s.iter_mut().for_each(|x| *x = (*x - max).exp());
                    let sum: f64 = s.iter().sum();
                    for (j, w) in s.iter().enumerate() {
                        let vrow = &v[((bi * kl + j) * kvh + g) * dh..][..dh];
                        for (d, &x) in vrow.iter().enumerate() {
                            z[((bi * p + i) * h + hi) * dh + d] += w / sum * x as f64;
                        }
                    }
                }
            }
        }
        z
    }

    #[test]
    fn matches_the_definition_across_query_blocks_groups_masks_and_caps() {
        let dev = Device::Cpu;
        // 130 query rows; 4 query heads over 2 kv heads; keys a
        // prefix longer than the queries; per-sequence causal masks with padding.
        let (b, p, h, dh, kvh) = (2, 130, 4, 16, 2);
        let kl = p + 5;
        let q = values(b * p * h * dh, 1);
        let k = values(b * kl * kvh * dh, 2);
        let v = values(b * kl * kvh * dh, 3);
        let mut bias = vec![0f32; b * p * kl];
        for bi in 0..b {
            for i in 0..p {
                for j in 0..kl {
                    let hidden = j > i + 5 || (bi == 1 && j < 9 && j != i + 5);
                    if hidden {
                        bias[(bi * p + i) * kl + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let t = |x: &[f32], s: (usize, usize, usize, usize)| {
            Tensor::from_vec(x.to_vec(), s, &dev).unwrap()
        };
        let (qt, kt, vt) = (
            t(&q, (b, p, h, dh)),
            t(&k, (b, kl, kvh, dh)),
            t(&v, (b, kl, kvh, dh)),
        );
        for (bias_rows, cap) in [(b, None), (1, Some(0.7)), (b, Some(30.0))] {
            let bias = &bias[..bias_rows * p * kl];
            let bt = t(bias, (bias_rows, 1, p, kl));
            let got = fused(&qt, &kt, &vt, &bt, 4.0, cap, false)
                .unwrap()
                .unwrap()
                .z;
            assert_eq!(got.dims(), [b, p, h, dh]);
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let want = reference(
                &q,
                &k,
                &v,
                bias,
                (b, p, h, dh, kl, kvh, bias_rows),
                4.0,
                cap,
            );
            let worst = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0f64, f64::max);
            assert!(worst < 1e-5, "bias rows {bias_rows}, cap {cap:?}: {worst}");
        }
        // Inputs that need gradients and whose scores are kept, or are not contiguous, are left
        // to the composed path.
        let bt = t(&bias, (b, 1, p, kl));
        let qv = Var::from_tensor(&qt).unwrap();
        assert!(fused(qv.as_tensor(), &kt, &vt, &bt, 4.0, None, true)
            .unwrap()
            .is_none());
        let strided = t(&q, (b, h, p, dh)).transpose(1, 2).unwrap();
        assert!(!strided.is_contiguous());
        assert!(fused(&strided, &kt, &vt, &bt, 4.0, None, false)
            .unwrap()
            .is_none());
        // Shapes that do not fit are an error.
        assert!(fused(
            &qt,
            &kt,
            &vt,
            &t(&bias[..p * kl], (1, 1, kl, p)),
            4.0,
            None,
            false
        )
        .is_err());
    }

    /// The composed ops' attention (as `attention_composed` forms it), differentiable.
    fn composed(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        scale: f64,
        cap: Option<f64>,
    ) -> Tensor {
        let (b, p, h, dh) = q.dims4().unwrap();
        let (_, kl, kvh, _) = k.dims4().unwrap();
        let rep = h / kvh;
        let qh = q.transpose(1, 2).unwrap().contiguous().unwrap();
        let kh = k.transpose(1, 2).unwrap().contiguous().unwrap();
        let vh = v.transpose(1, 2).unwrap().contiguous().unwrap();
        let qg = qh.reshape((b, kvh, rep * p, dh)).unwrap();
        let s = qg.matmul(&kh.transpose(2, 3).unwrap()).unwrap();
        let mut s = (s.reshape((b, h, p, kl)).unwrap() / scale).unwrap();
        if let Some(c) = cap {
            s = ((s / c).unwrap().tanh().unwrap() * c).unwrap();
        }
        let s = s.broadcast_add(bias).unwrap();
        let pat = crate::model::ops::softmax_last_dim(&s).unwrap();
        pat.reshape((b, kvh, rep * p, kl))
            .unwrap()
            .matmul(&vh)
            .unwrap()
            .reshape((b, h, p, dh))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    }

    /// The fused op's gradients (inputs that need them: fine-tuning) against autograd through
    /// the composed ops, for grouped query heads, causal and padding masks, one bias for all
    /// sequences or one each, with and without a soft cap: `z` and the gradients of
    /// `Σ z ⊙ w` with respect to q, k and v within 1e-5 of their largest entry.
    #[test]
    fn gradients_match_autograd_through_the_composed_ops() {
        let dev = Device::Cpu;
        let (b, p, h, dh, kvh) = (2, 20, 4, 16, 2);
        let kl = p + 3;
        let mut bias = vec![0f32; b * p * kl];
        for bi in 0..b {
            for i in 0..p {
                for j in 0..kl {
                    if j > i + 3 || (bi == 1 && j < 4 && j != i + 3) {
                        bias[(bi * p + i) * kl + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let var = |n: usize, seed: u64, s: (usize, usize, usize, usize)| {
            Var::from_tensor(&Tensor::from_vec(values(n, seed), s, &dev).unwrap()).unwrap()
        };
        let q = var(b * p * h * dh, 11, (b, p, h, dh));
        let k = var(b * kl * kvh * dh, 12, (b, kl, kvh, dh));
        let v = var(b * kl * kvh * dh, 13, (b, kl, kvh, dh));
        let w = Tensor::from_vec(values(b * p * h * dh, 14), (b, p, h, dh), &dev).unwrap();
        for (bias_rows, cap) in [(b, None), (1, Some(0.7)), (b, Some(30.0))] {
            let bt = Tensor::from_vec(
                bias[..bias_rows * p * kl].to_vec(),
                (bias_rows, 1, p, kl),
                &dev,
            )
            .unwrap();
            let z1 = fused(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                &bt,
                4.0,
                cap,
                false,
            )
            .unwrap()
            .unwrap()
            .z;
            let z2 = composed(q.as_tensor(), k.as_tensor(), v.as_tensor(), &bt, 4.0, cap);
            let g1 = (&z1 * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&z2 * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let close = |a: &Tensor, c: &Tensor, what: &str| {
                let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
                let c: Vec<f32> = c.flatten_all().unwrap().to_vec1().unwrap();
                let scale = c.iter().fold(0f32, |m, x| m.max(x.abs()));
                let worst = a
                    .iter()
                    .zip(&c)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(scale > 0.0, "{what}: all zero");
                assert!(
                    worst <= 1e-5 * scale,
                    "bias rows {bias_rows}, cap {cap:?}, {what}: {worst} of {scale}"
                );
            };
            close(&z1, &z2, "z");
            for (t, what) in [(&q, "dq"), (&k, "dk"), (&v, "dv")] {
                close(
                    g1.get(t.as_tensor()).unwrap(),
                    g2.get(t.as_tensor()).unwrap(),
                    what,
                );
            }
        }
    }
}
