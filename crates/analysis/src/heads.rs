//! Head detection: previous-token, duplicate-token and induction scores for every head.
//!
//! Definitions follow TransformerLens' `head_detector` with `error_measure="mul"`:
//! for one sequence, a head's attention pattern `A` (`[q, k]`, rows summing to one) and the
//! 0/1 detection pattern `D` of the head kind,
//!
//! `score = Σ(A ⊙ D) / ΣA`,
//!
//! where, before the sums, `exclude_bos` zeroes `A`'s first column and `exclude_current_token`
//! zeroes its diagonal (so ΣA is what attention is left). Scores of several sequences are
//! averaged, with the options applied to every sequence (TransformerLens drops them for lists of
//! prompts and zeroes the caller's cached patterns in place; here nothing is mutated).
//!
//! Detection patterns (lower triangular, `[q, k]`, `t` the token ids):
//! - previous-token: `D[q, q-1] = 1`;
//! - duplicate-token: `D[q, k] = 1` for `k < q` with `t[k] = t[q]`;
//! - induction: `D[q, k] = 1` for `1 <= k <= q` with `t[k-1] = t[q]` and `k-1 != q`.

use candle_core::{DType, Tensor};
use interplab_core::model::{
    ActivationCache, HookName, HookedTransformer, Input, NameFilter, RunOptions,
};
use interplab_core::rng::SplitMix;
use interplab_core::tokenizer::Tokenizer;
use interplab_core::{Error, Result};
use serde::Serialize;

/// The kinds of head the detector scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    PreviousToken,
    DuplicateToken,
    Induction,
}

impl HeadKind {
    /// All kinds, in report order.
    pub const ALL: [HeadKind; 3] = [
        HeadKind::PreviousToken,
        HeadKind::DuplicateToken,
        HeadKind::Induction,
    ];

    /// TransformerLens' name for the kind (`previous_token_head`, ...).
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::PreviousToken => "previous_token_head",
            HeadKind::DuplicateToken => "duplicate_token_head",
            HeadKind::Induction => "induction_head",
        }
    }

    /// The `[seq, seq]` 0/1 detection pattern for `tokens`, row-major.
    pub fn detection_pattern(self, tokens: &[u32]) -> Vec<f32> {
        let n = tokens.len();
        let mut d = vec![0f32; n * n];
        for q in 0..n {
            for k in 0..=q {
                let hit = match self {
                    HeadKind::PreviousToken => k + 1 == q,
                    HeadKind::DuplicateToken => k < q && tokens[k] == tokens[q],
                    HeadKind::Induction => k >= 1 && k - 1 != q && tokens[k - 1] == tokens[q],
                };
                if hit {
                    d[q * n + k] = 1.0;
                }
            }
        }
        d
    }
}

/// Options of the detector.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct HeadScoreOptions {
    /// Ignore attention to position 0 (BOS).
    pub exclude_bos: bool,
    /// Ignore attention from a position to itself.
    pub exclude_current_token: bool,
}

/// Scores of one kind: `scores[layer][head]`, averaged over sequences.
#[derive(Debug, Clone, Serialize)]
pub struct HeadScores {
    pub kind: HeadKind,
    pub scores: Vec<Vec<f64>>,
}

impl HeadScores {
    /// The `k` highest-scoring heads as (layer, head, score), best first.
    pub fn top_k(&self, k: usize) -> Vec<(usize, usize, f64)> {
        let mut all: Vec<(usize, usize, f64)> = self
            .scores
            .iter()
            .enumerate()
            .flat_map(|(l, row)| row.iter().enumerate().map(move |(h, &s)| (l, h, s)))
            .collect();
        all.sort_by(|a, b| b.2.total_cmp(&a.2));
        all.truncate(k);
        all
    }
}

