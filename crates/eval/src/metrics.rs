//! Per-item scores and their aggregates, with lm-evaluation-harness's definitions.
//!
//! Multiple choice, per item: `acc` = 1 when the highest log-likelihood (first on ties, as
//! `np.argmax`) is a gold choice; `acc_norm` the same after dividing each log-likelihood by its
//! choice's length in characters (without the target delimiter); `acc_mutual_info` the same
//! on log p(choice | context) − log p(choice | prefix token); `exact_match` = 1 when greedy
//! decoding produces a gold choice. Log-likelihood tasks: `acc` is `is_greedy` and
//! `perplexity` is exp(−mean log-likelihood) over items. Aggregates are means with the standard
//! error √(s²/n), s² with n − 1 (the harness's `mean_stderr`).

use serde::Serialize;

use interplab_analysis::stats::mean_stderr;

use crate::loglik::Scored;

/// The metrics a multiple-choice item can report.
pub const MC_METRICS: [&str; 4] = ["acc", "acc_norm", "acc_mutual_info", "exact_match"];

/// One multiple-choice item, scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McItem {
    pub doc: usize,
    /// The prompt scored (few-shot examples, system prompt and chat template included); filled
    /// by [`crate::score_requests`], for per-item views.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub context: String,
    /// The choices as the task shows them (without the target delimiter).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    pub loglikelihoods: Vec<f64>,
    pub is_greedy: Vec<bool>,
    /// Tokens per continuation.
    pub tokens: Vec<usize>,
    /// Unconditional log-likelihoods (only with `acc_mutual_info`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unconditional: Vec<f64>,
    pub gold: Vec<usize>,
    pub pred: usize,
    pub pred_norm: usize,
    pub acc: f64,
    pub acc_norm: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_mutual_info: Option<f64>,
    pub exact_match: f64,
}

/// `np.argmax`: the first index of the maximum (NaN compares as smaller).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Scores one item from its choices' scores (and the unconditional scores, if any).
pub fn mc_item(
    doc: usize,
    choices: &[String],
    gold: &[usize],
    scored: &[Scored],
    unconditional: Option<&[Scored]>,
) -> McItem {
    let lls: Vec<f64> = scored.iter().map(|s| s.loglikelihood).collect();
    let norm: Vec<f64> = lls
        .iter()
        .zip(choices)
        .map(|(ll, c)| ll / c.chars().count() as f64)
        .collect();
    let pred = argmax(&lls);
    let pred_norm = argmax(&norm);
    let hit = |p: usize| if gold.contains(&p) { 1.0 } else { 0.0 };
    let unconditional: Vec<f64> = unconditional
        .map(|u| u.iter().map(|s| s.loglikelihood).collect())
        .unwrap_or_default();
    let acc_mutual_info = (!unconditional.is_empty()).then(|| {
        let mi: Vec<f64> = lls.iter().zip(&unconditional).map(|(c, u)| c - u).collect();
        hit(argmax(&mi))
    });
    let exact_match = if gold
        .iter()
        .any(|&g| scored.get(g).is_some_and(|s| s.is_greedy))
    {
        1.0
    } else {
        0.0
    };
    McItem {
        doc,
        context: String::new(),
        choices: Vec::new(),
        loglikelihoods: lls,
        is_greedy: scored.iter().map(|s| s.is_greedy).collect(),
        tokens: scored.iter().map(|s| s.tokens).collect(),
        unconditional,
        gold: gold.to_vec(),
        pred,
        pred_norm,
        acc: hit(pred),
        acc_norm: hit(pred_norm),
        acc_mutual_info,
        exact_match,
    }
}

/// One aggregated metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aggregate {
    pub metric: String,
    pub value: f64,
    /// Standard error of the mean (n − 1 in the variance); NaN for one item.
    pub stderr: f64,
    pub n: usize,
}

/// Mean and standard error of one per-item metric.
pub fn aggregate(metric: &str, values: &[f64]) -> Aggregate {
    let (value, stderr) = mean_stderr(values);
    Aggregate {
        metric: metric.to_string(),
        value,
        stderr,
        n: values.len(),
    }
}

/// The aggregates of `metrics` over multiple-choice items.
pub fn mc_aggregates(items: &[McItem], metrics: &[String]) -> Vec<Aggregate> {
    metrics
        .iter()
        .filter_map(|m| {
            let values: Vec<f64> = match m.as_str() {
                "acc" => items.iter().map(|i| i.acc).collect(),
                "acc_norm" => items.iter().map(|i| i.acc_norm).collect(),
                "exact_match" => items.iter().map(|i| i.exact_match).collect(),
                "acc_mutual_info" => items.iter().filter_map(|i| i.acc_mutual_info).collect(),
                _ => return None,
            };
            Some(aggregate(m, &values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ll: f64, greedy: bool) -> Scored {
        Scored {
            loglikelihood: ll,
            is_greedy: greedy,
            tokens: 1,
        }
    }

    #[test]
    fn acc_and_acc_norm_follow_the_harness() {
        // Choice 0 is likelier in total, choice 1 per character.
        let choices = vec!["ab".to_string(), "abcdefgh".to_string()];
        let item = mc_item(0, &choices, &[1], &[s(-2.0, true), s(-4.0, false)], None);
        assert_eq!((item.pred, item.pred_norm), (0, 1));
        assert_eq!((item.acc, item.acc_norm, item.exact_match), (0.0, 1.0, 0.0));
        assert_eq!(item.acc_mutual_info, None);
        // Mutual information: choice 1 is much less likely unconditionally.
        let item = mc_item(
            0,
            &choices,
            &[1],
            &[s(-2.0, true), s(-4.0, false)],
            Some(&[s(-1.0, false), s(-9.0, false)]),
        );
        assert_eq!(item.acc_mutual_info, Some(1.0));
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn stderr_uses_n_minus_one() {
        let a = aggregate("acc", &[1.0, 0.0, 1.0, 1.0]);
        assert_eq!(a.value, 0.75);
        // s² = 0.25 (n − 1 = 3), stderr = √(0.25/4) = 0.25.
        assert!((a.stderr - 0.25).abs() < 1e-15);
    }
}
