//! Generation for `generate_until` tasks and the agenda's evals: prompts generated in batches,
//! each stopped at the first of its stop strings, the end-of-turn tokens, or its token budget.
//!
//! What the text is, is what lm-evaluation-harness's Hugging Face backend returns: the decoded
//! new tokens, cut before the first occurrence of any stop string (`until`). Greedy decoding
//! (temperature 0) or temperature/top-p sampling, each prompt with its own generator seeded
//! from `seed` and the prompt's index, so a prompt's text does not depend on which prompts
//! share its batch or on the batch size (up to float summation order in the padded prefill).

use interplab_core::model::{GenerateOptions, HookedTransformer};
use interplab_core::tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
use interplab_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// How to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenOptions {
    /// New tokens at most (the harness's `max_gen_toks`).
    pub max_new_tokens: usize,
    /// 0: greedy.
    pub temperature: f64,
    /// Nucleus sampling mass (1: off).
    pub top_p: f64,
    /// Seed of the samplers (prompt `i` samples with `seed + i`).
    pub seed: u64,
    /// Prompts per forward pass.
    pub batch: usize,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            batch: 16,
        }
    }
}

/// One prompt to continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenRequest {
    /// The prompt text, already dressed (chat template applied when wanted).
    pub prompt: String,
    /// Stop strings: the text ends before the first occurrence of any.
    pub until: Vec<String>,
}

/// One generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    /// The new text, cut before the first stop string.
    pub text: String,
    /// New tokens generated (the stopping token included).
    pub n_tokens: usize,
    /// Why it ended: `"until"` (a stop string), `"eos"`, or `"length"`.
    pub finish: String,
}

/// A model and tokenizer that generate.
pub struct Generator<'a> {
    pub model: &'a HookedTransformer,
    pub tokenizer: &'a Tokenizer,
    /// Put BOS in front of each prompt.
    pub add_bos: bool,
}

impl Generator<'_> {
    /// Generate for every request, in order; `on_done` is told how many are done. Prompts are
    /// grouped by length into batches of `opts.batch` (less padding); every prompt must fit the
    /// context with its token budget, checked for all before any work.
    pub fn generate(
        &self,
        requests: &[GenRequest],
        opts: &GenOptions,
        on_done: &mut dyn FnMut(usize),
    ) -> Result<Vec<Generated>> {
        if opts.batch == 0 {
            return Err(Error::Input("generation batch must be at least 1".into()));
        }
        let n_ctx = self.model.cfg.n_ctx;
        let mut encoded = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            let ids = self.tokenizer.encode(&r.prompt, self.add_bos)?;
            if ids.is_empty() {
                return Err(Error::Input(format!("prompt {i} tokenises to nothing")));
            }
            if ids.len() + opts.max_new_tokens > n_ctx {
                return Err(Error::Input(format!(
                    "prompt {i} has {} tokens; with {} new tokens it exceeds the model's context \
                     of {n_ctx}",
                    ids.len(),
                    opts.max_new_tokens
                )));
            }
            encoded.push(ids);
        }
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].len()));
        let eos = self.tokenizer.eos_ids().to_vec();
        let mut out: Vec<Option<Generated>> = vec![None; requests.len()];
        let mut done = 0;
        for chunk in order.chunks(opts.batch) {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[i].clone()).collect();
            // Sampled rows need their own seeds; the batch call seeds every row alike, so
            // sampled generation runs a prompt at a time (greedy needs no seed).
            let rows: Vec<Vec<u32>> = if opts.temperature > 0.0 {
                let mut rows = Vec::with_capacity(chunk.len());
                for &i in chunk {
                    let o = self.core_options(opts, opts.seed.wrapping_add(i as u64), &eos);
                    let mut stop = |_: usize, toks: &[u32]| self.hits_until(toks, &requests[i]);
                    rows.extend(self.model.generate_batch_until(
                        &[encoded[i].clone()],
                        &o,
                        None,
                        &mut stop,
                    )?);
                }
                rows
            } else {
                let o = self.core_options(opts, opts.seed, &eos);
                let mut stop =
                    |row: usize, toks: &[u32]| self.hits_until(toks, &requests[chunk[row]]);
                self.model
                    .generate_batch_until(&prompts, &o, None, &mut stop)?
            };
            for (&i, toks) in chunk.iter().zip(rows) {
                out[i] = Some(self.finish(&toks, &requests[i], &eos, opts.max_new_tokens)?);
            }
            done += chunk.len();
            on_done(done);
        }
        Ok(out
            .into_iter()
            .map(|g| g.expect("every request generated"))
            .collect())
    }

    fn core_options(&self, opts: &GenOptions, seed: u64, eos: &[u32]) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: opts.max_new_tokens,
            temperature: opts.temperature,
            top_p: opts.top_p,
            seed,
            stop_ids: eos.to_vec(),
        }
    }

    /// Whether the decoded tail of `toks` contains a stop string (only the last few tokens'
    /// worth of text is searched, so the check stays cheap on long generations).
    fn hits_until(&self, toks: &[u32], r: &GenRequest) -> bool {
        if r.until.is_empty() {
            return false;
        }
        let longest = r.until.iter().map(|u| u.len()).max().unwrap_or(0);
        let from = toks.len().saturating_sub(longest + 2);
        let tail = self.tokenizer.decode(&toks[from..]).unwrap_or_default();
        r.until.iter().any(|u| tail.contains(u.as_str()))
    }

    fn finish(
        &self,
        toks: &[u32],
        r: &GenRequest,
        eos: &[u32],
        budget: usize,
    ) -> Result<Generated> {
        let ended_eos = toks.last().is_some_and(|t| eos.contains(t));
        let body = if ended_eos {
            &toks[..toks.len() - 1]
        } else {
            toks
        };
        // As the harness's Hugging Face backend decodes: special tokens skipped.
        let kept: Vec<u32> = body
            .iter()
            .copied()
            .filter(|&t| !self.tokenizer.is_special(t))
            .collect();
        let full = self.tokenizer.decode(&kept)?;
        let (text, cut) = cut_at_until(&full, &r.until);
        let finish = if cut {
            "until"
        } else if ended_eos {
            "eos"
        } else if toks.len() >= budget {
            "length"
        } else {
            "eos"
        };
        Ok(Generated {
            text: text.to_string(),
            n_tokens: toks.len(),
            finish: finish.into(),
        })
    }
}