/// Score every head of `model` for each of `kinds` on `sequences` (token ids, BOS included if
/// wanted). Sequences of equal length run as one batch.
pub fn head_scores(
    model: &HookedTransformer,
    sequences: &[Vec<u32>],
    kinds: &[HeadKind],
    opts: HeadScoreOptions,
) -> Result<Vec<HeadScores>> {
    if sequences.is_empty() || sequences.iter().any(|s| s.len() < 2) {
        return Err(Error::Input(
            "head detection needs at least one sequence of two or more tokens".into(),
        ));
    }
    let c = &model.cfg;
    let mut sums = vec![vec![vec![0f64; c.n_heads]; c.n_layers]; kinds.len()];
    // Group sequences by length so each group is one batched forward.
    let mut lens: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
    lens.sort_unstable();
    lens.dedup();
    for len in lens {
        let group: Vec<&Vec<u32>> = sequences.iter().filter(|s| s.len() == len).collect();
        let flat: Vec<u32> = group.iter().flat_map(|s| s.iter().copied()).collect();
        let tokens = Tensor::from_vec(flat, (group.len(), len), model.device())?;
        let filter = NameFilter::new(&[HookName::AttnPattern(0).every_layer()]);
        // Patterns only; stop_at_layer = n_layers skips ln_final and the unembedding.
        let opts_run = RunOptions {
            stop_at_layer: Some(c.n_layers),
            ..Default::default()
        };
        let (_, cache) = model.run(Input::Tokens(&tokens), &opts_run, None, Some(&filter))?;
        let seqs: Vec<Vec<u32>> = group.into_iter().cloned().collect();
        add_scores(&cache, c.n_layers, c.n_heads, &seqs, kinds, opts, &mut sums)?;
    }
    Ok(averaged(kinds, sums, sequences.len()))
}

/// Scores from patterns already cached (`blocks.L.attn.hook_pattern`, `[batch, head, q, k]`)
/// for the batch `sequences`, averaged over the batch. The cache is only read.
pub fn scores_from_cache(
    cache: &ActivationCache,
    n_layers: usize,
    n_heads: usize,
    sequences: &[Vec<u32>],
    kinds: &[HeadKind],
    opts: HeadScoreOptions,
) -> Result<Vec<HeadScores>> {
    let mut sums = vec![vec![vec![0f64; n_heads]; n_layers]; kinds.len()];
    add_scores(cache, n_layers, n_heads, sequences, kinds, opts, &mut sums)?;
    Ok(averaged(kinds, sums, sequences.len()))
}

/// Per-kind, per-head score sums over sequences: `sums[kind][layer][head]`.
type ScoreSums = Vec<Vec<Vec<f64>>>;

/// Add each sequence's score (from the cached patterns of its batch) to `sums`.
fn add_scores(
    cache: &ActivationCache,
    n_layers: usize,
    n_heads: usize,
    sequences: &[Vec<u32>],
    kinds: &[HeadKind],
    opts: HeadScoreOptions,
    sums: &mut ScoreSums,
) -> Result<()> {
    let detections: Vec<Vec<Vec<f32>>> = sequences
        .iter()
        .map(|s| kinds.iter().map(|k| k.detection_pattern(s)).collect())
        .collect();
    for l in 0..n_layers {
        let pat = cache.get(&HookName::AttnPattern(l).to_string())?;
        let (b, h, q, k) = pat.dims4()?;
        if b != sequences.len() || h != n_heads || sequences.iter().any(|s| s.len() != q || q != k)
        {
            return Err(Error::Input(format!(
                "cached pattern of layer {l} has shape {:?}, expected [{}, {n_heads}, pos, pos] for these sequences",
                pat.dims(),
                sequences.len()
            )));
        }
        let len = q;
        let pat: Vec<f32> = pat.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for (b, det) in detections.iter().enumerate() {
            for h in 0..n_heads {
                let a = &pat[((b * n_heads + h) * len * len)..][..len * len];
                let (num, den) = scored_sums(a, det, len, opts);
                for (ki, n) in num.iter().enumerate() {
                    sums[ki][l][h] += if den > 0.0 { n / den } else { 0.0 };
                }
            }
        }
    }
    Ok(())
}

/// Sums over `n` sequences turned into mean scores.
fn averaged(kinds: &[HeadKind], sums: ScoreSums, n: usize) -> Vec<HeadScores> {
    let n = n as f64;
    kinds
        .iter()
        .zip(sums)
        .map(|(&kind, s)| HeadScores {
            kind,
            scores: s
                .into_iter()
                .map(|row| row.into_iter().map(|v| v / n).collect())
                .collect(),
        })
        .collect()
}

/// Σ(A ⊙ D) for each detection pattern and ΣA, in f64, with the exclusions applied to A.
fn scored_sums(a: &[f32], dets: &[Vec<f32>], n: usize, opts: HeadScoreOptions) -> (Vec<f64>, f64) {
    let mut num = vec![0f64; dets.len()];
    let mut den = 0f64;
    for q in 0..n {
        for k in 0..=q {
            if (opts.exclude_bos && k == 0) || (opts.exclude_current_token && k == q) {
                continue;
            }
            let x = a[q * n + k] as f64;
            den += x;
            for (d, acc) in dets.iter().zip(num.iter_mut()) {
                if d[q * n + k] != 0.0 {
                    *acc += x;
                }
            }
        }
    }
    (num, den)
}

