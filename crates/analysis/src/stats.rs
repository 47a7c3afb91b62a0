//! Numbers every analysis reports the same way, all in f64: next-token losses, means with their
//! standard errors and t-intervals, correlations (Pearson, Spearman) with Fisher-z intervals.

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

/// Pearson's correlation of `x` and `y` (NaN when either is constant or shorter than 2).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return f64::NAN;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

/// Ranks 1..=n, tied values sharing the mean of their ranks.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation: [`pearson`] of [`average_ranks`].
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Fisher-z 95% interval of a correlation `r` over `n` pairs (NaN below 4 pairs or for NaN r).
pub fn correlation_interval(r: f64, n: usize) -> (f64, f64) {
    if n < 4 || !r.is_finite() {
        return (f64::NAN, f64::NAN);
    }
    let z = r.clamp(-1.0 + 1e-15, 1.0 - 1e-15).atanh();
    let half = 1.959963984540054 / ((n - 3) as f64).sqrt();
    ((z - half).tanh(), (z + half).tanh())
}

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom (scipy's
/// `t.ppf(0.975, df)` to 4 decimals for df ≤ 30; the normal 1.96 beyond, within 0.03).
pub fn t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010,
        2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739,
        2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => 1.959963984540054,
    }
}

/// Mean of the finite values of `v` and the half-width of its 95% t-interval over them
/// (NaN half-width below two values), and how many were finite.
pub fn mean_interval(v: &[f64]) -> (f64, f64, usize) {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let n = f.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, 0);
    }
    let (mean, se) = mean_stderr(&f);
    (mean, if n < 2 { f64::NAN } else { t_975(n - 1) * se }, n)
}

/// The index of the largest value (the first of ties; 0 for an empty slice).
pub fn argmax(r: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in r.iter().enumerate() {
        if x > r[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn mean_and_standard_error() {
        // Sample sd of 1..=4 is sqrt(5/3); se = sd / 2.
        let (m, se) = super::mean_stderr(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((se - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
        assert!(super::mean_stderr(&[1.0]).1.is_nan());
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 5.0]),
            vec![2.0, 3.5, 3.5, 1.0]
        );
        // A monotone but non-linear relation: Spearman 1, Pearson below 1.
        let x: Vec<f64> = (1..=10).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| v.powi(4)).collect();
        assert!((spearman(&x, &y) - 1.0).abs() < 1e-12);
        assert!(pearson(&x, &y) < 0.95);
        assert!(pearson(&x, &[1.0; 10]).is_nan());
    }

    #[test]
    fn correlations_match_scipy() {
        // scipy 1.17.1's pearsonr (with its Fisher-z confidence_interval) and spearmanr of
        // vectors with ties, written by scripts/reference/make_memorise_reference.py.
        let f: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/memorise_reference.json"))
                .unwrap();
        let v = |k: &str| -> Vec<f64> {
            f[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let (x, y) = (v("x"), v("y"));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(pearson(&x, &y), f["pearson"].as_f64().unwrap()));
        assert!(close(spearman(&x, &y), f["spearman"].as_f64().unwrap()));
        let (lo, hi) = correlation_interval(pearson(&x, &y), x.len());
        let ci = v("pearson_ci");
        assert!(
            (lo - ci[0]).abs() < 1e-9 && (hi - ci[1]).abs() < 1e-9,
            "{lo} {hi} vs {ci:?}"
        );
    }

    #[test]
    fn t_quantiles_match_scipy() {
        // scipy.stats.t.ppf(0.975, df), written by scripts/reference/make_memorise_reference.py.
        let f: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/memorise_reference.json"))
                .unwrap();
        for (df, q) in f["t_975"].as_array().unwrap().iter().enumerate() {
            let q = q.as_f64().unwrap();
            assert!((super::t_975(df + 1) - q).abs() < 1e-4, "df {}", df + 1);
        }
        let (m, h, n) = super::mean_interval(&[1.0, 2.0, 3.0, f64::NAN]);
        assert_eq!((m, n), (2.0, 3));
        assert!((h - 4.3027 * (1.0f64 / 3.0).sqrt()).abs() < 1e-3);
    }
}
