//! Config validation that reports every problem at once.

/// Collects the problems of a config; [`Problems::finish`] turns them into one error.
#[derive(Debug, Default)]
pub struct Problems {
    what: String,
    found: Vec<String>,
}

impl Problems {
    /// Problems of the config of `what` (an experiment name, for the message).
    pub fn new(what: &str) -> Self {
        Problems {
            what: what.to_string(),
            found: Vec::new(),
        }
    }

    /// Record `msg` unless `ok`.
    pub fn check(&mut self, ok: bool, msg: impl Into<String>) -> &mut Self {
        if !ok {
            self.found.push(msg.into());
        }
        self
    }

    /// Record `msg` unconditionally.
    pub fn push(&mut self, msg: impl Into<String>) -> &mut Self {
        self.found.push(msg.into());
        self
    }

    /// `value` must lie in `[lo, hi]` (and not be NaN).
    pub fn range(&mut self, name: &str, value: f64, lo: f64, hi: f64) -> &mut Self {
        let ok = value >= lo && value <= hi;
        self.check(ok, format!("{name} must be in [{lo}, {hi}], got {value}"))
    }

    /// `value` must be at least 1.
    pub fn positive(&mut self, name: &str, value: usize) -> &mut Self {
        self.check(
            value >= 1,
            format!("{name} must be at least 1, got {value}"),
        )
    }

    /// Ok when nothing was found; otherwise one error listing every problem.
    pub fn finish(&self) -> anyhow::Result<()> {
        match self.found.len() {
            0 => Ok(()),
            _ => anyhow::bail!("invalid {} config: {}", self.what, self.found.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_listed() {
        let mut p = Problems::new("heads");
        p.positive("n_seq", 0)
            .range("top_p", 2.0, 0.0, 1.0)
            .range("x", f64::NAN, 0.0, 1.0);
        let e = p.finish().unwrap_err().to_string();
        assert!(e.contains("n_seq must be at least 1"), "{e}");
        assert!(e.contains("top_p must be in [0, 1], got 2"), "{e}");
        assert!(e.contains("x must be in"), "{e}");
        assert!(Problems::new("x").check(true, "no").finish().is_ok());
    }
}