/// Ids of "ordinary" tokens to draw random sequences from: tokens that decode to a space
/// followed by 3 or more lowercase ASCII letters and re-encode to exactly themselves (the same
/// rule as the peer benchmark), so a random sequence is a string of plain words. Falls back to
/// every id when the tokenizer has no such tokens (toy vocabularies).
pub fn ordinary_tokens(tok: &Tokenizer, range: std::ops::Range<u32>) -> Vec<u32> {
    let mut out = Vec::new();
    for id in range {
        let Ok(s) = tok.decode(&[id]) else { continue };
        let word =
            s.len() >= 4 && s.starts_with(' ') && s[1..].bytes().all(|b| b.is_ascii_lowercase());
        if word && tok.encode(&s, false).map(|e| e == [id]).unwrap_or(false) {
            out.push(id);
        }
    }
    out
}

/// The pool random sequences are drawn from for a model: [`ordinary_tokens`] among ids
/// 1000..min(vocab, 40000) (the peer benchmark's range), or every non-zero id when the
/// vocabulary has fewer than `min_len` such tokens (toy models).
pub fn random_token_pool(tok: &Tokenizer, d_vocab: usize, min_len: usize) -> Vec<u32> {
    let hi = (d_vocab as u32).min(40_000);
    let pool = ordinary_tokens(tok, 1000.min(hi / 2)..hi);
    if pool.len() >= min_len {
        pool
    } else {
        (1..d_vocab as u32).collect()
    }
}

/// `n_seq` sequences, each `bos` (if any) followed by `seq_len` distinct tokens drawn from
/// `pool` and then the same tokens again: induction heads attend to the token after the
/// earlier copy on the second half.
pub fn repeated_random_tokens(
    pool: &[u32],
    seq_len: usize,
    n_seq: usize,
    seed: u64,
    bos: Option<u32>,
) -> Result<Vec<Vec<u32>>> {
    if pool.len() < seq_len || seq_len == 0 {
        return Err(Error::Input(format!(
            "need {seq_len} distinct tokens to draw from, the pool has {}",
            pool.len()
        )));
    }
    let mut rng = SplitMix::new(seed);
    let mut pool = pool.to_vec();
    Ok((0..n_seq)
        .map(|_| {
            // A partial Fisher-Yates draw: the first seq_len entries become a random sample.
            for i in 0..seq_len {
                let j = i + rng.below((pool.len() - i) as u64) as usize;
                pool.swap(i, j);
            }
            let half = &pool[..seq_len];
            let mut s: Vec<u32> = bos.into_iter().collect();
            s.extend_from_slice(half);
            s.extend_from_slice(half);
            s
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_patterns_match_their_definitions() {
        // tokens: a b a b
        let t = [5, 6, 5, 6];
        let prev = HeadKind::PreviousToken.detection_pattern(&t);
        assert_eq!(
            prev,
            vec![0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.]
        );
        let dup = HeadKind::DuplicateToken.detection_pattern(&t);
        assert_eq!(
            dup,
            vec![0., 0., 0., 0., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0.]
        );
        // q=2 (a): k with t[k-1] = a and k-1 != 2 -> k=1. q=3 (b): t[k-1] = b -> k=2.
        let ind = HeadKind::Induction.detection_pattern(&t);
        assert_eq!(
            ind,
            vec![0., 0., 0., 0., 0., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.]
        );
    }

    #[test]
    fn exclusions_renormalise() {
        // Two positions; row 1 attends 0.25 to BOS, 0.75 to itself.
        let a = [1.0f32, 0.0, 0.25, 0.75];
        let prev = HeadKind::PreviousToken.detection_pattern(&[1, 2]);
        let (n, d) = scored_sums(
            &a,
            std::slice::from_ref(&prev),
            2,
            HeadScoreOptions::default(),
        );
        assert_eq!((n[0], d), (0.25, 2.0));
        let o = HeadScoreOptions {
            exclude_bos: false,
            exclude_current_token: true,
        };
        let (n, d) = scored_sums(&a, &[prev], 2, o);
        assert_eq!((n[0], d), (0.25, 0.25));
    }
}
