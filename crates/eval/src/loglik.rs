//! Log-likelihoods of continuations after a context, tokenised and summed as
//! lm-evaluation-harness's Hugging Face backend does, computed with the context run once.
//!
//! Tokenisation (`_encode_pair`): trailing whitespace of the context moves to the front of
//! the continuation; `context + continuation` is encoded whole and the context alone, and the
//! continuation's tokens are the whole encoding's after the context's length. The model reads
//! the context's own encoding followed by those tokens. An empty context is replaced by the
//! tokenizer's BOS token (its EOS when it has none), as the harness's `prefix_token_id`. BOS is
//! added in front only when `add_bos` (the harness does so for Gemma models only).
//!
//! Scoring: the sum over the continuation's tokens of log-softmax of the logits at the
//! position before each token (log-softmax in f64 from f32 logits), and `is_greedy`, whether
//! every continuation token is the argmax (first maximum on ties). Each context runs once: the
//! contexts of `batch` prompts run together, right-padded, then the continuations of those
//! prompts run `batch` rows at a time on their own prompt's KV cache (its padding masked out of
//! attention, positions counted in real tokens), right-padded again. Right padding keeps every
//! real token where it is when its prompt runs alone, so the scores do not depend on `batch`
//! beyond the float rounding of differently shaped products (measured: ≤ 1e-5 per item).

use candle_core::{DType, Tensor};

use interplab_core::model::{HookedTransformer, KvCache};
use interplab_core::tokenizer::Tokenizer;
use interplab_core::{Error, Result};

/// The score of one continuation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scored {
    /// Σ log p(token | everything before), nats.
    pub loglikelihood: f64,
    /// Whether greedy decoding would have produced the continuation.
    pub is_greedy: bool,
    /// Tokens in the continuation.
    pub tokens: usize,
}

/// A context's tokens and its continuations' tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub context: Vec<u32>,
    pub continuations: Vec<Vec<u32>>,
}

/// Encodes a context and its continuations as the harness does (see the module doc).
pub fn encode(
    tok: &Tokenizer,
    context: &str,
    continuations: &[String],
    add_bos: bool,
) -> Result<Encoded> {
    if context.is_empty() {
        let prefix = tok.bos_id().or(tok.eos_id()).ok_or_else(|| {
            Error::Input(
                "an empty context needs a BOS or EOS token, and the tokenizer has neither".into(),
            )
        })?;
        let continuations = continuations
            .iter()
            .map(|c| tok.encode(c, add_bos))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Encoded {
            context: vec![prefix],
            continuations,
        });
    }
    // Python's str.rstrip() strips Unicode whitespace, as Rust's trim_end does.
    let kept = context.trim_end();
    let moved = &context[kept.len()..];
    let ctx = tok.encode(kept, add_bos)?;
    let mut conts = Vec::with_capacity(continuations.len());
    for c in continuations {
        let whole = tok.encode(&format!("{kept}{moved}{c}"), add_bos)?;
        conts.push(whole.get(ctx.len()..).unwrap_or_default().to_vec());
    }
    Ok(Encoded {
        context: ctx,
        continuations: conts,
    })
}

/// Scores continuations of contexts on one model.
pub struct Scorer<'a> {
    pub model: &'a HookedTransformer,
    pub tokenizer: &'a Tokenizer,
    /// Put BOS in front of every encoding.
    pub add_bos: bool,
    /// Continuations per forward pass.
    pub batch: usize,
}

