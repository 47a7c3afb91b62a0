//! CPU kernels on flat row-major f32 buffers: the dense encoder product, row activations into
//! sparse codes, and the products with sparse codes that decoding and the backward pass need.
//!
//! Every product with codes has two paths: a sparse one (cost ∝ nonzeros) and, when the codes
//! are dense enough that a blocked matrix product wins (ReLU SAEs early in training), a dense
//! one through `gemm`. Both give the same sums up to f32 rounding order.

use rayon::prelude::*;

use crate::sae::Codes;

pub use interplab_train::linalg::matmul;

/// `op(a) · op(b)` as a new row-major `m×n` buffer (`op` as in [`matmul`]): f32 products, or with
/// `bf16` both operands rounded to bf16 and the sums kept in f32 (on AMX where the CPU has it;
/// what PyTorch's bf16 autocast does to a matrix product). A product with an empty dimension
/// is the f32 one.
#[allow(clippy::too_many_arguments)]
pub fn product(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    bf16: bool,
) -> Vec<f32> {
    use interplab_core::bf16::{PackedBf16, View};
    if bf16 && m > 0 && k > 0 && n > 0 {
        let view = |data, rows, cols, transposed| View {
            data,
            rows,
            cols,
            transposed,
        };
        // The views' shapes are the ones `matmul` asserts; only a caller's bug fails here.
        return PackedBf16::pack_view(view(b, k, n, tb))
            .and_then(|w| w.matmul_view(view(a, m, k, ta)))
            .expect("bf16 product: operands do not match m, k, n");
    }
    let mut c = vec![0.0f32; m * n];
    matmul(&mut c, a, b, m, k, n, ta, tb, false);
    c
}

/// Above this fraction of nonzeros, products with codes go through a dense matrix product.
pub const DENSE_ABOVE: f64 = 1.0 / 24.0;

/// Add `bias` to every row of `m`.
pub fn add_bias_rows(m: &mut [f32], bias: &[f32]) {
    let n = bias.len();
    m.par_chunks_mut(n * 64.max(1)).for_each(|block| {
        for row in block.chunks_exact_mut(n) {
            for (a, b) in row.iter_mut().zip(bias) {
                *a += b;
            }
        }
    });
}

/// `[c, r]` from `[r, c]`.
pub fn transpose(m: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = m[i * c + j];
        }
    }
    out
}

/// Codes of every row of `pre` (`[n, width]`), each row's entries chosen by `f`.
pub fn activate_rows(
    pre: &[f32],
    width: usize,
    f: impl Fn(&[f32], &mut Vec<(u32, f32)>) + Sync,
) -> Codes {
    let rows: Vec<Vec<(u32, f32)>> = pre
        .par_chunks(width)
        .map(|row| {
            let mut out = Vec::new();
            f(row, &mut out);
            out
        })
        .collect();
    Codes::from_rows(rows)
}

/// ReLU: every positive entry.
pub fn relu_row(row: &[f32], out: &mut Vec<(u32, f32)>) {
    for (i, &v) in row.iter().enumerate() {
        if v > 0.0 {
            out.push((i as u32, v));
        }
    }
}

/// The `k` largest entries (ties broken towards the lower index), then ReLU; in index order.
pub fn topk_row(row: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    for i in topk_indices(row, k, |_| true) {
        if row[i as usize] > 0.0 {
            out.push((i, row[i as usize]));
        }
    }
}

/// Indices of the `k` largest entries among those `keep` admits (fewer if fewer are admitted),
/// in increasing index order. Ties go to the lower index.
pub fn topk_indices(row: &[f32], k: usize, keep: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32)
        .filter(|&i| keep(i as usize))
        .collect();
    if idx.len() > k {
        let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
        if k > 0 {
            idx.select_nth_unstable_by(k - 1, cmp);
        }
        idx.truncate(k);
    }
    idx.sort_unstable();
    idx
}

