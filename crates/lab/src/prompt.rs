//! `run`: one prompt through the model: the top next tokens, and the activations a filter
//! selects as `activations.safetensors` (refused before the forward when they would not fit
//! in memory).

use anyhow::Context as _;
use candle_core::{DType, Tensor};
use interplab_core::error::human_bytes;
use interplab_core::loader::LoadedModel;
use interplab_core::model::{CacheBudget, NameFilter};
use interplab_core::tokenizer::ChatMessage;
use interplab_report::Report;
use serde::{Deserialize, Serialize};

use crate::tokens::{show_token, token_text};
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The tensor file of the activation cache.
pub const ACTIVATIONS: &str = "activations.safetensors";

/// The config of `run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// The prompt (or give `token_ids`).
    pub prompt: Option<String>,
    /// Token ids instead of a prompt.
    pub token_ids: Option<Vec<u32>>,
    /// How many next tokens to show.
    pub top_k: usize,
    /// Hook names or globs to cache, comma-separated (`*` for all); the logits are added as
    /// `unembed.hook_out`.
    pub cache: Option<String>,
    /// Prepend BOS (`None`: what the model's tokenizer says).
    pub bos: Option<bool>,
    /// Format the prompt with the model's chat template.
    pub chat: bool,
    /// The most bytes the cache may hold (default: the memory available).
    pub max_cache_bytes: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            prompt: None,
            token_ids: None,
            top_k: 10,
            cache: None,
            bos: None,
            chat: false,
            max_cache_bytes: None,
        }
    }
}

/// One of the most likely next tokens.
#[derive(Debug, Clone, Serialize)]
pub struct TopToken {
    /// Token id.
    pub id: u32,
    /// Its logit.
    pub logit: f64,
    /// Its probability (softmax in f64).
    pub prob: f64,
    /// The decoded token.
    pub token: String,
}

/// The results of `run`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The prompt as given.
    pub prompt: Option<String>,
    /// The tokens that ran.
    pub token_ids: Vec<u32>,
    /// Each token as text (decoded alone), for views that label positions.
    pub tokens: Vec<String>,
    /// The most likely next tokens, most likely first.
    pub top_next: Vec<TopToken>,
}

impl Experiment for Config {
    const NAME: &'static str = "run";
    const QUESTION: &'static str =
        "What does the model predict next, and what are its activations on a prompt?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model must be given")
            .check(
                self.prompt.is_some() != self.token_ids.is_some(),
                "give exactly one of prompt and token_ids",
            )
            .check(
                self.token_ids.as_ref().is_none_or(|t| !t.is_empty()),
                "token_ids is empty: no tokens to run",
            )
            .check(
                !(self.chat && self.token_ids.is_some()),
                "chat formats a prompt, not token_ids",
            )
            .positive("top_k", self.top_k)
            .check(
                self.cache
                    .as_deref()
                    .is_none_or(|c| !NameFilter::parse(c).patterns().is_empty()),
                "cache names no hook point",
            )
            .check(
                self.max_cache_bytes != Some(0),
                "max_cache_bytes must be at least 1",
            );
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            prompt: Some("The Eiffel Tower is located in the city of".into()),
            top_k: 5,
            cache: Some("blocks.0.*,hook_embed".into()),
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// The token ids of `prompt`: chat-formatted if asked, BOS as `bos` says (default: the
/// tokenizer's), checked to be non-empty and to fit the model's context.
pub fn prompt_ids(
    m: &LoadedModel,
    prompt: &str,
    chat: bool,
    bos: Option<bool>,
) -> anyhow::Result<Vec<u32>> {
    let text = if chat {
        let t = m
            .chat
            .as_ref()
            .context("this model has no chat template; drop --chat")?;
        t.render(&[ChatMessage::user(prompt)], true)
    } else {
        prompt.to_string()
    };
    let add_bos = bos.unwrap_or(m.tokenizer.add_bos_default());
    let ids = m.tokenizer.encode(&text, add_bos)?;
    if ids.is_empty() {
        anyhow::bail!("the prompt is empty after tokenization");
    }
    if ids.len() > m.model.cfg.n_ctx {
        anyhow::bail!(
            "the prompt is {} tokens, longer than the model's context of {}",
            ids.len(),
            m.model.cfg.n_ctx
        );
    }
    Ok(ids)
}

/// `(id, logit, probability)` of the `k` largest logits, probabilities from a softmax in f64.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32, f64)> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(k);
    idx.into_iter()
        .map(|i| (i as u32, logits[i], (logits[i] as f64 - max).exp() / z))
        .collect()
}

/// Run `run`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let ids = match (&cfg.token_ids, &cfg.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(p)) => prompt_ids(m, p, cfg.chat, cfg.bos)?,
        (None, None) => anyhow::bail!("give --prompt or --token-ids"),
    };
    let tokens = Tensor::new(ids.as_slice(), m.model.device())?.unsqueeze(0)?;
    progress.phase("forward");
    let (logits, cache) = match &cfg.cache {
        Some(f) => {
            let filter = NameFilter::parse(f);
            let budget = CacheBudget::from_option(cfg.max_cache_bytes);
            let (logits, mut cache) = m.model.run_with_cache_within(&tokens, &filter, budget)?;
            cache.insert("unembed.hook_out", logits.clone());
            (logits, Some(cache))
        }
        None => (m.model.forward(&tokens)?, None),
    };
    let last: Vec<f32> = logits
        .narrow(1, ids.len() - 1, 1)?
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1()?;
    let top_next: Vec<TopToken> = top_k(&last, cfg.top_k)
        .into_iter()
        .map(|(id, logit, prob)| TopToken {
            id,
            logit: logit as f64,
            prob,
            token: m.tokenizer.decode(&[id]).unwrap_or_default(),
        })
        .collect();
    let mut report = Report::new(format!("Run: {}", cfg.model));
    let shown = match &cfg.prompt {
        Some(p) => p.clone(),
        None => format!("token ids {ids:?}"),
    };
    report.key_values(&[("prompt", shown), ("tokens", ids.len().to_string())]);
    report.heading("next-token prediction").table(
        &["rank", "id", "logit", "prob", "token"],
        top_next
            .iter()
            .enumerate()
            .map(|(r, t)| {
                vec![
                    (r + 1).to_string(),
                    t.id.to_string(),
                    format!("{:.4}", t.logit),
                    format!("{:.4}", t.prob),
                    show_token(m, t.id),
                ]
            })
            .collect(),
    );
    let results = Results {
        prompt: cfg.prompt.clone(),
        tokens: ids.iter().map(|&id| token_text(m, id)).collect(),
        token_ids: ids,
        top_next,
    };
    let mut outcome = Outcome::new(results, report);
    if let Some(cache) = cache {
        outcome
            .report
            .heading("cached activations")
            .paragraph(format!(
                "{} activations ({}) in {ACTIVATIONS}, batch dimension kept.",
                cache.len(),
                human_bytes(cache.size_bytes() as u64)
            ));
        outcome.report.table(
            &["hook point", "shape"],
            cache
                .iter()
                .map(|(n, t)| vec![n.clone(), format!("{:?}", t.dims())])
                .collect(),
        );
        for (name, t) in cache.iter() {
            outcome.tensor(ACTIVATIONS, name.clone(), t.clone());
        }
    }
    Ok(outcome)
}
