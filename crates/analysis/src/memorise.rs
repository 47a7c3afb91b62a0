//! Memorisation: how much of a known continuation a model reproduces, and whether one model's
//! memorisation predicts another's.
//!
//! Definitions (all on token ids; `target` is the true continuation of `m` tokens, `generated`
//! the model's greedy continuation of the same length):
//! - [`longest_common_prefix`]: the number of leading tokens that agree;
//! - [`edit_distance`]: Levenshtein distance (insertions, deletions, substitutions, each cost 1);
//! - [`Recall::similarity`] = 1 − edit distance / m (1 = verbatim);
//! - *exact* recall: `generated == target` (Carlini et al.'s "extractable" with the whole
//!   continuation); *near-verbatim*: similarity ≥ [`NEAR_VERBATIM`], i.e. at most one edit in
//!   ten tokens (exact recall is near-verbatim too).
//!
//! Comparing two models on the same sequences ([`compare`]): Pearson and Spearman correlation
//! of their similarities (Spearman = Pearson of average ranks, ties shared), each with a
//! Fisher-z 95% interval (`tanh(atanh r ± 1.96/√(n−3))`), and, for "the small model memorises
//! ⇒ the large one does", with memorised = near-verbatim: precision = P(large | small), recall
//! = P(small | large), each with a Wilson 95% interval.

use candle_core::{DType, Tensor, D};
use interplab_core::model::{log_softmax, HookedTransformer};
use interplab_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::probe::wilson_interval;
use crate::stats::{correlation_interval, pearson, spearman};

/// Similarity at or above which a continuation counts as near-verbatim (at most one edit in
/// ten tokens).
pub const NEAR_VERBATIM: f64 = 0.9;

/// The number of leading positions where `a` and `b` agree.
pub fn longest_common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Levenshtein distance between `a` and `b` (unit costs), in O(|a|·|b|) time, O(|b|) memory.
pub fn edit_distance(a: &[u32], b: &[u32]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let sub = diag + usize::from(x != y);
            diag = row[j + 1];
            row[j + 1] = sub.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// How much of one target continuation a model reproduced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recall {
    /// Tokens in the target.
    pub m: usize,
    /// [`longest_common_prefix`] of the generation and the target.
    pub lcp: usize,
    /// [`edit_distance`] between them.
    pub edit_distance: usize,
    /// 1 − edit_distance / m.
    pub similarity: f64,
    /// The generation equals the target.
    pub exact: bool,
    /// `similarity ≥ NEAR_VERBATIM`.
    pub near_verbatim: bool,
}

/// Score `generated` against `target` (a generation shorter or longer than the target is
/// compared as it is: missing or extra tokens are edits). `target` must not be empty.
pub fn score(target: &[u32], generated: &[u32]) -> Recall {
    let m = target.len();
    let lcp = longest_common_prefix(target, generated);
    let ed = edit_distance(target, generated);
    let similarity = 1.0 - ed as f64 / m.max(1) as f64;
    Recall {
        m,
        lcp,
        edit_distance: ed,
        similarity,
        exact: target == generated,
        near_verbatim: similarity >= NEAR_VERBATIM - 1e-12,
    }
}

