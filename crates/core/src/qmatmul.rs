//! Products of a few activation rows with a matrix kept as GGML blocks, reading each block once
//! and never writing the dequantised matrix to memory: the decode step of generation (one or a
//! few new positions per forward) with [`crate::loader::WeightStorage::Quantized`].
//!
//! Two definitions, by block type:
//! - **Q4_1, Q8_0 and Q5_0** (SmolLM2's blocks; most of Qwen2.5's): each block is dequantised
//!   in registers with the same arithmetic as the dense load (`q * d + m`, `q * d`,
//!   `(q − 16) * d`), then multiplied with the f32 activations and summed in f32. The weights
//!   are exactly the dense weights; only the order of the f32 summation differs from the dense
//!   matmul (differences of order 1e-6 relative). Q4_1 and Q8_0 have AVX-512 and AVX2 kernels;
//!   Q5_0 the portable loops, compiled for AVX2 where the CPU has it.
//! - **Every other type** (Qwen's K-quants): candle's quantised kernels, which quantise each
//!   activation row to 8-bit blocks first (Q8_K or Q8_0/Q8_1, as llama.cpp does) and take integer
//!   dot products. This changes the result by about the 8-bit rounding of the activations
//!   (relative error of order 1e-3 on a row's outputs), stated where it is measured
//!   (`docs/performance.md`).

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use rayon::prelude::*;

use crate::{Error, Result};

/// Activation rows processed together against one weight row (kept in registers).
const ROW_GROUP: usize = 4;

/// How far ahead of the block being multiplied the kernels prefetch, in bytes. The hardware
/// prefetcher stops at 4 KiB page boundaries; without this a decode step waited on memory.
/// Intel Xeon (AMX), `interplab bench --what generate-q`, 1 / 2 threads, tokens/s: AVX-512
/// kernel with no prefetch 27.5 / 48.8, 512 bytes ahead 46 / 73, 1,024 64 / 96, 2,048 69 / 101,
/// 4,096 68 / 101; the AVX2 kernel at 512 bytes 52 / 76, at 2,048 62 / 87.
const PREFETCH: usize = 2048;

/// The f32 path's block types: `(weights, bytes)` per block.
fn f32_path_block(dtype: GgmlDType) -> Option<(usize, usize)> {
    match dtype {
        GgmlDType::Q4_1 => Some((32, 20)),
        GgmlDType::Q8_0 => Some((32, 34)),
        GgmlDType::Q5_0 => Some((32, 22)),
        GgmlDType::Q4K => Some((256, 144)),
        GgmlDType::Q6K => Some((256, 210)),
        _ => None,
    }
}

/// Whether [`matmul_rows`] multiplies `dtype`'s blocks with their exact dense values
/// (Q4_1, Q8_0, Q5_0, Q4_K, Q6_K) rather than through 8-bit activations.
pub(crate) fn exact_rows(dtype: GgmlDType) -> bool {
    f32_path_block(dtype).is_some()
}