/// A conversation dressed as a prompt that ends where the assistant speaks next: with the
/// model's chat template (system message when given, the turns, the generation prompt), or,
/// for a model without one, as plain text (`System: …`, `User: …`, `Assistant: …` blocks
/// separated by blank lines, ending `Assistant:`). `turns` are the earlier (user, assistant)
/// exchanges; `user` is the last user message.
pub fn dress(
    chat: Option<&ChatTemplate>,
    system: Option<&str>,
    turns: &[(String, String)],
    user: &str,
) -> String {
    match chat {
        Some(c) => {
            let mut m = Vec::new();
            if let Some(s) = system {
                m.push(ChatMessage::system(s));
            }
            for (u, a) in turns {
                m.push(ChatMessage::user(u.as_str()));
                m.push(ChatMessage::assistant(a.as_str()));
            }
            m.push(ChatMessage::user(user));
            c.render(&m, true)
        }
        None => {
            let mut parts = Vec::new();
            if let Some(s) = system {
                parts.push(format!("System: {s}"));
            }
            for (u, a) in turns {
                parts.push(format!("User: {u}"));
                parts.push(format!("Assistant: {a}"));
            }
            parts.push(format!("User: {user}"));
            parts.push("Assistant:".into());
            parts.join("\n\n")
        }
    }
}

/// `text` cut before the earliest occurrence of any stop string, and whether it was cut
/// (the harness splits on each stop string in turn and keeps the first part, which is the
/// same text).
pub fn cut_at_until<'t>(text: &'t str, until: &[String]) -> (&'t str, bool) {
    let first = until
        .iter()
        .filter(|u| !u.is_empty())
        .filter_map(|u| text.find(u.as_str()))
        .min();
    match first {
        Some(at) => (&text[..at], true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_text_before_the_earliest_stop_string() {
        let until = vec!["\n\n".to_string(), "Q:".to_string()];
        assert_eq!(
            cut_at_until("Paris.\nQ: next\n\nmore", &until),
            ("Paris.\n", true)
        );
        assert_eq!(cut_at_until("Paris.", &until), ("Paris.", false));
        assert_eq!(cut_at_until("", &until), ("", false));
        assert_eq!(cut_at_until("abc", &[String::new()]), ("abc", false));
    }
}