impl Scorer<'_> {
    /// Scores every continuation after `context`. A continuation that tokenises to nothing,
    /// or a prompt longer than the model's context, is an error.
    pub fn score(&self, context: &str, continuations: &[String]) -> Result<Vec<Scored>> {
        let enc = encode(self.tokenizer, context, continuations, self.add_bos)?;
        Ok(self
            .score_encoded(&[enc], &[continuations], &mut |_| {})?
            .remove(0))
    }

    /// Scores many prompts: contexts run `batch` at a time (longest first, right-padded), then every continuation of those prompts,
    /// `batch` rows at a time, each reading its own prompt's cache. `shown[i]` names prompt
    /// `i`'s continuations in errors; `done` is called with the prompts finished so far.
    pub fn score_encoded(
        &self,
        encs: &[Encoded],
        shown: &[&[String]],
        done: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<Scored>>> {
        let n_ctx = self.model.cfg.n_ctx;
        for (k, enc) in encs.iter().enumerate() {
            let l = enc.context.len();
            if l == 0 {
                return Err(Error::Input(format!(
                    "item {k}: the context is only whitespace: nothing to condition on"
                )));
            }
            for (i, c) in enc.continuations.iter().enumerate() {
                if c.is_empty() {
                    let name = shown
                        .get(k)
                        .and_then(|s| s.get(i))
                        .map(String::as_str)
                        .unwrap_or("?");
                    return Err(Error::Input(format!(
                        "item {k}: the continuation {name:?} tokenises to nothing after its \
                         context"
                    )));
                }
            }
            let longest = enc.continuations.iter().map(Vec::len).max().unwrap_or(1);
            if l + longest - 1 > n_ctx {
                return Err(Error::Input(format!(
                    "item {k}: the prompt is {} tokens (context {l} + continuation {longest} \
                     − 1) but the model reads at most {n_ctx}",
                    l + longest - 1
                )));
            }
        }
        let mut out: Vec<Vec<Scored>> = vec![Vec::new(); encs.len()];
        let mut order: Vec<usize> = (0..encs.len()).collect();
        order.sort_by_key(|&k| std::cmp::Reverse(encs[k].context.len()));
        let device = self.model.device();
        let vocab = self.model.cfg.d_vocab;
        let batch = self.batch.max(1);
        let mut finished = 0;
        for group in order.chunks(batch) {
            // The contexts, right-padded: every real token keeps the place it has when its
            // prompt runs alone, and the padding is masked for the continuations.
            let lmax = group
                .iter()
                .map(|&k| encs[k].context.len())
                .max()
                .unwrap_or(0);
            let ragged = group.iter().any(|&k| encs[k].context.len() != lmax);
            let mut ids = Vec::with_capacity(group.len() * lmax);
            let mut mask = Vec::with_capacity(group.len() * lmax);
            for &k in group {
                let c = &encs[k].context;
                ids.extend_from_slice(c);
                ids.extend(std::iter::repeat_n(0u32, lmax - c.len()));
                mask.extend(std::iter::repeat_n(1u8, c.len()));
                mask.extend(std::iter::repeat_n(0u8, lmax - c.len()));
            }
            let g = group.len();
            let ids = Tensor::from_vec(ids, (g, lmax), device)?;
            let mask = if ragged {
                Some(Tensor::from_vec(mask, (g, lmax), device)?)
            } else {
                None
            };
            let mut kv = KvCache::default();
            let resid = self.model.resid_with_kv(&ids, &mut kv, mask.as_ref())?;
            // Each row's last real position predicts its first continuation token.
            let last = group
                .iter()
                .enumerate()
                .map(|(row, &k)| {
                    resid
                        .narrow(0, row, 1)?
                        .narrow(1, encs[k].context.len() - 1, 1)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let last = Tensor::cat(&last, 0)?;
            let first: Vec<f32> = self
                .model
                .unembed_resid(&last)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            for (row, &k) in group.iter().enumerate() {
                let logits = &first[row * vocab..(row + 1) * vocab];
                out[k] = encs[k]
                    .continuations
                    .iter()
                    .map(|c| {
                        let (lp, greedy) = log_prob(logits, c[0]);
                        Scored {
                            loglikelihood: lp,
                            is_greedy: greedy,
                            tokens: c.len(),
                        }
                    })
                    .collect();
            }
            // The rest of every continuation, `batch` rows at a time, right-padded.
            let mut rest: Vec<(usize, usize, usize)> = group
                .iter()
                .enumerate()
                .flat_map(|(row, &k)| {
                    encs[k]
                        .continuations
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.len() > 1)
                        .map(move |(i, _)| (row, k, i))
                })
                .collect();
            // Longest first, so that each chunk pads little.
            rest.sort_by_key(|&(_, k, i)| std::cmp::Reverse(encs[k].continuations[i].len()));
            for chunk in rest.chunks(batch) {
                let width = chunk
                    .iter()
                    .map(|&(_, k, i)| encs[k].continuations[i].len() - 1)
                    .max()
                    .unwrap_or(0);
                let mut ids = Vec::with_capacity(chunk.len() * width);
                for &(_, k, i) in chunk {
                    let c = &encs[k].continuations[i];
                    ids.extend_from_slice(&c[..c.len() - 1]);
                    ids.extend(std::iter::repeat_n(0u32, width - (c.len() - 1)));
                }
                let rows: Vec<usize> = chunk.iter().map(|&(row, _, _)| row).collect();
                let input = Tensor::from_vec(ids, (chunk.len(), width), device)?;
                let mut cache = kv.select(&rows)?;
                // Unembed only the real positions: gather them out of the final residual.
                let resid = self.model.resid_with_kv(&input, &mut cache, None)?;
                let d = resid.dim(2)?;
                let mut keep = Vec::new();
                for (r, &(_, k, i)) in chunk.iter().enumerate() {
                    let m = encs[k].continuations[i].len() - 1;
                    keep.extend((0..m).map(|j| (r * width + j) as u32));
                }
                let n_keep = keep.len();
                let keep = Tensor::from_vec(keep, n_keep, device)?;
                let picked = resid
                    .reshape((chunk.len() * width, d))?
                    .index_select(&keep, 0)?;
                let logits: Vec<f32> = self
                    .model
                    .unembed_resid(&picked)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()?;
                let mut at = 0;
                for &(_, k, i) in chunk {
                    let c = &encs[k].continuations[i];
                    for &t in &c[1..] {
                        let (lp, greedy) = log_prob(&logits[at * vocab..(at + 1) * vocab], t);
                        at += 1;
                        out[k][i].loglikelihood += lp;
                        out[k][i].is_greedy &= greedy;
                    }
                }
            }
            finished += g;
            done(finished);
        }
        Ok(out)
    }
}

/// log-softmax of `logits` at `token` (f64), and whether `token` is the first maximum.
fn log_prob(logits: &[f32], token: u32) -> (f64, bool) {
    let mut best = 0usize;
    let mut max = f32::NEG_INFINITY;
    for (i, &x) in logits.iter().enumerate() {
        if x > max {
            max = x;
            best = i;
        }
    }
    let m = max as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - m).exp()).sum();
    let lp = logits[token as usize] as f64 - m - sum.ln();
    (lp, best == token as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prob_is_a_log_softmax_with_first_argmax() {
        let logits = [1.0f32, 3.0, 3.0, -2.0];
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        let (lp, greedy) = log_prob(&logits, 1);
        assert!((lp - (3f64.exp() / z).ln()).abs() < 1e-12);
        assert!(greedy);
        let (_, greedy) = log_prob(&logits, 2);
        assert!(!greedy, "ties go to the first maximum, as torch.argmax");
    }
}