/// Mean next-token loss (nats) of the tokens at positions `from..` of each sequence, with the
/// model reading each whole sequence (teacher forcing): how surprised the model is by a known
/// continuation after its prefix. Sequences must all have the same length, above `from ≥ 1`;
/// they run in batches of `batch`.
pub fn continuation_losses(
    model: &HookedTransformer,
    seqs: &[Vec<u32>],
    from: usize,
    batch: usize,
) -> Result<Vec<f64>> {
    let Some(n) = seqs.first().map(Vec::len) else {
        return Ok(Vec::new());
    };
    if from == 0 || from >= n || seqs.iter().any(|s| s.len() != n) {
        return Err(Error::Input(format!(
            "continuation losses need sequences of one length above the prefix ({from} tokens)"
        )));
    }
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(batch.max(1)) {
        let b = chunk.len();
        let ids: Vec<u32> = chunk.iter().flatten().copied().collect();
        let t = Tensor::from_vec(ids, (b, n), model.device())?;
        // Logits at positions from−1 .. n−2 predict the tokens at from .. n−1.
        let logits = model.forward(&t)?.narrow(1, from - 1, n - from)?;
        let lp = log_softmax(&logits.to_dtype(DType::F32)?)?;
        let targets: Vec<u32> = chunk
            .iter()
            .flat_map(|s| s[from..].iter().copied())
            .collect();
        let targets = Tensor::from_vec(targets, (b, n - from, 1), model.device())?;
        let picked: Vec<Vec<f32>> = lp
            .gather(&targets, D::Minus1)?
            .squeeze(D::Minus1)?
            .to_vec2()?;
        for row in picked {
            out.push(-row.iter().map(|&x| x as f64).sum::<f64>() / row.len() as f64);
        }
    }
    Ok(out)
}

/// Does the small model's memorisation predict the large one's, over the same sequences?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Sequences compared.
    pub n: usize,
    /// Pearson correlation of the similarities, with its Fisher-z 95% interval.
    pub pearson: f64,
    pub pearson_ci: (f64, f64),
    /// Spearman correlation of the similarities, with its Fisher-z 95% interval.
    pub spearman: f64,
    pub spearman_ci: (f64, f64),
    /// Sequences near-verbatim in both, the small only, the large only, neither.
    pub both: usize,
    pub small_only: usize,
    pub large_only: usize,
    pub neither: usize,
    /// P(large memorises | small memorises), with its Wilson 95% interval (NaN when the small
    /// model memorises nothing).
    pub precision: f64,
    pub precision_ci: (f64, f64),
    /// P(small memorises | large memorises), with its Wilson 95% interval.
    pub recall: f64,
    pub recall_ci: (f64, f64),
}