/// `y = x @ Wᵀ` for a row-major `x` `[m, cols]` and a GGML block matrix `W` `[rows, cols]`
/// (`bytes`, whole blocks per row); returns `y` `[m, rows]`. `qmatmul` is candle's kernel for
/// the types without an f32 path (built by [`candle_qmatmul`]).
pub(crate) fn matmul_rows(
    dtype: GgmlDType,
    bytes: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
    m: usize,
    qmatmul: Option<&QMatMul>,
    scales: &[f32],
) -> Result<Vec<f32>> {
    if x.len() != m * cols {
        return Err(Error::Input(format!(
            "{} activations do not make {m} rows of {cols}",
            x.len()
        )));
    }
    let Some((block_elems, block_bytes)) = f32_path_block(dtype) else {
        let q = qmatmul.ok_or_else(|| {
            Error::Unsupported(format!("no quantised kernel was built for {dtype:?}"))
        })?;
        let xt = Tensor::from_slice(x, (m, cols), &Device::Cpu)?;
        return Ok(q.forward(&xt)?.flatten_all()?.to_vec1()?);
    };
    let row_bytes = cols / block_elems * block_bytes;
    let per_row = scales_per_block(dtype) * cols / 32;
    if cols % block_elems != 0 || bytes.len() != rows * row_bytes {
        return Err(Error::Unsupported(format!(
            "{dtype:?}: {} bytes are not {rows} rows of {cols} elements",
            bytes.len()
        )));
    }
    if scales.len() != rows * per_row {
        return Err(Error::Input(format!(
            "{dtype:?}: {} block scales for {rows} rows of {cols} elements",
            scales.len()
        )));
    }
    // Each activation row's block sums Σx, for Q4_1's minimum term (computed once, shared by
    // every task).
    let xsum: Vec<f32> = if dtype == GgmlDType::Q4_1 {
        x.chunks_exact(32).map(|c| c.iter().sum()).collect()
    } else {
        Vec::new()
    };
    // Output rows per task: a few tasks per thread so uneven cores even out.
    let tasks = rayon::current_num_threads() * 4;
    let chunk = rows.div_ceil(tasks).clamp(16, rows.max(16));
    // Transposed result `[rows, m]`, one chunk of weight rows per task.
    let mut yt = vec![0f32; rows * m];
    let task = |(t, out): (usize, &mut [f32])| {
        let first = t * chunk;
        let n = out.len() / m;
        let w = &bytes[first * row_bytes..(first + n) * row_bytes];
        let sc = &scales[first * per_row..(first + n) * per_row];
        rows_dispatch(dtype, w, row_bytes, x, m, cols, out, (sc, &xsum));
    };
    yt.par_chunks_mut(chunk * m).enumerate().for_each(task);
    if m == 1 {
        return Ok(yt);
    }
    let mut y = vec![0f32; m * rows];
    for (o, vals) in yt.chunks_exact(m).enumerate() {
        for (r, &v) in vals.iter().enumerate() {
            y[r * rows + o] = v;
        }
    }
    Ok(y)
}

/// The little-endian f16 at byte `i` of `b`, as f32 (exactly).
#[inline(always)]
fn f16(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// f32 values per block in [`block_scales`]: Q4_1's scale and minimum, Q8_0's scale, none
/// for the types only the portable loops read.
fn scales_per_block(dtype: GgmlDType) -> usize {
    match dtype {
        GgmlDType::Q4_1 => 2,
        GgmlDType::Q8_0 => 1,
        _ => 0,
    }
}

/// Every block's f16 scale as f32 (and, for Q4_1, the centred minimum `m + 8d`), in block
/// order: `[d, m + 8d]` per Q4_1 block, `[d]` per Q8_0 block; empty for the other types.
/// Converted once per matrix so that the decode kernels do not convert them on every product
/// (0.25 bytes per weight for Q4_1, 0.125 for Q8_0).
pub(crate) fn block_scales(dtype: GgmlDType, bytes: &[u8]) -> Vec<f32> {
    let per = scales_per_block(dtype);
    let Some((_, block_bytes)) = f32_path_block(dtype).filter(|_| per > 0) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(bytes.len() / block_bytes * per);
    for b in bytes.chunks_exact(block_bytes) {
        let d = f16(b, 0);
        out.push(d);
        if per == 2 {
            out.push(f16(b, 2) + 8.0 * d);
        }
    }
    out
}

/// candle's quantised matmul for a block type without an f32 path, `None` for the others.
pub(crate) fn candle_qmatmul(
    dtype: GgmlDType,
    bytes: &[u8],
    (rows, cols): (usize, usize),
) -> Result<Option<QMatMul>> {
    if f32_path_block(dtype).is_some() {
        return Ok(None);
    }
    let storage = QStorage::from_data(std::borrow::Cow::Borrowed(bytes), &Device::Cpu, dtype)?;
    let q = QTensor::new(storage, (rows, cols))?;
    Ok(Some(QMatMul::from_qtensor(q)?))
}

/// The rows of `w` against `x` with the fastest kernel the CPU has; `prepared` is those rows'
/// [`block_scales`] and the activations' block sums (used by the AVX2 kernel).
#[allow(clippy::too_many_arguments)]
fn rows_dispatch(
    dtype: GgmlDType,
    w: &[u8],
    row_bytes: usize,
    x: &[f32],
    m: usize,
    cols: usize,
    out: &mut [f32],
    prepared: (&[f32], &[f32]),
) {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("f16c")
            && std::arch::is_x86_feature_detected!("fma");
        let hand_written = match dtype {
            GgmlDType::Q4_1 | GgmlDType::Q8_0 => true,
            GgmlDType::Q5_0 => avx512,
            _ => false,
        };
        if !hand_written {
            // No hand-written kernel: the portable loops, vectorised for AVX2 where present.
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { rows_any_avx2(dtype, w, row_bytes, x, m, cols, out) };
            } else {
                rows_any(dtype, w, row_bytes, x, m, cols, out);
            }
            return;
        }
        if avx512 {
            // SAFETY: the CPU has AVX-512F, F16C and FMA.
            unsafe { avx512::rows(dtype, w, row_bytes, x, m, cols, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("f16c")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2, F16C and FMA.
            unsafe { avx2::rows(dtype, w, row_bytes, x, m, cols, out, prepared) };
            return;
        }
    }
    rows_any(dtype, w, row_bytes, x, m, cols, out)
}

/// [`rows_any`] compiled for AVX2: the same operations in the same order, so the same values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_any_avx2(
    dtype: GgmlDType,
    w: &[u8],
    row_bytes: usize,
    x: &[f32],
    m: usize,
    cols: usize,
    out: &mut [f32],
) {
    rows_any(dtype, w, row_bytes, x, m, cols, out)
}

