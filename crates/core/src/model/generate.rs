//! Text generation with a KV cache: greedy, temperature and top-p sampling, seeded, with hooks.

use candle_core::{DType, Tensor};

use super::{HookedTransformer, Hooks, KvCache};
use crate::rng::SplitMix;
use crate::{Error, Result};

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Tokens to generate at most.
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// Generation stops after any of these tokens.
    pub stop_ids: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_ids: Vec::new(),
        }
    }
}

impl GenerateOptions {
    /// Check every numeric option's range, returning one error that lists every problem:
    /// `max_new_tokens` at least 1, `temperature` finite and at least 0 (0 = greedy),
    /// `top_p` in (0, 1].
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.max_new_tokens == 0 {
            problems.push("max_new_tokens must be at least 1, got 0".to_string());
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            problems.push(format!(
                "temperature must be finite and at least 0 (0 = greedy), got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            problems.push(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Input(format!(
                "generation options: {}",
                problems.join("; ")
            )))
        }
    }
}

/// Pick the next token from one row of logits.
fn sample(logits: &[f32], opts: &GenerateOptions, rng: &mut SplitMix) -> u32 {
    if opts.temperature <= 0.0 {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as u32, ((x as f64 - max) / opts.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    if opts.top_p < 1.0 {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut acc = 0.0;
        let mut keep = 0;
        for p in &probs {
            acc += p.1;
            keep += 1;
            if acc >= opts.top_p {
                break;
            }
        }
        probs.truncate(keep.max(1));
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.next_f64() * total;
    for &(id, p) in &probs {
        r -= p;
        if r <= 0.0 {
            return id;
        }
    }
    probs.last().map_or(0, |p| p.0)
}

impl HookedTransformer {
    /// Generate after `prompt` (token ids, one sequence); returns only the new tokens.
    /// Hooks run on every forward step (the prompt, then one position at a time).
    pub fn generate(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        hooks: Option<&mut Hooks>,
    ) -> Result<Vec<u32>> {
        let mut out = self.generate_batch(&[prompt.to_vec()], opts, hooks)?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Generate after several prompts at once: one batch, left-padded with an attention mask
    /// (padding is invisible to attention and takes no position), one KV cache, one forward per
    /// step for every row. Row `i` samples with its own generator seeded `opts.seed`, so its
    /// tokens are those [`Self::generate`] gives prompt `i` alone, up to float summation order
    /// (none in a decode step from quantised blocks, which computes each row by itself). A row
    /// stops at a stop id; finished rows ride along until every row is done. Hooks see the
    /// whole batch, padding included, at every step.
    pub fn generate_batch(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        hooks: Option<&mut Hooks>,
    ) -> Result<Vec<Vec<u32>>> {
        self.generate_batch_until(prompts, opts, hooks, &mut |_, _| false)
    }

    /// [`Self::generate_batch`] with a caller's stop rule: after each new token, row `i` stops
    /// when `stop(i, tokens_so_far)` is true (stop strings, checked on the decoded text), as it
    /// stops at a stop id. A stopped row's tokens end with the token that stopped it.
    pub fn generate_batch_until(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        mut hooks: Option<&mut Hooks>,
        stop: &mut dyn FnMut(usize, &[u32]) -> bool,
    ) -> Result<Vec<Vec<u32>>> {
        opts.validate()?;
        if prompts.is_empty() {
            return Err(Error::Input("no prompts to generate from".into()));
        }
        if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
            return Err(Error::Input(format!("prompt {i} is empty")));
        }
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if longest + opts.max_new_tokens > self.cfg.n_ctx {
            return Err(Error::Input(format!(
                "prompt of {longest} tokens plus {} new tokens exceeds the context length {}",
                opts.max_new_tokens, self.cfg.n_ctx
            )));
        }
        let b = prompts.len();
        let mut ids = Vec::with_capacity(b * longest);
        let mut mask = Vec::with_capacity(b * longest);
        for p in prompts {
            let pad = longest - p.len();
            ids.extend(std::iter::repeat_n(0u32, pad).chain(p.iter().copied()));
            mask.extend(std::iter::repeat_n(0f32, pad).chain(std::iter::repeat_n(1f32, p.len())));
        }
        let ragged = prompts.iter().any(|p| p.len() != longest);
        let mask = Tensor::from_vec(mask, (b, longest), self.device())?;
        let mut input = Tensor::from_vec(ids, (b, longest), self.device())?;
        let mut rngs: Vec<SplitMix> = (0..b).map(|_| SplitMix(opts.seed)).collect();
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let mut kv = KvCache::default();
        for step in 0..opts.max_new_tokens {
            let step_mask = (step == 0 && ragged).then_some(&mask);
            let logits = self.forward_with_kv(&input, &mut kv, step_mask, hooks.as_deref_mut())?;
            let p = logits.dim(1)?;
            let last: Vec<Vec<f32>> = logits
                .narrow(1, p - 1, 1)?
                .squeeze(1)?
                .to_dtype(DType::F32)?
                .to_vec2()?;
            let mut next = Vec::with_capacity(b);
            for (i, row) in last.iter().enumerate() {
                let t = if done[i] {
                    out[i].last().copied().unwrap_or(0)
                } else {
                    let t = sample(row, opts, &mut rngs[i]);
                    out[i].push(t);
                    done[i] = opts.stop_ids.contains(&t) || stop(i, &out[i]);
                    t
                };
                next.push(t);
            }
            if done.iter().all(|&d| d) {
                break;
            }
            input = Tensor::from_vec(next, (b, 1), self.device())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_top_p_keeps_the_head() {
        let mut rng = SplitMix(1);
        let greedy = GenerateOptions::default();
        assert_eq!(sample(&[0.1, 3.0, 2.0], &greedy, &mut rng), 1);
        // With top_p tiny, only the most likely token survives.
        let nucleus = GenerateOptions {
            temperature: 1.0,
            top_p: 1e-6,
            ..Default::default()
        };
        for _ in 0..20 {
            assert_eq!(sample(&[0.1, 3.0, 2.0], &nucleus, &mut rng), 1);
        }
    }

    #[test]
    fn validate_lists_every_bad_option() {
        assert!(GenerateOptions::default().validate().is_ok());
        let ok = GenerateOptions {
            max_new_tokens: 1,
            temperature: 0.7,
            top_p: 1.0,
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let bad = GenerateOptions {
            max_new_tokens: 0,
            temperature: -1.0,
            top_p: 2.0,
            ..Default::default()
        };
        let msg = bad.validate().unwrap_err().to_string();
        for want in [
            "max_new_tokens must be at least 1, got 0",
            "temperature must be finite and at least 0 (0 = greedy), got -1",
            "top_p must be in (0, 1], got 2",
        ] {
            assert!(msg.contains(want), "{msg}");
        }
        for (temperature, top_p) in [(f64::NAN, 0.5), (f64::INFINITY, 0.0), (1.0, f64::NAN)] {
            let o = GenerateOptions {
                temperature,
                top_p,
                ..Default::default()
            };
            assert!(o.validate().is_err(), "{temperature} {top_p}");
        }
        let only_top_p = GenerateOptions {
            top_p: 0.0,
            ..Default::default()
        };
        let msg = only_top_p.validate().unwrap_err().to_string();
        assert!(
            msg.contains("top_p") && !msg.contains("temperature"),
            "{msg}"
        );
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p = softmax([0, ln 3]) = [0.25, 0.75]
        let opts = GenerateOptions {
            temperature: 1.0,
            ..Default::default()
        };
        let mut rng = SplitMix(7);
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| sample(&[0.0, 3f32.ln()], &opts, &mut rng) == 1)
            .count() as f64;
        let frac = ones / n as f64;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }
}
