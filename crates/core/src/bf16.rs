//! Products with bf16 inputs and f32 accumulation: the weights of the opt-in `--dtype bf16`
//! forward ([`crate::loader::WeightStorage::Bf16`]).
//!
//! Definition: `y = bf16(x) @ bf16(W)` with every product of two bf16 values exact and the sums
//! in f32, where `bf16(v)` rounds an f32 to the nearest bfloat16, ties to even (8 bits of
//! mantissa: a relative rounding error of at most 2⁻⁹ per input). This is what Intel AMX's
//! `TDPBF16PS` computes; on a CPU with AMX (Sapphire Rapids and later, Linux ≥ 5.16) the product
//! runs on the tile unit, elsewhere the same rounded values are multiplied by the f32 gemm, so
//! the results agree everywhere up to the order of the f32 sums.
//!
//! Layout. `W` (`[k, n]`, the compute layout `[in, out]`) is packed once into panels of 32
//! columns; a panel is `k/32` blocks of two AMX tiles (columns 0–15 and 16–31 of the panel), each
//! tile 16 rows of 64 bytes holding the pairs `(W[2r][c], W[2r+1][c])` of its 16 columns (the
//! "VNNI" order the instruction reads). `k` and `n` are padded with zeros to multiples of 32.
//! The input rows are rounded to bf16 into a row-major buffer padded the same way, which the
//! tile loads read in place.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::{Error, Result};

/// Rows and columns of the register block one kernel call computes (2 × 2 tiles of 16 × 16).
const BLOCK: usize = 32;
/// Input rows per cache block: the bf16 rows of one block stay in the core's L2 while every
/// panel of the weights passes over them.
const ROWS_PER_CHUNK: usize = 256;
/// Inputs per depth slice of a product with many rows (see `product_amx`).
const DEPTH: usize = 256;

/// Round an f32 to the nearest bf16, ties to even (NaN stays NaN).
#[inline(always)]
pub fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    // Branch-free (a select), so that loops of it vectorise.
    let rounded = (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16;
    let quiet_nan = ((b >> 16) as u16) | 0x40;
    if v.is_nan() {
        quiet_nan
    } else {
        rounded
    }
}

/// The f32 value of a bf16.
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Panel `p` of the `[k, n]` matrix `w` in the tile layout (see the module doc): `kp / 32`
/// blocks of two 512-value tiles, every value (padding included) written.
fn pack_panel(w: View<'_>, p: usize, out: &mut [MaybeUninit<u16>]) {
    for kb in 0..out.len() / (2 * 512) {
        for half in 0..2 {
            pack_tile(
                w,
                kb,
                p * BLOCK + half * 16,
                &mut out[(kb * 2 + half) * 512..][..512],
            );
        }
    }
}

/// One tile: rows `kb·32 ..+32` (as 16 pairs) of columns `col0 ..+16` of `w`, zero outside it.
#[inline(always)]
fn pack_tile(w: View<'_>, kb: usize, col0: usize, tile: &mut [MaybeUninit<u16>]) {
    let (k, n) = (w.rows, w.cols);
    for r in 0..16 {
        let row0 = kb * BLOCK + 2 * r;
        // Rows row0 and row0 + 1 of the tile's 16 columns, interleaved.
        let mut pair = [[0f32; 16]; 2];
        let full = row0 + 1 < k && col0 + 16 <= n;
        if full && !w.transposed {
            for (t, dst) in pair.iter_mut().enumerate() {
                dst.copy_from_slice(&w.data[(row0 + t) * n + col0..][..16]);
            }
        } else if full {
            // Column col0 + c of the transposed source holds rows row0 and row0 + 1 side by
            // side.
            let [lo, hi] = &mut pair;
            for (c, (lo, hi)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
                let src = &w.data[(col0 + c) * k + row0..][..2];
                (*lo, *hi) = (src[0], src[1]);
            }
        } else {
            for (t, dst) in pair.iter_mut().enumerate() {
                for (c, d) in dst.iter_mut().enumerate() {
                    if row0 + t < k && col0 + c < n {
                        *d = w.at(row0 + t, col0 + c);
                    }
                }
            }
        }
        let dst = &mut tile[r * 32..][..32];
        for c in 0..16 {
            dst[2 * c].write(to_bf16(pair[0][c]));
            dst[2 * c + 1].write(to_bf16(pair[1][c]));
        }
    }
}

/// [`pack_panel`] with AVX-512 where the CPU has it (every AMX CPU does): whole tiles are
/// rounded sixteen values per instruction and, from a transposed source, turned by a 16 × 16
/// register transpose instead of pairs gathered one at a time (the portable loop ran at about
/// one value per nanosecond, a fifth of a bf16 fine-tuning step). Same values bit for bit.
fn pack_panel_best(w: View<'_>, p: usize, out: &mut [MaybeUninit<u16>]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { x86::pack_panel(w, p, out) };
    }
    pack_panel(w, p, out)
}