/// `out[o * m + r] = dot(W[o], x[r])` for the weight rows in `w` (portable; the compiler
/// vectorises the 32-lane loops).
#[inline(always)]
fn rows_any(
    dtype: GgmlDType,
    w: &[u8],
    row_bytes: usize,
    x: &[f32],
    m: usize,
    cols: usize,
    out: &mut [f32],
) {
    for (row, ys) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(m)) {
        for (r, y) in ys.iter_mut().enumerate() {
            let xs = &x[r * cols..(r + 1) * cols];
            *y = match dtype {
                GgmlDType::Q4_1 => dot::<Q4_1>(row, xs),
                GgmlDType::Q5_0 => dot::<Q5_0>(row, xs),
                GgmlDType::Q4K => dot::<Q4K>(row, xs),
                GgmlDType::Q6K => dot::<Q6K>(row, xs),
                _ => dot::<Q8_0>(row, xs),
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{GgmlDType, PREFETCH, ROW_GROUP};
    use std::arch::x86_64::*;

    /// As [`super::rows_any`], with explicit AVX-512: each block is dequantised once into
    /// two 16-lane registers and multiplied with up to [`ROW_GROUP`] activation rows.
    #[target_feature(enable = "avx512f,f16c,fma")]
    pub(super) fn rows(
        dtype: GgmlDType,
        w: &[u8],
        row_bytes: usize,
        x: &[f32],
        m: usize,
        cols: usize,
        out: &mut [f32],
    ) {
        for (row, ys) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(m)) {
            let mut r0 = 0;
            while r0 < m {
                let g = ROW_GROUP.min(m - r0);
                let xs = &x[r0 * cols..(r0 + g) * cols];
                let ys = &mut ys[r0..r0 + g];
                match g {
                    1 => group::<1>(dtype, row, xs, cols, ys),
                    2 => group::<2>(dtype, row, xs, cols, ys),
                    3 => group::<3>(dtype, row, xs, cols, ys),
                    _ => group::<4>(dtype, row, xs, cols, ys),
                }
                r0 += g;
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,f16c,fma")]
    fn half(bits: u16) -> __m512 {
        // F16C converts exactly, as `half::f16::to_f32` does.
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        _mm512_set1_ps(_mm_cvtss_f32(v))
    }

    #[inline]
    #[target_feature(enable = "avx512f,f16c,fma")]
    fn group<const G: usize>(
        dtype: GgmlDType,
        row: &[u8],
        xs: &[f32],
        cols: usize,
        ys: &mut [f32],
    ) {
        let bytes = match dtype {
            GgmlDType::Q4_1 => 20,
            GgmlDType::Q5_0 => 22,
            _ => 34,
        };
        let blocks = cols / 32;
        assert!(row.len() >= blocks * bytes && xs.len() >= G * cols && ys.len() >= G);
        let mut acc = [_mm512_setzero_ps(); G];
        let mut acc2 = [_mm512_setzero_ps(); G];
        let rp = row.as_ptr();
        let xp = xs.as_ptr();
        for k in 0..blocks {
            // SAFETY: block k spans bytes [k * bytes, (k + 1) * bytes) of `row` and activations
            // [r * cols + 32k, r * cols + 32k + 32) of `xs`, in bounds by the assert above.
            unsafe {
                let b = rp.add(k * bytes);
                // The rows of a task lie back to back: fetch ahead across page boundaries,
                // where the hardware prefetcher stops.
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH) as *const i8);
                let d = half(u16::from_le_bytes([*b, *b.add(1)]));
                let (lo, hi) = if dtype == GgmlDType::Q5_0 {
                    // Bit j of the 32 high bits is element j's fifth bit: a lane mask.
                    let qh = u32::from_le_bytes([*b.add(2), *b.add(3), *b.add(4), *b.add(5)]);
                    let qs = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.add(6) as *const __m128i));
                    let sixteen = _mm512_set1_epi32(16);
                    let lo = _mm512_and_si512(qs, _mm512_set1_epi32(0x0F));
                    let hi = _mm512_srli_epi32::<4>(qs);
                    let lo = _mm512_mask_or_epi32(lo, qh as u16, lo, sixteen);
                    let hi = _mm512_mask_or_epi32(hi, (qh >> 16) as u16, hi, sixteen);
                    // (q − 16) · d: the dense load's values exactly.
                    (
                        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(lo, sixteen)), d),
                        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(hi, sixteen)), d),
                    )
                } else if dtype == GgmlDType::Q4_1 {
                    let mn = half(u16::from_le_bytes([*b.add(2), *b.add(3)]));
                    let qs = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.add(4) as *const __m128i));
                    let lo = _mm512_cvtepi32_ps(_mm512_and_si512(qs, _mm512_set1_epi32(0x0F)));
                    let hi = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(qs));
                    // q * d + m unfused: the dense load's values exactly.
                    (
                        _mm512_add_ps(_mm512_mul_ps(lo, d), mn),
                        _mm512_add_ps(_mm512_mul_ps(hi, d), mn),
                    )
                } else {
                    let q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(2) as *const __m128i));
                    let q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(18) as *const __m128i));
                    (
                        _mm512_mul_ps(_mm512_cvtepi32_ps(q0), d),
                        _mm512_mul_ps(_mm512_cvtepi32_ps(q1), d),
                    )
                };
                for r in 0..G {
                    let xr = xp.add(r * cols + k * 32);
                    acc[r] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xr), acc[r]);
                    acc2[r] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xr.add(16)), acc2[r]);
                }
            }
        }
        for r in 0..G {
            ys[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r], acc2[r]));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{scales_per_block, GgmlDType, PREFETCH, ROW_GROUP};
    use std::arch::x86_64::*;

    /// As [`super::rows_any`], with explicit AVX2 (Zen 2/3 and older Intel have no AVX-512):
    /// each block is dequantised once into four 8-lane registers and multiplied with up to
    /// [`ROW_GROUP`] activation rows. `(scales, xsum)`: the rows' [`super::block_scales`]
    /// and, for Q4_1, each activation row's block sums `Σ x`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,f16c,fma")]
    pub(super) fn rows(
        dtype: GgmlDType,
        w: &[u8],
        row_bytes: usize,
        x: &[f32],
        m: usize,
        cols: usize,
        out: &mut [f32],
        (scales, xsum): (&[f32], &[f32]),
    ) {
        let q4 = dtype == GgmlDType::Q4_1;
        let blocks = cols / 32;
        let per_row = blocks * scales_per_block(dtype);
        for ((row, ys), sc) in w
            .chunks_exact(row_bytes)
            .zip(out.chunks_exact_mut(m))
            .zip(scales.chunks_exact(per_row))
        {
            let mut r0 = 0;
            while r0 < m {
                let g = ROW_GROUP.min(m - r0);
                let xs = &x[r0 * cols..(r0 + g) * cols];
                let sums = if q4 {
                    &xsum[r0 * blocks..(r0 + g) * blocks]
                } else {
                    &[][..]
                };
                let ys = &mut ys[r0..r0 + g];
                match g {
                    1 => group::<1>(q4, row, xs, sums, cols, ys, sc),
                    2 => group::<2>(q4, row, xs, sums, cols, ys, sc),
                    3 => group::<3>(q4, row, xs, sums, cols, ys, sc),
                    _ => group::<4>(q4, row, xs, sums, cols, ys, sc),
                }
                r0 += g;
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,f16c,fma")]
    fn sum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// One weight row against `G` activation rows. Q4_1 is summed factored and centred,
    /// `d·Σ (q−8)·x + (m+8d)·Σ x` per block (`xsum` holds each activation row's block sums
    /// `Σ x`; `m + 8d`, about the block's mean weight, is precomputed in [`super::block_scales`]),
    /// and Q8_0 as `d·Σ q·x`: the same weights as the dense load, reassociated in f32. Centring
    /// matters: uncentred, the two terms are each about 8× the result and cancel, which moved
    /// SmolLM2's layer-20 activations by 1.3e-5 of their largest value against dense.
    #[inline]
    #[target_feature(enable = "avx2,f16c,fma")]
    fn group<const G: usize>(
        q4: bool,
        row: &[u8],
        xs: &[f32],
        xsum: &[f32],
        cols: usize,
        ys: &mut [f32],
        sc: &[f32],
    ) {
        let bytes = if q4 { 20 } else { 34 };
        let per = if q4 { 2 } else { 1 }; // scales_per_block
        let blocks = cols / 32;
        assert!(row.len() >= blocks * bytes && xs.len() >= G * cols && ys.len() >= G);
        assert!(sc.len() >= per * blocks && (!q4 || xsum.len() >= G * blocks));
        let mut acc = [_mm256_setzero_ps(); G];
        let mut acc2 = [_mm256_setzero_ps(); G];
        let rp = row.as_ptr();
        let xp = xs.as_ptr();
        // The block's 32 weights as integers in f32: lanes 0-7, 8-15, 16-23, 24-31.
        // SAFETY (both closures): block k spans bytes [k * bytes, (k + 1) * bytes) of `row`,
        // in bounds by the assert above for k < blocks.
        let ints = |k: usize| -> [__m256; 4] {
            unsafe {
                let b = rp.add(k * bytes);
                if q4 {
                    let q0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.add(4) as *const __m128i));
                    let q1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.add(12) as *const __m128i));
                    let low = _mm256_set1_epi32(0x0F);
                    // Centred, q − 8 in [−8, 7], to pair with the minimum term m + 8d.
                    let c =
                        |q: __m256i| _mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(8)));
                    [
                        c(_mm256_and_si256(q0, low)),
                        c(_mm256_and_si256(q1, low)),
                        c(_mm256_srli_epi32::<4>(q0)),
                        c(_mm256_srli_epi32::<4>(q1)),
                    ]
                } else {
                    let f = |o: usize| {
                        let q =
                            _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.add(2 + o) as *const __m128i));
                        _mm256_cvtepi32_ps(q)
                    };
                    [f(0), f(8), f(16), f(24)]
                }
            }
        };
        // Σ q·x over block k for activation row r; x in bounds as `r < G`, `k < blocks`.
        let dot = |w: &[__m256; 4], r: usize, k: usize| -> __m256 {
            unsafe {
                let xr = xp.add(r * cols + k * 32);
                let mut t = _mm256_mul_ps(w[0], _mm256_loadu_ps(xr));
                t = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xr.add(8)), t);
                t = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xr.add(16)), t);
                _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xr.add(24)), t)
            }
        };
        // Two blocks per step, into two accumulators, to halve the dependency chain.
        let mut k = 0;
        while k + 1 < blocks {
            // Ask for the blocks ahead (wrapping into the next weight row); a prefetch never
            // faults, so past the end is harmless.
            _mm_prefetch::<_MM_HINT_T0>(rp.wrapping_add(k * bytes + PREFETCH) as *const i8);
            let (w0, w1) = (ints(k), ints(k + 1));
            let (d0, d1) = (
                _mm256_set1_ps(sc[per * k]),
                _mm256_set1_ps(sc[per * (k + 1)]),
            );
            for r in 0..G {
                acc[r] = _mm256_fmadd_ps(dot(&w0, r, k), d0, acc[r]);
                acc2[r] = _mm256_fmadd_ps(dot(&w1, r, k + 1), d1, acc2[r]);
            }
            k += 2;
        }
        if k < blocks {
            let (w0, d0) = (ints(k), _mm256_set1_ps(sc[per * k]));
            for r in 0..G {
                acc[r] = _mm256_fmadd_ps(dot(&w0, r, k), d0, acc[r]);
            }
        }
        for r in 0..G {
            let mut y = sum(_mm256_add_ps(acc[r], acc2[r]));
            if q4 {
                let xs_r = &xsum[r * blocks..(r + 1) * blocks];
                y += (0..blocks).map(|k| sc[2 * k + 1] * xs_r[k]).sum::<f32>();
            }
            ys[r] = y;
        }
    }

    #[cfg(test)]
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("fma")
    }
}

