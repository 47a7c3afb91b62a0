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

/// `z = softmax(cap(q kᵀ / scale) + bias) v` for `q` `[b, p, h, dh]`, `k` and `v`
/// `[b, kl, kvh, dh]` (query head `i` reads kv head `i / (h / kvh)`), `bias` `[1 or b, 1, p,
/// kl]`: `z` `[b, p, h, dh]`; with `keep` also the scores and the pattern, written in place
/// of the task's buffers. `None` when the inputs are not contiguous f32 CPU tensors or any of
/// them needs a gradient (the caller then composes the ops).
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
    if all.iter().any(|t| {
        t.dtype() != DType::F32 || !t.device().is_cpu() || !t.is_contiguous() || t.track_op()
    }) {
        return Ok(None);
    }
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
    let rep = h / kvh;
    let guards: Vec<_> = all.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(4);
    for (s, l) in &guards {
        match (&**s, l.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(data)), Some((a, e))) => slices.push(&data[a..e]),
            _ => return Ok(None),
        }
    }
    let (qs, ks, vs, bs) = (slices[0], slices[1], slices[2], slices[3]);
    // Each bias row's length up to its last visible key: a causal row's masked tail needs no
    // exponentials (its pattern entries are exactly 0, and zeros change no sum, so the visible
    // entries come out the same as over the whole row).
    let visible: Vec<usize> = bs
        .chunks_exact(kl)
        .map(|row| {
            row.iter()
                .rposition(|&x| x != f32::NEG_INFINITY)
                .map_or(kl, |j| j + 1)
        })
        .collect();
    let inv_scale = (1.0 / scale) as f32;
    let cap = softcap.map(|c| ((1.0 / c) as f32, c as f32));

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
        // The group's query rows, head-major (`[rep · p, dh]`), as the composed path lays them
        // out: its products then have the composed ones' shapes exactly, and gemm's choice of
        // kernel (which can change the rounding of a row) is the same.
        let m = rep * p;
        let mut qg: Vec<f32> = Vec::with_capacity(m * dh);
        for r in 0..rep {
            for i in 0..p {
                qg.extend_from_slice(&qs[((bi * p + i) * h + g * rep + r) * dh..][..dh]);
            }
        }
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
                let mut x = *s * inv_scale + 0.0;
                if let Some((inv_cap, cap)) = cap {
                    x = (x * inv_cap + 0.0).tanh() * cap + 0.0;
                }
                *s = x + m;
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
        // Each row of z to its place in `[b, p, h, dh]`.
        for (row, zrow) in zg.chunks_exact(dh).enumerate() {
            let (r, i) = (row / p, row % p);
            // SAFETY: row i of head g·rep + r of sequence bi is this task's alone, inside z.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    zrow.as_ptr(),
                    out.at(((bi * p + i) * h + g * rep + r) * dh),
                    dh,
                )
            };
        }
    });
    drop(guards);
    // SAFETY: the tasks cover every (sequence, head, query row) once and each wrote its dh
    // values of z and (keep) its rows of scores and pattern.
    unsafe {
        z.set_len(len);
        kept_scores.set_len(kept_len);
        kept_pattern.set_len(kept_len);
    }
    let kept = if keep {
        Some((
            Tensor::from_vec(kept_scores, (b, h, p, kl), q.device())?,
            Tensor::from_vec(kept_pattern, (b, h, p, kl), q.device())?,
        ))
    } else {
        None
    };
    Ok(Some(Attended {
        z: Tensor::from_vec(z, (b, p, h, dh), q.device())?,
        kept,
    }))
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
        // Inputs that need gradients, or are not contiguous, are left to the composed path.
        let bt = t(&bias, (b, 1, p, kl));
        let qv = Var::from_tensor(&qt).unwrap();
        assert!(fused(qv.as_tensor(), &kt, &vt, &bt, 4.0, None, false)
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
}