/// Whether the CPU has AVX-512 F and BW (the standard macro caches the answer).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// The AVX-512 builds of the packing and rounding loops.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{pack_tile, View, BLOCK};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// [`super::to_bf16`] of 16 values, each in the low half of its 32-bit lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn round16(v: __m512) -> __m512i {
        let b = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb);
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(b, bias));
        let quiet_nan = _mm512_and_si512(
            _mm512_or_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(0x40)),
            _mm512_set1_epi32(0xFFFF),
        );
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_mask_mov_epi32(rounded, nan, quiet_nan)
    }

    /// 32 consecutive values rounded, as 32 bf16 in order (= 16 lanes of (even, odd) pairs).
    ///
    /// # Safety
    /// 32 readable f32 at `src`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn round32(src: *const f32) -> __m512i {
        // SAFETY: the caller's promise.
        let (lo, hi) = unsafe { (_mm512_loadu_ps(src), _mm512_loadu_ps(src.add(16))) };
        let lo = _mm512_cvtepi32_epi16(round16(lo));
        let hi = _mm512_cvtepi32_epi16(round16(hi));
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    /// Transpose the 16 × 16 matrix of 32-bit values whose row `i` is `r[i]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn transpose16(r: &mut [__m512i; 16]) {
        // a[2i], a[2i+1]: rows 2i and 2i+1 interleaved by 32 bits within each 128-bit lane.
        let mut a = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // b[4g + j], lane L: rows 4g ..4g+4 at column 4L + j.
        let mut b = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let (a0, a1, a2, a3) = (a[4 * g], a[4 * g + 1], a[4 * g + 2], a[4 * g + 3]);
            b[4 * g] = _mm512_unpacklo_epi64(a0, a2);
            b[4 * g + 1] = _mm512_unpackhi_epi64(a0, a2);
            b[4 * g + 2] = _mm512_unpacklo_epi64(a1, a3);
            b[4 * g + 3] = _mm512_unpackhi_epi64(a1, a3);
        }
        // Column 4L + j is lane L of b[j], b[4 + j], b[8 + j], b[12 + j].
        for j in 0..4 {
            let c0 = _mm512_shuffle_i32x4::<0x44>(b[j], b[4 + j]);
            let c1 = _mm512_shuffle_i32x4::<0xEE>(b[j], b[4 + j]);
            let c2 = _mm512_shuffle_i32x4::<0x44>(b[8 + j], b[12 + j]);
            let c3 = _mm512_shuffle_i32x4::<0xEE>(b[8 + j], b[12 + j]);
            r[j] = _mm512_shuffle_i32x4::<0x88>(c0, c2);
            r[4 + j] = _mm512_shuffle_i32x4::<0xDD>(c0, c2);
            r[8 + j] = _mm512_shuffle_i32x4::<0x88>(c1, c3);
            r[12 + j] = _mm512_shuffle_i32x4::<0xDD>(c1, c3);
        }
    }

    /// [`super::pack_panel`], AVX-512.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn pack_panel(w: View<'_>, p: usize, out: &mut [MaybeUninit<u16>]) {
        let (k, n) = (w.rows, w.cols);
        for kb in 0..out.len() / (2 * 512) {
            for half in 0..2 {
                let col0 = p * BLOCK + half * 16;
                let tile = &mut out[(kb * 2 + half) * 512..][..512];
                if (kb + 1) * BLOCK > k || col0 + 16 > n {
                    pack_tile(w, kb, col0, tile);
                    continue;
                }
                let dst = tile.as_mut_ptr().cast::<u16>();
                if w.transposed {
                    // Row c of the source holds the tile's column c: 32 values, 16 pairs.
                    let mut r = [_mm512_setzero_si512(); 16];
                    for (c, r) in r.iter_mut().enumerate() {
                        let src = &w.data[(col0 + c) * k + kb * BLOCK..][..32];
                        // SAFETY: `src` holds 32 values.
                        *r = unsafe { round32(src.as_ptr()) };
                    }
                    transpose16(&mut r);
                    for (i, r) in r.iter().enumerate() {
                        // SAFETY: tile row i is 32 u16 inside the 512 of `tile`.
                        unsafe { _mm512_storeu_si512(dst.add(i * 32).cast(), *r) };
                    }
                } else {
                    for i in 0..16 {
                        let row0 = kb * BLOCK + 2 * i;
                        let a = &w.data[row0 * n + col0..][..16];
                        let b = &w.data[(row0 + 1) * n + col0..][..16];
                        // SAFETY: 16 values each; tile row i as above.
                        unsafe {
                            let a = round16(_mm512_loadu_ps(a.as_ptr()));
                            let b = round16(_mm512_loadu_ps(b.as_ptr()));
                            let v = _mm512_or_si512(a, _mm512_slli_epi32::<16>(b));
                            _mm512_storeu_si512(dst.add(i * 32).cast(), v);
                        }
                    }
                }
            }
        }
    }

    /// [`View::round_rows`], AVX-512: a transposed source in 16 × 16 blocks (16 of its
    /// contiguous columns rounded, transposed in registers, stored as 16 row pieces).
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn round_rows(x: View<'_>, r0: usize, out: &mut [u16], width: usize) {
        let rows = out.len() / width;
        if !x.transposed || rows != 16 {
            return x.round_rows(r0, out, width);
        }
        let whole = x.cols / 16 * 16;
        // Each column's 16 values are one cache line, the next column's `x.rows` floats on:
        // strides the hardware prefetcher does not follow, so each line is asked for
        // `AHEAD` columns before it is read (without, the loads waited on memory ~70% of the
        // time when rounding a transposed 4,608 × 4,096 matrix of an SAE's backward).
        const AHEAD: usize = 32;
        let base = x.data.as_ptr().wrapping_add(r0);
        for c0 in (0..whole).step_by(16) {
            for j in 0..16 {
                let ahead = base.wrapping_add((c0 + AHEAD + j) * x.rows);
                // A prefetch is a hint: an address past the slice does not fault.
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            }
            let mut r = [_mm512_setzero_si512(); 16];
            for (j, r) in r.iter_mut().enumerate() {
                let src = &x.data[(c0 + j) * x.rows + r0..][..16];
                // SAFETY: 16 values.
                *r = round16(unsafe { _mm512_loadu_ps(src.as_ptr()) });
            }
            transpose16(&mut r);
            for (i, r) in r.iter().enumerate() {
                let dst = &mut out[i * width + c0..][..16];
                // SAFETY: 16 u16 inside `out`.
                unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), _mm512_cvtepi32_epi16(*r)) };
            }
        }
        for c in whole..x.cols {
            let src = &x.data[c * x.rows + r0..][..16];
            for (i, &v) in src.iter().enumerate() {
                out[i * width + c] = super::to_bf16(v);
            }
        }
        for o in out.chunks_exact_mut(width) {
            o[x.cols..].fill(0);
        }
    }
}

/// A `[rows, cols]` f32 matrix read from a slice: row-major, or (`transposed`) the transpose
/// of the row-major `[cols, rows]` matrix the slice holds, read in place.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub transposed: bool,
}

