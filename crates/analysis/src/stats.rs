//! Numbers every analysis reports the same way: next-token losses and means with their
//! standard errors, all in f64.

use candle_core::{DType, Tensor, D};
use interplab_core::model::log_softmax;
use interplab_core::Result;

/// Next-token cross-entropy −log p(token | prefix), nats, of every row of `logits`
/// `[batch, n, vocab]` against `tokens` (`n` ids): `[batch][n − 1]`.
pub fn next_token_losses(logits: &Tensor, tokens: &[u32]) -> Result<Vec<Vec<f64>>> {
    let (b, n, _) = logits.dims3()?;
    let lp = log_softmax(&logits.narrow(1, 0, n - 1)?.to_dtype(DType::F32)?)?;
    let targets = Tensor::new(&tokens[1..], logits.device())?
        .reshape((1, n - 1, 1))?
        .repeat((b, 1, 1))?;
    let picked: Vec<Vec<f32>> = lp
        .gather(&targets, D::Minus1)?
        .squeeze(D::Minus1)?
        .to_vec2()?;
    Ok(picked
        .iter()
        .map(|r| r.iter().map(|&x| -(x as f64)).collect())
        .collect())
}

/// The mean of `v` and its standard error (sample standard deviation / √n; NaN below two
/// values).
pub fn mean_stderr(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

#[cfg(test)]
mod tests {
    #[test]
    fn mean_and_standard_error() {
        // Sample sd of 1..=4 is sqrt(5/3); se = sd / 2.
        let (m, se) = super::mean_stderr(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((se - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
        assert!(super::mean_stderr(&[1.0]).1.is_nan());
    }
}