/// A block type dequantised 32 weights at a time.
/// A block type's exact dequantisation, as ggml, candle and the dense load compute it.
trait Block {
    /// Weights per block (32, or 256 for the K-quants).
    const ELEMS: usize;
    const BYTES: usize;
    /// The block's `ELEMS` weights into `w[..ELEMS]`.
    fn dequantize(b: &[u8], w: &mut [f32]);
}

struct Q4_1;
struct Q8_0;
struct Q5_0;
struct Q4K;
struct Q6K;

impl Block for Q4_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 20;
    /// f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles (low: elements 0–15, high: 16–31);
    /// `q * d + m` unfused, as candle and the dense load compute it.
    #[inline(always)]
    fn dequantize(b: &[u8], w: &mut [f32]) {
        let d = f16(b, 0);
        let mn = f16(b, 2);
        let qs = &b[4..20];
        for j in 0..16 {
            w[j] = (qs[j] & 0x0F) as f32 * d + mn;
            w[j + 16] = (qs[j] >> 4) as f32 * d + mn;
        }
    }
}

impl Block for Q8_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 34;
    /// f16 scale `d`, 32 signed bytes; `q * d`.
    #[inline(always)]
    fn dequantize(b: &[u8], w: &mut [f32]) {
        let d = f16(b, 0);
        let qs = &b[2..34];
        for j in 0..32 {
            w[j] = qs[j] as i8 as f32 * d;
        }
    }
}