/// Compare two models' recalls of the same sequences, element by element.
pub fn compare(small: &[Recall], large: &[Recall]) -> Comparison {
    let n = small.len().min(large.len());
    let xs: Vec<f64> = small[..n].iter().map(|r| r.similarity).collect();
    let ys: Vec<f64> = large[..n].iter().map(|r| r.similarity).collect();
    let (mut both, mut small_only, mut large_only, mut neither) = (0, 0, 0, 0);
    for (s, l) in small[..n].iter().zip(&large[..n]) {
        match (s.near_verbatim, l.near_verbatim) {
            (true, true) => both += 1,
            (true, false) => small_only += 1,
            (false, true) => large_only += 1,
            (false, false) => neither += 1,
        }
    }
    let ratio = |k: usize, d: usize| {
        if d == 0 {
            f64::NAN
        } else {
            k as f64 / d as f64
        }
    };
    let (p, s) = (pearson(&xs, &ys), spearman(&xs, &ys));
    Comparison {
        n,
        pearson: p,
        pearson_ci: correlation_interval(p, n),
        spearman: s,
        spearman_ci: correlation_interval(s, n),
        both,
        small_only,
        large_only,
        neither,
        precision: ratio(both, both + small_only),
        precision_ci: wilson_interval(both, both + small_only),
        recall: ratio(both, both + large_only),
        recall_ci: wilson_interval(both, both + large_only),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scorer_on_constructed_strings() {
        let t: Vec<u32> = (0..20).collect();
        // Verbatim.
        let r = score(&t, &t);
        assert_eq!(
            (r.lcp, r.edit_distance, r.exact, r.near_verbatim),
            (20, 0, true, true)
        );
        assert_eq!(r.similarity, 1.0);
        // One substitution at position 5: prefix 5, one edit, near-verbatim but not exact.
        let mut g = t.clone();
        g[5] = 99;
        let r = score(&t, &g);
        assert_eq!((r.lcp, r.edit_distance, r.exact), (5, 1, false));
        assert!((r.similarity - 0.95).abs() < 1e-12 && r.near_verbatim);
        // Two edits in 20 tokens is exactly the threshold (0.9): still near-verbatim.
        g[6] = 98;
        assert!(score(&t, &g).near_verbatim);
        g[7] = 97;
        assert!(!score(&t, &g).near_verbatim);
        // A shift by one token (the model skipped token 0): the prefix is 0 but the edit
        // distance is 2 (a deletion at the front, an insertion at the end).
        let mut shifted: Vec<u32> = t[1..].to_vec();
        shifted.push(50);
        let r = score(&t, &shifted);
        assert_eq!((r.lcp, r.edit_distance), (0, 2));
        // Nothing in common: every token substituted.
        let other: Vec<u32> = (100..120).collect();
        let r = score(&t, &other);
        assert_eq!((r.lcp, r.edit_distance, r.similarity), (0, 20, 0.0));
        // A shorter generation: the missing tokens are deletions.
        let r = score(&t, &t[..15]);
        assert_eq!((r.lcp, r.edit_distance), (15, 5));
    }

    #[test]
    fn edit_distance_known_cases() {
        // kitten -> sitting: 3 (the textbook case), as bytes.
        let ids = |s: &str| s.bytes().map(u32::from).collect::<Vec<u32>>();
        assert_eq!(edit_distance(&ids("kitten"), &ids("sitting")), 3);
        assert_eq!(edit_distance(&ids("flaw"), &ids("lawn")), 2);
        assert_eq!(edit_distance(&ids(""), &ids("abc")), 3);
        assert_eq!(edit_distance(&ids("abc"), &ids("")), 3);
        assert_eq!(edit_distance(&ids("abc"), &ids("abc")), 0);
        // Symmetric.
        assert_eq!(edit_distance(&ids("sitting"), &ids("kitten")), 3);
    }

    fn recall_with(similarity: f64) -> Recall {
        Recall {
            m: 10,
            lcp: 0,
            edit_distance: ((1.0 - similarity) * 10.0).round() as usize,
            similarity,
            exact: similarity == 1.0,
            near_verbatim: similarity >= NEAR_VERBATIM,
        }
    }

    #[test]
    fn comparison_counts_the_two_by_two_table() {
        // small memorises 0,1,2; large memorises 0,1,3,4.
        let s = [1.0, 0.9, 1.0, 0.2, 0.1, 0.0].map(recall_with);
        let l = [1.0, 1.0, 0.5, 0.9, 1.0, 0.3].map(recall_with);
        let c = compare(&s, &l);
        assert_eq!(
            (c.both, c.small_only, c.large_only, c.neither),
            (2, 1, 2, 1)
        );
        assert!((c.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.recall - 0.5).abs() < 1e-12);
        assert_eq!(c.precision_ci, wilson_interval(2, 3));
        // Identical models: correlation 1, precision and recall 1.
        let c = compare(&s, &s);
        assert!((c.pearson - 1.0).abs() < 1e-12 && (c.spearman - 1.0).abs() < 1e-12);
        assert_eq!((c.precision, c.recall), (1.0, 1.0));
    }

    #[test]
    fn continuation_losses_match_the_per_sequence_losses() {
        // Batched, per-row targets against diff::token_losses of each sequence alone.
        let model = crate::toy::induction_model(16, 32).unwrap();
        let v = model.cfg.d_vocab as u32;
        let seqs: Vec<Vec<u32>> = (0..5u32)
            .map(|s| (0..12u32).map(|i| (i * 7 + s * 3) % v).collect())
            .collect();
        let got = continuation_losses(&model, &seqs, 8, 2).unwrap();
        for (s, g) in seqs.iter().zip(&got) {
            let all = crate::diff::token_losses(&model, s).unwrap();
            let want = all[7..].iter().sum::<f64>() / 4.0;
            assert!((g - want).abs() < 1e-5, "{g} vs {want}");
        }
        assert!(continuation_losses(&model, &seqs, 0, 2).is_err());
        assert!(continuation_losses(&model, &seqs, 12, 2).is_err());
    }
}
