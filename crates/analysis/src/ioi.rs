//! Indirect-object identification (Wang et al. 2022, "Interpretability in the Wild").
//!
//! Prompts like "When Mary and John went to the store, John gave a drink to" name two people;
//! the second mention (S2) is the subject, the answer is the other one, the indirect object
//! (IO). Templates from the paper, names and nouns filled in; only names that are one token with
//! a leading space in the model's vocabulary are used. Both orders: ABBA ("Mary and John …
//! John") and BABA ("John and Mary … John").
//!
//! The corrupted prompt of each pair replaces S2 by the IO ("…, Mary gave a drink to"), which
//! makes John the natural answer: the same corruption as TransformerLens' IOI demos and the
//! shared reference. The metric is the logit difference logit(IO) − logit(S) at the last
//! position; accuracy is the fraction of prompts where it is positive. Per-head patching
//! restores each head's `z` (all positions) from the clean run into the corrupted one and
//! averages the normalised logit difference over prompts: heads that move the IO name to the
//! output (name movers) score high, heads that push against it (negative name movers) low.

use interplab_core::model::HookedTransformer;
use interplab_core::rng::SplitMix;
use interplab_core::tokenizer::Tokenizer;
use interplab_core::{Error, Result};
use serde::Serialize;

use crate::patching::{HeadSite, Metric, PatchingSetup};
use crate::stats::mean_stderr;

/// IOI templates; `{A}`, `{B}` the two names, `{S}` the subject's second mention.
pub const TEMPLATES: [&str; 5] = [
    "When {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "Then, {A} and {B} had a lot of fun at the {PLACE}. {S} gave a {OBJECT} to",
    "After {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "While {A} and {B} were working at the {PLACE}, {S} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {S} decided to give it to",
];

/// Candidate first names (filtered to single tokens per model).
pub const NAMES: [&str; 40] = [
    "Mary", "John", "Tom", "James", "Anna", "Paul", "Sarah", "Mark", "Lisa", "David", "Kate",
    "Peter", "Laura", "Michael", "Emma", "Robert", "Alice", "George", "Jane", "Frank", "Linda",
    "Steve", "Susan", "Bob", "Rachel", "Chris", "Emily", "Dan", "Amy", "Jack", "Helen", "Tim",
    "Sam", "Nancy", "Eric", "Julia", "Kevin", "Grace", "Adam", "Lucy",
];

const PLACES: [&str; 6] = ["store", "park", "school", "office", "garden", "hospital"];
const OBJECTS: [&str; 6] = ["drink", "book", "ring", "bone", "kiss", "basketball"];

/// One clean/corrupted IOI pair.
#[derive(Debug, Clone, Serialize)]
pub struct IoiPrompt {
    pub clean: String,
    pub corrupted: String,
    /// The indirect object (the answer) and the subject, with their leading space.
    pub io: String,
    pub s: String,
    /// `ABBA` or `BABA`.
    pub order: String,
}

/// Names from [`NAMES`] that are one token with a leading space.
pub fn single_token_names(tok: &Tokenizer) -> Vec<&'static str> {
    NAMES
        .iter()
        .copied()
        .filter(|n| {
            tok.encode(&format!(" {n}"), false)
                .map(|v| v.len() == 1)
                .unwrap_or(false)
        })
        .collect()
}

/// `n` prompt pairs, seeded, alternating ABBA and BABA.
pub fn generate(tok: &Tokenizer, n: usize, seed: u64) -> Result<Vec<IoiPrompt>> {
    let names = single_token_names(tok);
    if names.len() < 2 {
        return Err(Error::Input(
            "the tokenizer has fewer than two single-token names".into(),
        ));
    }
    let mut rng = SplitMix::new(seed);
    let mut pick = |v: usize| rng.below(v as u64) as usize;
    let mut out = Vec::new();
    for i in 0..n {
        let t = TEMPLATES[pick(TEMPLATES.len())];
        let io = names[pick(names.len())];
        let s = loop {
            let s = names[pick(names.len())];
            if s != io {
                break s;
            }
        };
        let place = PLACES[pick(PLACES.len())];
        let object = OBJECTS[pick(OBJECTS.len())];
        let abba = i % 2 == 0;
        let (a, b) = if abba { (io, s) } else { (s, io) };
        let fill = |s2: &str| {
            t.replace("{A}", a)
                .replace("{B}", b)
                .replace("{S}", s2)
                .replace("{PLACE}", place)
                .replace("{OBJECT}", object)
        };
        out.push(IoiPrompt {
            clean: fill(s),
            corrupted: fill(io),
            io: format!(" {io}"),
            s: format!(" {s}"),
            order: if abba { "ABBA" } else { "BABA" }.into(),
        });
    }
    Ok(out)
}

/// The behaviour and head ranking over a set of prompts.
#[derive(Debug, Clone, Serialize)]
pub struct IoiResult {
    /// Clean logit(IO) − logit(S) per prompt.
    pub logit_diffs: Vec<f64>,
    pub mean_logit_diff: f64,
    /// Its standard error over prompts.
    pub stderr: f64,
    /// Fraction of prompts with a positive logit difference.
    pub accuracy: f64,
    /// Mean normalised logit difference when each head's z is patched clean → corrupted,
    /// `[layer][head]` (empty when not computed).
    pub head_patching: Vec<Vec<f64>>,
}

/// Logit differences and accuracy, and (if `patch_heads`) per-head z patching averaged over
/// prompts. Each prompt is tokenised with `bos` as given.
pub fn analyse(
    model: &HookedTransformer,
    tok: &Tokenizer,
    prompts: &[IoiPrompt],
    bos: bool,
    patch_heads: bool,
) -> Result<IoiResult> {
    if prompts.is_empty() {
        return Err(Error::Input("no IOI prompts".into()));
    }
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let mut lds = Vec::new();
    let mut heads = vec![vec![0f64; nh]; nl];
    for p in prompts {
        let clean = tok.encode(&p.clean, bos)?;
        let corrupted = tok.encode(&p.corrupted, bos)?;
        let metric = Metric::LogitDiff {
            answer: tok.single_token(&p.io)?,
            wrong: tok.single_token(&p.s)?,
        };
        let setup = PatchingSetup::new(model, &clean, &corrupted, metric)?;
        lds.push(setup.clean_raw);
        if patch_heads {
            let sweep = setup.sweep_heads(HeadSite::Z)?;
            for (l, row) in sweep.values.iter().enumerate() {
                for (h, v) in row.iter().enumerate() {
                    heads[l][h] += v / prompts.len() as f64;
                }
            }
        }
    }
    let n = lds.len() as f64;
    let (mean, stderr) = mean_stderr(&lds);
    Ok(IoiResult {
        accuracy: lds.iter().filter(|&&x| x > 0.0).count() as f64 / n,
        logit_diffs: lds,
        mean_logit_diff: mean,
        stderr,
        head_patching: if patch_heads { heads } else { Vec::new() },
    })
}