impl Block for Q5_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 22;
    /// f16 scale `d`, 32 high bits `qh` (little-endian; bit j belongs to element j), 16 bytes of
    /// low nibbles (low: elements 0–15, high: 16–31); `(q − 16) * d`, as ggml, candle and the
    /// dense load compute it.
    #[inline(always)]
    fn dequantize(b: &[u8], w: &mut [f32]) {
        let d = f16(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..16 {
            let lo = (qs[j] & 0x0F) as i32 | (((qh >> j) & 1) << 4) as i32;
            let hi = (qs[j] >> 4) as i32 | (((qh >> (j + 16)) & 1) << 4) as i32;
            w[j] = (lo - 16) as f32 * d;
            w[j + 16] = (hi - 16) as f32 * d;
        }
    }
}

/// Q4_K's 6-bit scale and minimum of sub-block `j` (of 8) from its 12 packed bytes.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

impl Block for Q4K {
    const ELEMS: usize = 256;
    const BYTES: usize = 144;
    /// f16 `d`, f16 `dmin`, 12 bytes of 6-bit sub-block scales and minimums, 128 bytes of
    /// nibbles; sub-block `s` of 32 weights is `(d·sc_s)·q − dmin·m_s`.
    #[inline(always)]
    fn dequantize(b: &[u8], w: &mut [f32]) {
        let d = f16(b, 0);
        let dmin = f16(b, 2);
        let scales = &b[4..16];
        for c in 0..4 {
            let q = &b[16 + 32 * c..16 + 32 * (c + 1)];
            let (sc1, m1) = scale_min_k4(2 * c, scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            let out = &mut w[64 * c..64 * (c + 1)];
            for l in 0..32 {
                out[l] = d1 * (q[l] & 0xF) as f32 - m1;
                out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

impl Block for Q6K {
    const ELEMS: usize = 256;
    const BYTES: usize = 210;
    /// 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed 8-bit sub-block
    /// scales, f16 `d`; weight `(d·sc)·(q − 32)` with `q` 6 bits.
    #[inline(always)]
    fn dequantize(b: &[u8], w: &mut [f32]) {
        let d = f16(b, 208);
        for half_block in 0..2 {
            let ql = &b[64 * half_block..64 * half_block + 64];
            let qh = &b[128 + 32 * half_block..128 + 32 * half_block + 32];
            let sc = &b[192 + 8 * half_block..192 + 8 * half_block + 8];
            let out = &mut w[128 * half_block..128 * (half_block + 1)];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                out[l] = d * sc[is] as i8 as f32 * q1 as f32;
                out[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                out[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                out[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
            }
        }
    }
}

/// The dot product of one weight row with one activation row, 32 f32 lanes summed pairwise.
#[inline(always)]
fn dot<B: Block>(row: &[u8], xs: &[f32]) -> f32 {
    let mut acc = [0f32; 32];
    let mut w = [0f32; 256];
    for (b, x) in row.chunks_exact(B::BYTES).zip(xs.chunks_exact(B::ELEMS)) {
        B::dequantize(b, &mut w[..B::ELEMS]);
        for (wc, xc) in w[..B::ELEMS].chunks_exact(32).zip(x.chunks_exact(32)) {
            for j in 0..32 {
                acc[j] += wc[j] * xc[j];
            }
        }
    }
    let mut n = 32;
    while n > 1 {
        n /= 2;
        for j in 0..n {
            acc[j] += acc[j + n];
        }
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    fn random_bytes(rng: &mut SplitMix, n: usize) -> Vec<u8> {
        (0..n).map(|_| (rng.next_f64() * 256.0) as u8).collect()
    }

    /// Random Q4_1 / Q8_0 / Q5_0 / Q4_K / Q6_K blocks for a `[rows, cols]` matrix, and the same matrix dense
    /// (dequantised by the scalar formula).
    fn random_matrix(dtype: GgmlDType, rows: usize, cols: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
        let mut rng = SplitMix(seed);
        let mut bytes = Vec::new();
        let mut dense = Vec::new();
        let (elems, _) = f32_path_block(dtype).unwrap();
        for _ in 0..rows * cols / elems {
            let d = half::f16::from_f32((rng.next_f64() as f32 - 0.5) * 0.1);
            let mut block = d.to_le_bytes().to_vec();
            let mut w = vec![0f32; elems];
            match dtype {
                GgmlDType::Q4K => {
                    // d, dmin (a small positive f16), scales and nibbles.
                    block.extend(half::f16::from_f32(0.01).to_le_bytes());
                    block.extend(random_bytes(&mut rng, 140));
                    Q4K::dequantize(&block, &mut w);
                }
                GgmlDType::Q6K => {
                    // Quants and scales first, d last.
                    let mut b = random_bytes(&mut rng, 208);
                    b.extend(d.to_le_bytes());
                    block = b;
                    Q6K::dequantize(&block, &mut w);
                }
                GgmlDType::Q4_1 => {
                    let mn = half::f16::from_f32((rng.next_f64() as f32 - 0.5) * 0.2);
                    block.extend(mn.to_le_bytes());
                    block.extend(random_bytes(&mut rng, 16));
                    Q4_1::dequantize(&block, &mut w);
                }
                GgmlDType::Q5_0 => {
                    block.extend(random_bytes(&mut rng, 20));
                    Q5_0::dequantize(&block, &mut w);
                }
                _ => {
                    block.extend(random_bytes(&mut rng, 32));
                    Q8_0::dequantize(&block, &mut w);
                }
            }
            bytes.extend(block);
            dense.extend(w);
        }
        (bytes, dense)
    }

    #[test]
    fn f32_path_matches_dense_products_computed_in_f64() {
        for dtype in [
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let (rows, cols) = match f32_path_block(dtype) {
                Some((32, _)) => (70, 96),
                _ => (70, 512),
            };
            let (bytes, dense) = random_matrix(dtype, rows, cols, 3);
            // Independent check of the block decoding: candle's dequantiser gives `dense`.
            let candle = dtype
                .from_data(std::borrow::Cow::Borrowed(&bytes))
                .dequantize(rows * cols)
                .unwrap();
            let candle_cpu_storage = match candle {
                candle_core::CpuStorage::F32(v) => v,
                _ => panic!("candle dequantised to a non-f32 type"),
            };
            assert_eq!(candle_cpu_storage, dense, "{dtype:?}");
            for m in [1, 3, 4, 7] {
                let mut rng = SplitMix(m as u64);
                let x: Vec<f32> = (0..m * cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
                let scales = block_scales(dtype, &bytes);
                let y = matmul_rows(dtype, &bytes, (rows, cols), &x, m, None, &scales).unwrap();
                for r in 0..m {
                    for o in 0..rows {
                        let want: f64 = (0..cols)
                            .map(|i| dense[o * cols + i] as f64 * x[r * cols + i] as f64)
                            .sum();
                        let got = y[r * rows + o] as f64;
                        // f32 summation in any order: |error| ≤ n·u·Σ|w·x| (u = 2⁻²⁴), plus
                        // the final rounding.
                        let magnitude: f64 = (0..cols)
                            .map(|i| (dense[o * cols + i] as f64 * x[r * cols + i] as f64).abs())
                            .sum();
                        let bound = (cols + 1) as f64 * 2f64.powi(-24) * magnitude;
                        assert!(
                            (got - want).abs() <= bound,
                            "{dtype:?} m={m} ({r},{o}): {got} vs {want} (bound {bound})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_rows_match_the_portable_rows() {
        // The dispatcher picks AVX-512 where the CPU has it, so test the AVX2 path directly.
        if !avx2::available() {
            return;
        }
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (rows, cols) = (9, 160);
            let (bytes, _) = random_matrix(dtype, rows, cols, 5);
            let row_bytes = bytes.len() / rows;
            for m in [1, 2, 5] {
                let mut rng = SplitMix(10 + m as u64);
                let x: Vec<f32> = (0..m * cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
                let mut want = vec![0f32; rows * m];
                rows_any(dtype, &bytes, row_bytes, &x, m, cols, &mut want);
                let mut got = vec![0f32; rows * m];
                let scales = block_scales(dtype, &bytes);
                let xsum: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
                // SAFETY: `available` checked the CPU features.
                unsafe {
                    avx2::rows(
                        dtype,
                        &bytes,
                        row_bytes,
                        &x,
                        m,
                        cols,
                        &mut got,
                        (&scales, &xsum),
                    )
                };
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{dtype:?} m={m}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn mismatched_sizes_are_errors() {
        let (bytes, _) = random_matrix(GgmlDType::Q4_1, 4, 32, 1);
        let sc = block_scales(GgmlDType::Q4_1, &bytes);
        let q41 = |bytes: &[u8], x: &[f32], sc: &[f32]| {
            matmul_rows(GgmlDType::Q4_1, bytes, (4, 32), x, 1, None, sc)
        };
        assert!(q41(&bytes, &[0.0; 32], &sc).is_ok());
        assert!(q41(&bytes, &[0.0; 31], &sc).is_err());
        assert!(q41(&bytes[..60], &[0.0; 32], &sc).is_err());
        assert!(q41(&bytes, &[0.0; 32], &sc[..6]).is_err());
        assert!(matmul_rows(GgmlDType::Q4K, &bytes, (4, 32), &[0.0; 32], 1, None, &[]).is_err());
    }
}