impl<'a> View<'a> {
    /// The row-major `[rows, cols]` matrix `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            transposed: false,
        }
    }

    fn check(&self, what: &str) -> Result<()> {
        if self.data.len() != self.rows * self.cols || self.rows == 0 || self.cols == 0 {
            return Err(Error::Input(format!(
                "{what}: {} values for a [{}, {}] matrix",
                self.data.len(),
                self.rows,
                self.cols
            )));
        }
        Ok(())
    }

    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> f32 {
        if self.transposed {
            self.data[c * self.rows + r]
        } else {
            self.data[r * self.cols + c]
        }
    }

    /// Rows `r0..` rounded to bf16 into `out`, `width` (≥ `cols`) values per row, as many rows
    /// as `out` holds; the padding columns zeroed.
    #[inline(always)]
    fn round_rows(&self, r0: usize, out: &mut [u16], width: usize) {
        let n = out.len() / width;
        if self.transposed {
            // Column c of the source rows r0..r0 + n is contiguous: read it once, scatter it.
            for c in 0..self.cols {
                let src = &self.data[c * self.rows + r0..][..n];
                for (i, &v) in src.iter().enumerate() {
                    out[i * width + c] = to_bf16(v);
                }
            }
        } else {
            for (i, o) in out.chunks_exact_mut(width).enumerate() {
                let row = &self.data[(r0 + i) * self.cols..][..self.cols];
                for (o, &v) in o.iter_mut().zip(row) {
                    *o = to_bf16(v);
                }
            }
        }
        for o in out.chunks_exact_mut(width) {
            o[self.cols..].fill(0);
        }
    }
}

/// A `[k, n]` matrix rounded to bf16 and packed for the tile unit.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    k: usize,
    n: usize,
    kp: usize,
    np: usize,
    data: Vec<u16>,
}

impl PackedBf16 {
    /// Pack the row-major `[k, n]` matrix `w`.
    pub fn pack(w: &[f32], k: usize, n: usize) -> Result<Self> {
        Self::pack_view(View::row_major(w, k, n))
    }

    /// Pack the `[k, n]` matrix `w` (row-major or a transposed view).
    pub fn pack_view(w: View<'_>) -> Result<Self> {
        w.check("bf16 packing")?;
        let (k, n) = (w.rows, w.cols);
        let (kp, np) = (round_up(k, BLOCK), round_up(n, BLOCK));
        let panel = kp * BLOCK;
        // Every value, padding included, is written below: the buffer is not zero-filled first
        // (packing runs on every product of a bf16 fine-tuning step).
        let mut data: Vec<u16> = Vec::with_capacity(kp * np);
        let spare = &mut data.spare_capacity_mut()[..kp * np];
        spare
            .par_chunks_mut(panel)
            .enumerate()
            .for_each(|(p, out)| pack_panel_best(w, p, out));
        // SAFETY: the loops above wrote all 32 values of each of the 16 rows of both tiles of
        // every 32-row block of every panel: `kp * np` values.
        unsafe { data.set_len(kp * np) };
        Ok(PackedBf16 { k, n, kp, np, data })
    }

