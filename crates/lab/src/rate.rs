//! A share of successes with its Wilson 95% interval: how the agenda's evals report a rate.

use interplab_analysis::probe::wilson_interval;
use serde::{Deserialize, Serialize};

/// `k` of `n`, the rate and its Wilson 95% score interval (NaN for `n` = 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub k: usize,
    pub n: usize,
    pub rate: f64,
    /// Wilson 95% interval of `rate`.
    pub ci: (f64, f64),
}

impl Rate {
    /// The rate of `k` successes in `n` trials.
    pub fn of(k: usize, n: usize) -> Rate {
        Rate {
            k,
            n,
            rate: if n == 0 {
                f64::NAN
            } else {
                k as f64 / n as f64
            },
            ci: wilson_interval(k, n),
        }
    }

    /// The rate of `true` in a slice.
    pub fn flags(v: &[bool]) -> Rate {
        Rate::count(v.iter().copied())
    }

    /// The rate of `true` among `flags`.
    pub fn count(flags: impl IntoIterator<Item = bool>) -> Rate {
        let (mut k, mut n) = (0, 0);
        for f in flags {
            k += usize::from(f);
            n += 1;
        }
        Rate::of(k, n)
    }

    /// `0.42 [0.31, 0.54] (21/50)`.
    pub fn show(&self) -> String {
        format!(
            "{:.3} [{:.3}, {:.3}] ({}/{})",
            self.rate, self.ci.0, self.ci.1, self.k, self.n
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bounds() {
        let r = Rate::count([true, false, true, true]);
        assert_eq!((r.k, r.n), (3, 4));
        assert!((r.rate - 0.75).abs() < 1e-12);
        assert!(r.ci.0 < 0.75 && 0.75 < r.ci.1);
        let none = Rate::of(0, 10);
        assert_eq!(none.ci.0, 0.0);
        assert!(none.ci.1 > 0.0 && none.ci.1 < 0.35);
        assert!(Rate::of(0, 0).rate.is_nan());
        // statsmodels: proportion_confint(1, 2, method="wilson") = (0.0945, 0.9055).
        assert_eq!(Rate::of(1, 2).show(), "0.500 [0.095, 0.905] (1/2)");
    }
}
