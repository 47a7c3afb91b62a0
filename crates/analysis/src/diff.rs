//! Per-token loss of two models that share a tokenizer, on the same documents, and where they
//! differ most (RESEARCH.md §5).
//!
//! The loss of a token is the next-token cross-entropy −log p(token | prefix) in nats, in f64,
//! for every position but the first. The difference is model B minus model A (positive: B is
//! worse). Document means are averaged over documents; the standard error of the mean
//! difference is over documents (tokens of one document are not independent).

use candle_core::Tensor;
use interplab_core::model::HookedTransformer;
use interplab_core::{Error, Result};
use serde::Serialize;

use crate::stats::{mean_stderr, next_token_losses};

/// One predicted token.
#[derive(Debug, Clone, Serialize)]
pub struct TokenLoss {
    pub doc: usize,
    /// Index of the predicted token in its document.
    pub pos: usize,
    pub token: u32,
    pub loss_a: f64,
    pub loss_b: f64,
}

impl TokenLoss {
    /// `loss_b − loss_a`.
    pub fn diff(&self) -> f64 {
        self.loss_b - self.loss_a
    }
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct DiffResult {
    pub n_docs: usize,
    pub mean_loss_a: f64,
    pub mean_loss_b: f64,
    /// Mean over documents of (B − A) document-mean loss.
    pub mean_diff: f64,
    pub stderr: f64,
    pub tokens: Vec<TokenLoss>,
}

impl DiffResult {
    /// The `k` tokens where |B − A| is largest.
    pub fn top_k(&self, k: usize) -> Vec<&TokenLoss> {
        let mut v: Vec<&TokenLoss> = self.tokens.iter().collect();
        v.sort_by(|x, y| y.diff().abs().total_cmp(&x.diff().abs()));
        v.truncate(k);
        v
    }
}

/// Next-token losses of `tokens` (`len − 1` values).
pub fn token_losses(model: &HookedTransformer, tokens: &[u32]) -> Result<Vec<f64>> {
    if tokens.len() < 2 {
        return Err(Error::Input("a document needs at least two tokens".into()));
    }
    let t = Tensor::new(tokens, model.device())?.unsqueeze(0)?;
    Ok(next_token_losses(&model.forward(&t)?, tokens)?.remove(0))
}

/// Compare `a` and `b` on `docs` (token ids, shared by both models).
pub fn diff_models(
    a: &HookedTransformer,
    b: &HookedTransformer,
    docs: &[Vec<u32>],
) -> Result<DiffResult> {
    if a.cfg.d_vocab != b.cfg.d_vocab {
        return Err(Error::Input(format!(
            "the models do not share a vocabulary ({} vs {} tokens)",
            a.cfg.d_vocab, b.cfg.d_vocab
        )));
    }
    let docs: Vec<&Vec<u32>> = docs.iter().filter(|d| d.len() >= 2).collect();
    if docs.is_empty() {
        return Err(Error::Input(
            "the corpus has no document of two or more tokens".into(),
        ));
    }
    let mut tokens = Vec::new();
    let (mut ma, mut mb, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    for (di, d) in docs.iter().enumerate() {
        let (la, lb) = (token_losses(a, d)?, token_losses(b, d)?);
        let n = la.len() as f64;
        let (sa, sb) = (la.iter().sum::<f64>() / n, lb.iter().sum::<f64>() / n);
        ma.push(sa);
        mb.push(sb);
        diffs.push(sb - sa);
        for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
            tokens.push(TokenLoss {
                doc: di,
                pos: i + 1,
                token: d[i + 1],
                loss_a: *x,
                loss_b: *y,
            });
        }
    }
    let (md, stderr) = mean_stderr(&diffs);
    Ok(DiffResult {
        n_docs: docs.len(),
        mean_loss_a: mean_stderr(&ma).0,
        mean_loss_b: mean_stderr(&mb).0,
        mean_diff: md,
        stderr,
        tokens,
    })
}
