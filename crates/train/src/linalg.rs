//! Row-major f32 matrix products on the `gemm` crate (the kernel candle's CPU matmul uses),
//! without tensors: hand-written training loops call it on their own buffers.

/// `c (m×n) = [c +] op(a) · op(b)`, all row-major. `op(a)` is `m×k`: `a` is stored `m×k`, or
/// `k×m` when `ta` (so `op(a) = aᵀ`). `op(b)` is `k×n`: `b` is stored `k×n`, or `n×k` when `tb`.
/// With `accumulate` the product is added to `c`, else `c` is overwritten.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    accumulate: bool,
) {
    assert_eq!(c.len(), m * n, "matmul: output is not m×n");
    assert_eq!(a.len(), m * k, "matmul: left operand is not m×k");
    assert_eq!(b.len(), k * n, "matmul: right operand is not k×n");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    // Small products are not worth waking the thread pool.
    let par = if m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above make every index the strides can reach fall inside the slices:
    // c spans (m-1)·n + (n-1), op(a) spans (m-1)·a_rs + (k-1)·a_cs < m·k, op(b) likewise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for l in 0..k {
                    let x = if ta { a[l * m + i] } else { a[i * k + l] };
                    let y = if tb { b[j * k + l] } else { b[l * n + j] };
                    s += x as f64 * y as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_in_every_layout() {
        let mut rng = interplab_core::rng::SplitMix::new(3);
        for &(m, k, n) in &[(1, 7, 5), (13, 9, 17), (70, 65, 90), (3, 1, 4)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
            for ta in [false, true] {
                for tb in [false, true] {
                    let want = naive(&a, &b, m, k, n, ta, tb);
                    let mut c = vec![1.0f32; m * n];
                    matmul(&mut c, &a, &b, m, k, n, ta, tb, false);
                    for (x, y) in c.iter().zip(&want) {
                        assert!((x - y).abs() < 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
                    }
                    matmul(&mut c, &a, &b, m, k, n, ta, tb, true);
                    for (x, y) in c.iter().zip(&want) {
                        assert!((x - 2.0 * y).abs() < 2e-4 * (1.0 + y.abs()), "{x} vs 2·{y}");
                    }
                }
            }
        }
    }
}