    /// `[k, n]`.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.data.len() * 2
    }

    /// The packed values as a row-major f32 `[k, n]` matrix (exactly the rounded weights).
    pub fn unpack(&self) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut w = vec![0f32; k * n];
        w.par_chunks_mut(n).enumerate().for_each(|(row, out)| {
            let (kb, rr) = (row / BLOCK, row % BLOCK);
            let (r, t) = (rr / 2, rr % 2);
            for (col, o) in out.iter_mut().enumerate() {
                let (p, cc) = (col / BLOCK, col % BLOCK);
                let (half, c) = (cc / 16, cc % 16);
                let at = p * self.kp * BLOCK + (kb * 2 + half) * 512 + r * 32 + 2 * c + t;
                *o = from_bf16(self.data[at]);
            }
        });
        w
    }

    /// `bf16(x) @ W` for the row-major `[m, k]` input `x`: `[m, n]` in f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        if x.len() != m * self.k {
            return Err(Error::Input(format!(
                "bf16 product: {} input values for {m} rows of {}",
                x.len(),
                self.k
            )));
        }
        if m == 0 {
            return Ok(Vec::new());
        }
        self.matmul_view(View::row_major(x, m, self.k))
    }

    /// `bf16(x) @ W` for `x` `[m, k]` given as a [`View`].
    pub fn matmul_view(&self, x: View<'_>) -> Result<Vec<f32>> {
        x.check("bf16 product")?;
        if x.cols != self.k {
            return Err(Error::Input(format!(
                "bf16 product: [{}, {}] @ [{}, {}]",
                x.rows, x.cols, self.k, self.n
            )));
        }
        if amx_available() {
            Ok(self.matmul_amx(x))
        } else {
            self.matmul_f32(x)
        }
    }

    /// The same product through the f32 gemm on the rounded values (CPUs without AMX).
    fn matmul_f32(&self, x: View<'_>) -> Result<Vec<f32>> {
        use candle_core::{Device, Tensor};
        let m = x.rows;
        let xr: Vec<f32> = (0..m * self.k)
            .map(|i| from_bf16(to_bf16(x.at(i / self.k, i % self.k))))
            .collect();
        let a = Tensor::from_vec(xr, (m, self.k), &Device::Cpu)?;
        let b = Tensor::from_vec(self.unpack(), (self.k, self.n), &Device::Cpu)?;
        Ok(a.matmul(&b)?.flatten_all()?.to_vec1()?)
    }

    /// One 32 × 32 output block: rows `i..i + 32` of the padded bf16 rows `a` against panel `p`,
    /// over the inputs `k0 .. k0 + depth`, written to `c` with row stride `ldc` (`k0 = 0`) or
    /// added to what `c` holds (`k0 > 0`: the f32 sums stored and reloaded exactly, so a product
    /// taken in depth slices equals the one taken whole, bit for bit).
    ///
    /// # Safety
    /// The AMX tiles are configured on this thread, `i + 32` rows of `kp` values lie inside `a`,
    /// `k0 + depth ≤ kp` with both multiples of 32, and `c` points at 32 rows of 32 writable f32
    /// spaced `ldc` apart (initialised when `k0 > 0`).
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        &self,
        a: &[u16],
        i: usize,
        p: usize,
        k0: usize,
        depth: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        let kp = self.kp;
        // SAFETY: the caller's promises, and panel `p` holds `kp / 32` blocks of 2 × 512 values,
        // block `k0 / 32` at `k0 * 32`.
        unsafe {
            kernel(
                a.as_ptr().add(i * kp + k0),
                kp,
                self.data.as_ptr().add(p * kp * BLOCK + k0 * BLOCK),
                c,
                ldc,
                depth / BLOCK,
                next_panel(&self.data, p, i, kp).wrapping_add(k0 * BLOCK),
                k0 > 0,
            )
        }
    }

    fn matmul_amx(&self, x: View<'_>) -> Vec<f32> {
        self.product_amx(Rows::Source(x), x.rows)
    }

    /// `bf16(x) @ W` for each `W` of `ws` (all `[k, n_i]`, the same `k`): the input rounded
    /// once for all of them (q, k and v, or an MLP's gate and up, read the same rows).
    pub fn matmul_shared(ws: &[&PackedBf16], x: View<'_>) -> Result<Vec<Vec<f32>>> {
        let Some(first) = ws.first() else {
            return Ok(Vec::new());
        };
        if ws.iter().any(|w| w.k != first.k) || !amx_available() {
            return ws.iter().map(|w| w.matmul_view(x)).collect();
        }
        x.check("bf16 product")?;
        if x.cols != first.k {
            return Err(Error::Input(format!(
                "bf16 product: [{}, {}] @ [{}, {}]",
                x.rows, x.cols, first.k, first.n
            )));
        }
        let a = round_input(x, first.kp);
        Ok(ws
            .iter()
            .map(|w| w.product_amx(Rows::Rounded(&a), x.rows))
            .collect())
    }

    /// The product on the tile unit of `m` rows, given rounded or to be rounded.
    fn product_amx(&self, input: Rows<'_>, m: usize) -> Vec<f32> {
        let (kp, np) = (self.kp, self.np);
        let mp = round_up(m, BLOCK);
        // The output is written by the kernels into the vector's spare capacity and not zeroed
        // first (a memset of every output was 6% of a bf16 forward).
        let mut c: Vec<f32> = Vec::with_capacity(mp * np);
        let spare = &mut c.spare_capacity_mut()[..mp * np];
        let panels = np / BLOCK;
        let threads = rayon::current_num_threads().max(1);
        let row_blocks = mp / BLOCK;
        if row_blocks >= 2 * threads {
            // Many rows: each task a chunk of rows against every panel.
            let chunk = (ROWS_PER_CHUNK.min(round_up(mp.div_ceil(threads), BLOCK))).max(BLOCK);
            spare
                .par_chunks_mut(chunk * np)
                .enumerate()
                .for_each(|(t, c)| {
                    let rows = c.len() / np;
                    let r0 = t * chunk;
                    let mut run = |a: &[u16]| {
                        let _tiles = Tiles::configure();
                        for p in 0..panels {
                            // Depth slices of `DEPTH`: a slice of the panel and of a row block
                            // (16 KB each) fit in L1 together, so the tile loads do not wait on
                            // L2 (a 576-deep block ran at 0.6 of the rate of a 256-deep one).
                            for k0 in (0..kp).step_by(DEPTH) {
                                let depth = DEPTH.min(kp - k0);
                                for i in (0..rows).step_by(BLOCK) {
                                    // SAFETY: the tiles are configured on this thread; `a` holds
                                    // `rows` rows of `kp` bf16 and `c` `rows` rows of `np` f32,
                                    // with `i + 32 ≤ rows`, the panel's 32 columns inside `np`,
                                    // `k0 + depth ≤ kp` (multiples of 32), and the block written
                                    // by the first slice before later ones add to it.
                                    unsafe {
                                        self.block(
                                            a,
                                            i,
                                            p,
                                            k0,
                                            depth,
                                            c.as_mut_ptr().add(i * np + p * BLOCK).cast(),
                                            np,
                                        )
                                    }
                                }
                            }
                        }
                    };
                    match input {
                        Rows::Rounded(a) => run(&a[r0 * kp..][..rows * kp]),
                        Rows::Source(x) => ROUNDED.with_borrow_mut(|buf| {
                            round_chunk(x, r0, rows, kp, buf);
                            run(buf)
                        }),
                    }
                });
        } else {
            let rounded;
            let a = match input {
                Rows::Rounded(a) => a,
                Rows::Source(x) => {
                    rounded = round_input(x, kp);
                    &rounded[..]
                }
            };
            // Few rows (a decode step): split the panels; each task writes its own columns of
            // a scratch block, copied into place after.
            let per = panels.div_ceil(threads * 4).max(1);
            let parts: Vec<(usize, Vec<f32>)> = (0..panels)
                .step_by(per)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|p0| {
                    let p1 = (p0 + per).min(panels);
                    let w = (p1 - p0) * BLOCK;
                    let mut out = vec![0f32; mp * w];
                    let _tiles = Tiles::configure();
                    for p in p0..p1 {
                        for i in (0..mp).step_by(BLOCK) {
                            // SAFETY: as above, with `out` `mp` rows of `w` f32 and the panel's
                            // columns `(p - p0) * 32 ..+32` inside `w`.
                            unsafe {
                                self.block(
                                    a,
                                    i,
                                    p,
                                    0,
                                    kp,
                                    out.as_mut_ptr().add(i * w + (p - p0) * BLOCK),
                                    w,
                                )
                            }
                        }
                    }
                    (p0, out)
                })
                .collect();
            for (p0, out) in parts {
                let w = out.len() / mp;
                for i in 0..mp {
                    for (d, &v) in spare[i * np + p0 * BLOCK..][..w]
                        .iter_mut()
                        .zip(&out[i * w..][..w])
                    {
                        d.write(v);
                    }
                }
            }
        }
        // SAFETY: every element of the `mp × np` output was written above: each 32 × 32 block
        // by one kernel call (row blocks × panels cover it), or copied from the parts, which
        // cover every panel.
        unsafe { c.set_len(mp * np) };
        // Drop the padding.
        let n = self.n;
        if np == n {
            c.truncate(m * n);
            return c;
        }
        let mut y = vec![0f32; m * n];
        y.par_chunks_mut(n)
            .zip(c.par_chunks(np))
            .for_each(|(y, c)| y.copy_from_slice(&c[..n]));
        y
    }
}

