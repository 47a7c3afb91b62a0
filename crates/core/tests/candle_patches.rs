//! The vendored candle-core's own copy paths (vendor/candle-core/PATCHED.md) against the
//! definition: a transposed matrix made contiguous, and index-add into a transposed gradient
//! (a tied embedding's), element by element.

use candle_core::{Device, Tensor};

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 1000) as f32 - 500.0).collect()
}

#[test]
fn transposed_copies_equal_the_element_by_element_definition() {
    let dev = Device::Cpu;
    // Tile edges (1, 31, 32, 33, 70 rows or columns), a narrowed source (row stride larger
    // than the rows read) and a start offset.
    for (rows, cols) in [(2, 2), (31, 33), (32, 32), (70, 3), (3, 70), (65, 97)] {
        let full =
            Tensor::from_vec(values((cols + 2) * (rows + 5)), (cols + 2, rows + 5), &dev).unwrap();
        let src = full.narrow(0, 1, cols).unwrap().narrow(1, 3, rows).unwrap();
        let t = src.t().unwrap();
        assert_eq!(t.dims(), [rows, cols]);
        assert!(!t.is_contiguous());
        let got: Vec<f32> = t
            .contiguous()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let f: Vec<Vec<f32>> = full.to_vec2().unwrap();
        for i in 0..rows {
            for j in 0..cols {
                assert_eq!(
                    got[i * cols + j],
                    f[1 + j][3 + i],
                    "[{rows}, {cols}] at ({i}, {j})"
                );
            }
        }
    }
}

#[test]
fn index_add_into_a_transposed_gradient_equals_the_definition() {
    let dev = Device::Cpu;
    let (vocab, d) = (50, 40);
    // The unembedding's gradient arrives as the transpose of a [d, vocab] product.
    let g = Tensor::from_vec(values(d * vocab), (d, vocab), &dev).unwrap();
    let sum = g.t().unwrap();
    let ids = Tensor::new(&[3u32, 7, 3, 49], &dev).unwrap();
    let rows = Tensor::from_vec(
        values(4 * d).iter().map(|v| v * 0.5).collect(),
        (4, d),
        &dev,
    )
    .unwrap();
    let got: Vec<Vec<f32>> = sum.index_add(&ids, &rows, 0).unwrap().to_vec2().unwrap();
    let gv: Vec<Vec<f32>> = g.to_vec2().unwrap();
    let rv: Vec<Vec<f32>> = rows.to_vec2().unwrap();
    for (w, row) in got.iter().enumerate() {
        for (c, &x) in row.iter().enumerate() {
            let mut want = gv[c][w];
            for (k, &id) in [3usize, 7, 3, 49].iter().enumerate() {
                if id == w {
                    want += rv[k][c];
                }
            }
            assert_eq!(x, want, "({w}, {c})");
        }
    }
}