/// JumpReLU: `relu(pre)·[pre > θ]` — positive entries above their threshold (SAELens'
/// inference form; the same as `pre·[pre > θ]` for θ ≥ 0, which training keeps).
pub fn jump_row(row: &[f32], threshold: &[f32], out: &mut Vec<(u32, f32)>) {
    for (i, (&v, &t)) in row.iter().zip(threshold).enumerate() {
        if v > t && v > 0.0 {
            out.push((i as u32, v));
        }
    }
}

/// Whether products with `codes` take the dense path.
fn dense(codes: &Codes, width: usize) -> bool {
    codes.nnz() as f64 / (codes.rows().max(1) * width.max(1)) as f64 > DENSE_ABOVE
}

/// `codes · w + bias`: `[n, d]` from codes over `width` latents and `w` `[width, d]`.
pub fn decode(codes: &Codes, w: &[f32], bias: &[f32], width: usize, d: usize) -> Vec<f32> {
    let n = codes.rows();
    let mut out = vec![0.0f32; n * d];
    codes_times(codes, w, width, d, &mut out);
    if !bias.is_empty() {
        add_bias_rows(&mut out, bias);
    }
    out
}

/// `out += codes · w` with `w` `[width, d]`.
pub fn codes_times(codes: &Codes, w: &[f32], width: usize, d: usize, out: &mut [f32]) {
    codes_times_on(codes, w, width, d, out, dense(codes, width))
}

fn codes_times_on(codes: &Codes, w: &[f32], width: usize, d: usize, out: &mut [f32], dense: bool) {
    let n = codes.rows();
    if dense {
        let dense = codes.to_dense(width);
        matmul(out, &dense, w, n, width, d, false, false, true);
        return;
    }
    out.par_chunks_mut(d).enumerate().for_each(|(b, o)| {
        for (i, v) in codes.row(b) {
            let wr = &w[i * d..(i + 1) * d];
            for (a, x) in o.iter_mut().zip(wr) {
                *a += v * x;
            }
        }
    });
}

/// For every entry `(b, i)` of `pattern`, the dot product `g[b] · w[i]` (`g` `[n, d]`, `w`
/// `[width, d]`), in the pattern's order.
pub fn gather_dots(pattern: &Codes, g: &[f32], w: &[f32], width: usize, d: usize) -> Vec<f32> {
    gather_dots_on(pattern, g, w, width, d, dense(pattern, width))
}

fn gather_dots_on(
    pattern: &Codes,
    g: &[f32],
    w: &[f32],
    width: usize,
    d: usize,
    dense: bool,
) -> Vec<f32> {
    let n = pattern.rows();
    if dense {
        let mut full = vec![0.0f32; n * width];
        matmul(&mut full, g, w, n, d, width, false, true, false);
        let mut out = Vec::with_capacity(pattern.nnz());
        for b in 0..n {
            for (i, _) in pattern.row(b) {
                out.push(full[b * width + i]);
            }
        }
        return out;
    }
    let mut out = vec![0.0f32; pattern.nnz()];
    // Split the output by rows: each chunk of `out` belongs to a run of rows.
    let mut slices: Vec<(usize, &mut [f32])> = Vec::with_capacity(n);
    let mut rest: &mut [f32] = &mut out;
    for b in 0..n {
        let len = pattern.ptr[b + 1] - pattern.ptr[b];
        let (head, tail) = rest.split_at_mut(len);
        slices.push((b, head));
        rest = tail;
    }
    slices.into_par_iter().for_each(|(b, o)| {
        let gb = &g[b * d..(b + 1) * d];
        for (slot, (i, _)) in o.iter_mut().zip(pattern.row(b)) {
            let wr = &w[i * d..(i + 1) * d];
            *slot = dot(gb, wr);
        }
    });
    out
}