/// The rows of `x` rounded to bf16, padded with zero columns to `kp` and zero rows to a
/// multiple of the block.
fn round_input(x: View<'_>, kp: usize) -> Vec<u16> {
    let m = x.rows;
    let mp = round_up(m, BLOCK);
    let mut a = Vec::with_capacity(mp * kp);
    a.resize(m * kp, 0u16);
    const ROUND_ROWS: usize = 16;
    a.par_chunks_mut(ROUND_ROWS * kp)
        .enumerate()
        .for_each(|(i, out)| round_rows_best(x, i * ROUND_ROWS, out, kp));
    a.resize(mp * kp, 0);
    a
}

/// The left-hand rows of a product on the tile unit.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// Already rounded and padded by [`round_input`] (shared by several products).
    Rounded(&'a [u16]),
    /// To be rounded by each task, chunk by chunk, just before its products read them: the
    /// bf16 rows never leave the core's cache, and no separate pass over all rows runs.
    Source(View<'a>),
}

thread_local! {
    /// Each worker's rounded rows of its current chunk ([`Rows::Source`]), kept between
    /// products so that it is not allocated and zeroed each time.
    static ROUNDED: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows `r0 .. r0 + rows` of `x` rounded into `buf` (`kp` values each, as [`round_input`]),
/// the rows past `x`'s end zero.
fn round_chunk(x: View<'_>, r0: usize, rows: usize, kp: usize, buf: &mut Vec<u16>) {
    buf.resize(rows * kp, 0);
    let real = rows.min(x.rows.saturating_sub(r0));
    for g in (0..real).step_by(16) {
        let n = 16.min(real - g);
        round_rows_best(x, r0 + g, &mut buf[g * kp..(g + n) * kp], kp);
    }
    buf[real * kp..].fill(0);
}

/// [`View::round_rows`] compiled for AVX-512 where the CPU has it (every AMX CPU does): the
/// portable build rounds four values per instruction, AVX-512 sixteen, and a transposed source
/// is turned in 16 × 16 register blocks instead of scattered one value at a time.
fn round_rows_best(x: View<'_>, r0: usize, out: &mut [u16], width: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { x86::round_rows(x, r0, out, width) };
    }
    x.round_rows(r0, out, width)
}

/// What [`kernel`] prefetches: on a panel's first row block the next panel (wrapping to the
/// first), else the current one (already cached: the prefetches cost little).
fn next_panel(data: &[u16], p: usize, i: usize, kp: usize) -> *const u16 {
    let panel = kp * BLOCK;
    let q = if i == 0 {
        (p + 1) % (data.len() / panel)
    } else {
        p
    };
    data[q * panel..].as_ptr()
}

/// Whether this process can run AMX's bf16 tile instructions: the CPU reports AMX-TILE and
/// AMX-BF16 and the kernel granted the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`).
/// Asked once per process. `INTERPLAB_NO_AMX=1` turns the tile path off (the f32 fallback is
/// then used, for comparing the two).
pub fn amx_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::env::var_os("INTERPLAB_NO_AMX").is_none() && request_amx())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_amx() -> bool {
    use std::arch::x86_64::__cpuid_count;
    let leaf7 = __cpuid_count(7, 0);
    let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: the arch_prctl system call with two integer arguments; it reads and writes no
    // memory of ours. `syscall` clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_amx() -> bool {
    false
}

/// The tile configuration of this thread for as long as the value lives: tiles 0–7 all 16
/// rows of 64 bytes (C: 0–3, A: 4–5, B: 6–7). Released on drop.
struct Tiles;

impl Tiles {
    #[cfg(target_arch = "x86_64")]
    fn configure() -> Tiles {
        #[repr(C, align(64))]
        struct Config([u8; 64]);
        let mut cfg = Config([0; 64]);
        cfg.0[0] = 1; // palette 1
        for t in 0..8 {
            cfg.0[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
            cfg.0[48 + t] = 16; // rows
        }
        // SAFETY: only reached after `amx_available()` returned true; LDTILECFG reads the 64
        // bytes of `cfg`.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        }
        Tiles
    }
    #[cfg(not(target_arch = "x86_64"))]
    fn configure() -> Tiles {
        unreachable!("AMX is x86_64 only")
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: releases this thread's tile state, configured by `configure`.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
    }
}

/// One 32 × 32 block of `C = A @ B` over `kb` blocks of 32 inputs: `a` points at 32 rows of
/// bf16 `lda` apart (in elements), `b` at a panel (`kb` × 2 tiles of 512 bf16), `c` at 32 rows
/// of f32 `ldc` apart; the block is overwritten, or with `accumulate` added to (its f32 sums
/// loaded into the accumulator tiles first). Meanwhile the panel-sized range at `pf` is
/// prefetched into L2 (the next panel, on a panel's first block; a panel read from memory
/// otherwise stalls every tile load of that first pass).
///
/// # Safety
/// The tiles must be configured by [`Tiles::configure`] on this thread, and the three pointers
/// valid for the extents above (`pf` need not be: a prefetch never faults).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    a: *const u16,
    lda: usize,
    b: *const u16,
    c: *mut f32,
    ldc: usize,
    kb: usize,
    pf: *const u16,
    accumulate: bool,
) {
    let sa = lda * 2;
    let sc = ldc * 4;
    let a1 = a.add(16 * lda);
    let c1 = c.add(16 * ldc);
    std::arch::asm!(
        "test {acc}, {acc}",
        "jz 3f",
        "tileloadd tmm0, [{c0} + {sc} * 1]",
        "tileloadd tmm1, [{c0} + {sc} * 1 + 64]",
        "tileloadd tmm2, [{c1} + {sc} * 1]",
        "tileloadd tmm3, [{c1} + {sc} * 1 + 64]",
        "jmp 2f",
        "3:",
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        "2:",
        "tileloadd tmm4, [{a0} + {sa} * 1]",
        "tileloadd tmm6, [{b} + {sb} * 1]",
        "tileloadd tmm7, [{b} + {sb} * 1 + 1024]",
        "tileloadd tmm5, [{a1} + {sa} * 1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "prefetcht1 [{pf} + 0]",
        "prefetcht1 [{pf} + 64]",
        "prefetcht1 [{pf} + 128]",
        "prefetcht1 [{pf} + 192]",
        "prefetcht1 [{pf} + 256]",
        "prefetcht1 [{pf} + 320]",
        "prefetcht1 [{pf} + 384]",
        "prefetcht1 [{pf} + 448]",
        "prefetcht1 [{pf} + 512]",
        "prefetcht1 [{pf} + 576]",
        "prefetcht1 [{pf} + 640]",
        "prefetcht1 [{pf} + 704]",
        "prefetcht1 [{pf} + 768]",
        "prefetcht1 [{pf} + 832]",
        "prefetcht1 [{pf} + 896]",
        "prefetcht1 [{pf} + 960]",
        "prefetcht1 [{pf} + 1024]",
        "prefetcht1 [{pf} + 1088]",
        "prefetcht1 [{pf} + 1152]",
        "prefetcht1 [{pf} + 1216]",
        "prefetcht1 [{pf} + 1280]",
        "prefetcht1 [{pf} + 1344]",
        "prefetcht1 [{pf} + 1408]",
        "prefetcht1 [{pf} + 1472]",
        "prefetcht1 [{pf} + 1536]",
        "prefetcht1 [{pf} + 1600]",
        "prefetcht1 [{pf} + 1664]",
        "prefetcht1 [{pf} + 1728]",
        "prefetcht1 [{pf} + 1792]",
        "prefetcht1 [{pf} + 1856]",
        "prefetcht1 [{pf} + 1920]",
        "prefetcht1 [{pf} + 1984]",
        "add {a0}, 64",
        "add {a1}, 64",
        "add {b}, 2048",
        "add {pf}, 2048",
        "dec {kb}",
        "jnz 2b",
        "tilestored [{c0} + {sc} * 1], tmm0",
        "tilestored [{c0} + {sc} * 1 + 64], tmm1",
        "tilestored [{c1} + {sc} * 1], tmm2",
        "tilestored [{c1} + {sc} * 1 + 64], tmm3",
        a0 = inout(reg) a => _,
        a1 = inout(reg) a1 => _,
        b = inout(reg) b => _,
        pf = inout(reg) pf => _,
        kb = inout(reg) kb => _,
        sa = in(reg) sa,
        sb = in(reg) 64usize,
        sc = in(reg) sc,
        c0 = in(reg) c,
        c1 = in(reg) c1,
        acc = in(reg) accumulate as usize,
        options(nostack),
    );
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    _: *const u16,
    _: usize,
    _: *const u16,
    _: *mut f32,
    _: usize,
    _: usize,
    _: *const u16,
    _: bool,
) {
    unreachable!("AMX is x86_64 only")
}