/// `grad[i] += Σ_b codes[b, i] · g[b]` for `grad` `[width, d]`, `g` `[n, d]`: the gradient of
/// a matrix whose rows the codes combine.
pub fn codes_t_times(codes: &Codes, g: &[f32], width: usize, d: usize, grad: &mut [f32]) {
    codes_t_times_on(codes, g, width, d, grad, dense(codes, width))
}

fn codes_t_times_on(
    codes: &Codes,
    g: &[f32],
    width: usize,
    d: usize,
    grad: &mut [f32],
    dense: bool,
) {
    let n = codes.rows();
    if dense {
        let dense = codes.to_dense(width);
        matmul(grad, &dense, g, width, n, d, true, false, true);
        return;
    }
    // Column view: for each latent, its (row, value) entries.
    let mut count = vec![0usize; width + 1];
    for &i in &codes.idx {
        count[i as usize + 1] += 1;
    }
    for i in 0..width {
        count[i + 1] += count[i];
    }
    let mut fill = count.clone();
    let mut rows = vec![0u32; codes.nnz()];
    let mut vals = vec![0f32; codes.nnz()];
    for b in 0..n {
        for (i, v) in codes.row(b) {
            let p = fill[i];
            rows[p] = b as u32;
            vals[p] = v;
            fill[i] += 1;
        }
    }
    grad.par_chunks_mut(d).enumerate().for_each(|(i, gr)| {
        for p in count[i]..count[i + 1] {
            let b = rows[p] as usize;
            let v = vals[p];
            for (a, x) in gr.iter_mut().zip(&g[b * d..(b + 1) * d]) {
                *a += v * x;
            }
        }
    });
}

/// Dot product with four f32 accumulators.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes_fixture() -> (Codes, usize) {
        let rows = vec![
            vec![(0u32, 1.5f32), (3, -2.0)],
            vec![],
            vec![(1, 0.5), (2, 3.0), (3, 1.0)],
        ];
        (Codes::from_rows(rows), 4)
    }

    #[test]
    fn sparse_and_dense_paths_agree() {
        let (c, width) = codes_fixture();
        let d = 5;
        let w: Vec<f32> = (0..width * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let g: Vec<f32> = (0..c.rows() * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let dense = c.to_dense(width);
        for path in [false, true] {
            // decode
            let mut want = vec![0.0f32; c.rows() * d];
            matmul(
                &mut want,
                &dense,
                &w,
                c.rows(),
                width,
                d,
                false,
                false,
                false,
            );
            let mut got = vec![0.0f32; c.rows() * d];
            codes_times_on(&c, &w, width, d, &mut got, path);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5);
            }
            // gather dots
            let dots = gather_dots_on(&c, &g, &w, width, d, path);
            let mut k = 0;
            for b in 0..c.rows() {
                for (i, _) in c.row(b) {
                    let want: f32 = (0..d).map(|j| g[b * d + j] * w[i * d + j]).sum();
                    assert!((dots[k] - want).abs() < 1e-5);
                    k += 1;
                }
            }
            // transpose product
            let mut grad = vec![0.0f32; width * d];
            codes_t_times_on(&c, &g, width, d, &mut grad, path);
            let mut want = vec![0.0f32; width * d];
            matmul(
                &mut want,
                &dense,
                &g,
                width,
                c.rows(),
                d,
                true,
                false,
                false,
            );
            for (a, b) in grad.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn topk_keeps_the_largest_and_breaks_ties_low() {
        let row = [0.5, 2.0, -1.0, 2.0, 1.0];
        assert_eq!(topk_indices(&row, 2, |_| true), vec![1, 3]);
        assert_eq!(topk_indices(&row, 3, |_| true), vec![1, 3, 4]);
        let mut out = Vec::new();
        topk_row(&[-1.0, -2.0, 0.5], 2, &mut out);
        assert_eq!(out, vec![(2, 0.5)]); // ReLU after the top-k
        assert_eq!(topk_indices(&row, 2, |i| i != 1), vec![3, 4]);
    }
}