/// `x @ w` for f32 tensors `x` `[m, k]` and `w` `[k, n]` with both inputs rounded to bf16 and
/// f32 sums, differentiable in both: the backward's products `g @ wᵀ` and `xᵀ @ g` are
/// computed the same way (what PyTorch's bf16 autocast does to a linear layer). The right-hand
/// matrix is packed afresh on every call, so this is for weights that change (training); for
/// fixed weights, pack once ([`PackedBf16`]). Row-major and transposed operands are read in
/// place; inputs off the CPU or not f32 go through the f32 product of the rounded values,
/// which is the same definition.
pub fn linear(x: &candle_core::Tensor, w: &candle_core::Tensor) -> Result<candle_core::Tensor> {
    let (m, k) = x.dims2()?;
    let (k2, n) = w.dims2()?;
    if k != k2 {
        return Err(Error::Input(format!(
            "bf16 product: [{m}, {k}] @ [{k2}, {n}]"
        )));
    }
    let cpu_f32 =
        |t: &candle_core::Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
    if !(cpu_f32(x) && cpu_f32(w)) || m == 0 || k == 0 || n == 0 {
        let round = |t: &candle_core::Tensor| -> Result<candle_core::Tensor> {
            Ok(t.to_dtype(candle_core::DType::BF16)?.to_dtype(t.dtype())?)
        };
        return Ok(round(x)?.matmul(&round(w)?)?);
    }
    Ok(readable(x)?.apply_op2(&readable(w)?, Bf16Linear)?)
}

/// How a 2-D layout can be read in place: `Some(false)` row-major, `Some(true)` the transpose
/// of a row-major matrix, `None` neither.
fn in_place(l: &candle_core::Layout) -> Option<bool> {
    let (rows, _) = l.shape().dims2().ok()?;
    if l.is_contiguous() {
        Some(false)
    } else {
        (l.stride() == [1, rows]).then_some(true)
    }
}

/// `t` itself when it can be read in place, else a contiguous copy.
fn readable(t: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    match in_place(t.layout()) {
        Some(_) => Ok(t.clone()),
        None => t.contiguous(),
    }
}

/// The `[rows, cols]` f32 matrix behind a CPU storage and a 2-D layout [`in_place`] accepts.
fn view_of<'a>(s: &'a candle_core::CpuStorage, l: &candle_core::Layout) -> Option<View<'a>> {
    let candle_core::CpuStorage::F32(v) = s else {
        return None;
    };
    let transposed = in_place(l)?;
    let (rows, cols) = l.shape().dims2().ok()?;
    let data = v.get(l.start_offset()..l.start_offset() + rows * cols)?;
    Some(View {
        data,
        rows,
        cols,
        transposed,
    })
}

/// `bf16(a) @ bf16(b)` for two views: `b` packed, then multiplied.
fn product(a: View<'_>, b: View<'_>) -> candle_core::Result<Vec<f32>> {
    PackedBf16::pack_view(b)
        .and_then(|p| p.matmul_view(a))
        .map_err(candle_core::Error::wrap)
}

/// [`product`] of two 2-D f32 CPU tensors, as a tensor outside the graph.
fn product_tensors(
    a: &candle_core::Tensor,
    b: &candle_core::Tensor,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::Storage;
    let (m, _) = a.dims2()?;
    let (_, n) = b.dims2()?;
    let (a, b) = (readable(a)?, readable(b)?);
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let y = match (&*sa, &*sb) {
        (Storage::Cpu(ca), Storage::Cpu(cb)) => match (view_of(ca, la), view_of(cb, lb)) {
            (Some(va), Some(vb)) => product(va, vb)?,
            _ => candle_core::bail!("interplab-bf16-linear: expects f32 gradients"),
        },
        _ => candle_core::bail!("interplab-bf16-linear: expects tensors on the CPU"),
    };
    candle_core::Tensor::from_vec(y, (m, n), a.device())
}

struct Bf16Linear;

impl candle_core::CustomOp2 for Bf16Linear {
    fn name(&self) -> &'static str {
        "interplab-bf16-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (Some(x), Some(w)) = (view_of(s1, l1), view_of(s2, l2)) else {
            candle_core::bail!("interplab-bf16-linear: expects f32 inputs, row-major or transposed")
        };
        let y = product(x, w)?;
        Ok((
            candle_core::CpuStorage::F32(y),
            candle_core::Shape::from((x.rows, w.cols)),
        ))
    }

    fn bwd(
        &self,
        x: &candle_core::Tensor,
        w: &candle_core::Tensor,
        _res: &candle_core::Tensor,
        g: &candle_core::Tensor,
    ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)> {
        let gx = product_tensors(g, &w.t()?)?;
        let gw = product_tensors(&x.t()?, g)?;
        Ok((Some(gx), Some(gw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::SplitMix(seed);
        (0..n)
            .map(|_| (r.next_u64() % 20_001) as f32 / 10_000.0 - 1.0)
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties go to the even mantissa 1.0;
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up.
        assert_eq!(from_bf16(to_bf16(1.0 + 2f32.powi(-8))), 1.0);
        assert_eq!(
            from_bf16(to_bf16(1.0 + 3.0 * 2f32.powi(-8))),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(
            from_bf16(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20))),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn pack_then_unpack_gives_the_rounded_matrix() {
        for (k, n) in [(1, 1), (40, 20), (64, 96), (33, 70)] {
            let w = values(k * n, 3);
            let p = PackedBf16::pack(&w, k, n).unwrap();
            let back = p.unpack();
            for (x, y) in w.iter().zip(&back) {
                assert_eq!(from_bf16(to_bf16(*x)), *y);
            }
        }
    }

    /// Against an f64 product of the rounded inputs: the bf16 products are exact, so the only
    /// error is the f32 sums', bounded by k · 2⁻²⁴ · Σ|x||w| per element (bound ×4).
    #[test]
    fn matmul_matches_the_f64_product_of_the_rounded_inputs() {
        for (m, k, n) in [
            (1, 40, 20),
            (17, 64, 96),
            (33, 576, 64),
            (100, 70, 33),
            (300, 96, 160),
        ] {
            let x = values(m * k, 1);
            let w = values(k * n, 2);
            let p = PackedBf16::pack(&w, k, n).unwrap();
            // Both paths: the f32 one everywhere, the tile one where this CPU has it.
            let mut paths = vec![("f32", p.matmul_f32(View::row_major(&x, m, k)).unwrap())];
            if amx_available() {
                paths.push(("amx", p.matmul_amx(View::row_major(&x, m, k))));
            }
            let want = reference(&x, &w, m, k, n);
            for (path, y) in paths {
                check(&format!("{path} [{m},{k},{n}]"), &y, &want);
            }
        }
    }

    /// A product of many rows runs in depth slices (and in row chunks on the workers); the same
    /// rows taken 32 at a time run whole. Both must give the same bits.
    #[test]
    fn depth_slices_give_the_whole_depth_bit_for_bit() {
        if !amx_available() {
            return;
        }
        let threads = rayon::current_num_threads().max(1);
        let m = 2 * threads * BLOCK + 40;
        for k in [600, 256, 1000] {
            let n = 64;
            let x = values(m * k, 21);
            let p = PackedBf16::pack(&values(k * n, 22), k, n).unwrap();
            let all = p.matmul(&x, m).unwrap();
            for r0 in (0..m).step_by(BLOCK) {
                let rows = BLOCK.min(m - r0);
                let part = p.matmul(&x[r0 * k..(r0 + rows) * k], rows).unwrap();
                assert_eq!(
                    &all[r0 * n..(r0 + rows) * n],
                    &part[..],
                    "k {k}, rows {r0}.."
                );
            }
        }
    }

    #[test]
    fn shared_input_products_equal_the_separate_products() {
        for (m, k) in [(1, 40), (70, 576), (300, 96)] {
            let x = values(m * k, 3);
            let ws: Vec<PackedBf16> = [64, 20, 33]
                .iter()
                .enumerate()
                .map(|(i, &n)| PackedBf16::pack(&values(k * n, 10 + i as u64), k, n).unwrap())
                .collect();
            let refs: Vec<&PackedBf16> = ws.iter().collect();
            let shared = PackedBf16::matmul_shared(&refs, View::row_major(&x, m, k)).unwrap();
            assert_eq!(shared.len(), 3);
            for (w, y) in ws.iter().zip(&shared) {
                assert_eq!(y, &w.matmul(&x, m).unwrap(), "[{m}, {k}] @ [{k}, {}]", w.n);
            }
        }
        // Matrices of different depths are each multiplied on their own; a wrong width fails.
        let x = values(8 * 40, 4);
        let a = PackedBf16::pack(&values(40 * 8, 5), 40, 8).unwrap();
        let b = PackedBf16::pack(&values(30 * 8, 6), 30, 8).unwrap();
        assert!(PackedBf16::matmul_shared(&[&a, &b], View::row_major(&x, 8, 40)).is_err());
        assert!(PackedBf16::matmul_shared(&[&b], View::row_major(&x, 8, 40)).is_err());
    }

    /// Values that exercise the rounding: ties, NaN, infinities, subnormals, signed zeros.
    fn awkward(n: usize, seed: u64) -> Vec<f32> {
        let special = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            -0.0,
            1e-40,
            -3e-39,
            f32::MAX,
        ];
        let mut r = crate::rng::SplitMix(seed);
        (0..n)
            .map(|i| match r.next_u64() % 8 {
                0 => special[i % special.len()],
                1 => f32::from_bits(r.next_u64() as u32),
                _ => (r.next_u64() % 20_001) as f32 / 10_000.0 - 1.0,
            })
            .collect()
    }

    /// The AVX-512 packing and rounding give the portable loops' bits, on whole and partial
    /// tiles of both layouts.
    #[test]
    fn vector_packing_and_rounding_equal_the_portable_loops() {
        for (k, n) in [(32, 16), (64, 96), (33, 70), (96, 40), (576, 48), (5, 3)] {
            let w = awkward(k * n, 7);
            for transposed in [false, true] {
                let v = View {
                    data: &w,
                    rows: k,
                    cols: n,
                    transposed,
                };
                let kp = round_up(k, BLOCK);
                let panel = kp * BLOCK;
                let panels = round_up(n, BLOCK) / BLOCK;
                let mut portable = vec![MaybeUninit::new(1u16); panels * panel];
                let mut best = vec![MaybeUninit::new(2u16); panels * panel];
                for p in 0..panels {
                    pack_panel(v, p, &mut portable[p * panel..][..panel]);
                    pack_panel_best(v, p, &mut best[p * panel..][..panel]);
                }
                // SAFETY: both were initialised above and every value rewritten by the packers.
                let bits = |x: &[MaybeUninit<u16>]| -> Vec<u16> {
                    x.iter().map(|v| unsafe { v.assume_init() }).collect()
                };
                assert_eq!(
                    bits(&portable),
                    bits(&best),
                    "pack [{k}, {n}] t={transposed}"
                );
                // Rounding rows (16 at a time, as `round_input`) of the same view.
                let width = round_up(n, BLOCK);
                for r0 in (0..k.saturating_sub(15)).step_by(16) {
                    let mut a = vec![1u16; 16 * width];
                    let mut b = vec![2u16; 16 * width];
                    v.round_rows(r0, &mut a, width);
                    round_rows_best(v, r0, &mut b, width);
                    assert_eq!(a, b, "round rows {r0} of [{k}, {n}] t={transposed}");
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        assert!(PackedBf16::pack(&[1.0; 5], 2, 3).is_err());
        let p = PackedBf16::pack(&[1.0; 6], 2, 3).unwrap();
        assert!(p.matmul(&[1.0; 3], 1).is_err());
    }

    /// `a` `[r, c]` transposed, row-major `[c, r]`.
    fn transpose(a: &[f32], r: usize, c: usize) -> Vec<f32> {
        (0..r * c).map(|i| a[(i % r) * c + i / r]).collect()
    }

    #[test]
    fn transposed_views_pack_and_multiply_as_their_copies() {
        for (m, k, n) in [
            (1, 1, 1),
            (17, 40, 20),
            (33, 64, 96),
            (40, 70, 33),
            (150, 48, 40),
        ] {
            let x = values(m * k, 4);
            let w = values(k * n, 5);
            // The same matrices held transposed: xt `[k, m]`, wt `[n, k]`.
            let (xt, wt) = (transpose(&x, m, k), transpose(&w, k, n));
            let tv = |data, rows, cols| View {
                data,
                rows,
                cols,
                transposed: true,
            };
            let p = PackedBf16::pack(&w, k, n).unwrap();
            let pt = PackedBf16::pack_view(tv(&wt, k, n)).unwrap();
            assert_eq!(p.data, pt.data, "[{k}, {n}] packed from its transpose");
            let y = p.matmul(&x, m).unwrap();
            let yt = pt.matmul_view(tv(&xt, m, k)).unwrap();
            assert_eq!(y, yt, "[{m}, {k}] @ [{k}, {n}] from transposed inputs");
        }
    }

    /// f64 `round(a) @ round(b)` for row-major `a` `[m, k]`, `b` `[k, n]`, with the f32-sum
    /// error bound 4 · k · 2⁻²⁴ · Σ|a||b| of each element.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<(f64, f64)> {
        let r = |v: f32| from_bf16(to_bf16(v)) as f64;
        let mut out = Vec::with_capacity(m * n);
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut abs) = (0f64, 0f64);
                for t in 0..k {
                    let p = r(a[i * k + t]) * r(b[t * n + j]);
                    s += p;
                    abs += p.abs();
                }
                out.push((s, 4.0 * k as f64 * 2f64.powi(-24) * abs + 1e-30));
            }
        }
        out
    }

    fn check(name: &str, got: &[f32], want: &[(f64, f64)]) {
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (&g, &(w, bound))) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= bound,
                "{name}[{i}]: {g} vs {w} (bound {bound:e})"
            );
        }
    }

    #[test]
    fn linear_values_and_gradients_are_products_of_rounded_inputs() {
        use candle_core::{Device, Tensor, Var};
        let dev = Device::Cpu;
        for (m, k, n) in [(3, 5, 7), (40, 70, 33), (64, 96, 128)] {
            let x = values(m * k, 6);
            let w = values(k * n, 7);
            let g = values(m * n, 8);
            // The loss Σ y·g makes g the output gradient.
            let gt = Tensor::from_vec(g.clone(), (m, n), &dev).unwrap();
            // W as itself and as the transpose of a `[n, k]` parameter (a tied unembedding).
            for transposed in [false, true] {
                let xv = Var::from_vec(x.clone(), (m, k), &dev).unwrap();
                let wv = if transposed {
                    Var::from_vec(transpose(&w, k, n), (n, k), &dev).unwrap()
                } else {
                    Var::from_vec(w.clone(), (k, n), &dev).unwrap()
                };
                let wt = if transposed {
                    wv.as_tensor().t().unwrap()
                } else {
                    wv.as_tensor().clone()
                };
                let y = linear(xv.as_tensor(), &wt).unwrap();
                let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
                check("y", &flat(&y), &reference(&x, &w, m, k, n));
                let grads = (y * &gt).unwrap().sum_all().unwrap().backward().unwrap();
                // dL/dx = g @ Wᵀ, dL/dW = xᵀ @ g.
                let gx = flat(grads.get(xv.as_tensor()).unwrap());
                check("dx", &gx, &reference(&g, &transpose(&w, k, n), m, n, k));
                let gw = grads.get(wv.as_tensor()).unwrap();
                let gw = if transposed {
                    flat(&gw.t().unwrap())
                } else {
                    flat(gw)
                };
                check("dW", &gw, &reference(&transpose(&x, m, k), &g, k, m, n));
            }
        }
        // Mismatched shapes are an error.
        let a = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&a, &a).is_err());
    }
}
