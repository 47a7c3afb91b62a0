//! Attention patterns computed on demand for a prompt typed in the page.
//!
//! Only models that some run under RUNS_DIR used (or the default model) can be asked for, so a
//! request cannot make the server read an arbitrary file as a model. Loaded models stay in
//! memory for the server's lifetime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use interplab_core::loader::{LoadedModel, WeightStorage};
use interplab_core::model::hooks::NameFilter;
use serde::Serialize;

/// The longest prompt, in tokens, the view computes (the page holds every head's pattern).
pub const MAX_TOKENS: usize = 256;

/// Every head's attention pattern for one prompt.
#[derive(Debug, Serialize)]
pub struct Patterns {
    /// The model source.
    pub model: String,
    /// The prompt's tokens as text (BOS included when the model prepends one).
    pub tokens: Vec<String>,
    pub n_layers: usize,
    pub n_heads: usize,
    /// `patterns[layer][head][query][key]`, rounded to 4 decimals.
    pub patterns: Vec<Vec<Vec<Vec<f32>>>>,
}

/// Models loaded so far, by source.
#[derive(Default)]
pub struct Models {
    loaded: Mutex<HashMap<String, Arc<LoadedModel>>>,
}

impl Models {
    fn get(&self, source: &str) -> anyhow::Result<Arc<LoadedModel>> {
        if let Some(m) = self.loaded.lock().unwrap_or_else(|e| e.into_inner()).get(source) {
            return Ok(m.clone());
        }
        let m = Arc::new(interplab_lab::context::load_model(
            source,
            &Device::Cpu,
            WeightStorage::Dense,
            &mut |_| {},
        )?);
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(source.to_string(), m.clone());
        Ok(m)
    }

    /// Every layer's and head's pattern for `prompt` on `source`.
    pub fn patterns(&self, source: &str, prompt: &str) -> anyhow::Result<Patterns> {
        if prompt.is_empty() {
            anyhow::bail!("the prompt is empty");
        }
        let m = self.get(source)?;
        let cfg = &m.model.cfg;
        let ids = m.tokenizer.encode(prompt, cfg.default_prepend_bos)?;
        if ids.len() > MAX_TOKENS {
            anyhow::bail!(
                "the prompt has {} tokens; the attention view takes at most {MAX_TOKENS}",
                ids.len()
            );
        }
        let tokens: Vec<String> = ids
            .iter()
            .map(|&id| m.tokenizer.decode(&[id]).unwrap_or_else(|_| format!("<{id}>")))
            .collect();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let filter = NameFilter::new(&["blocks.*.attn.hook_pattern"]);
        let (_, cache) = m.model.run_with_cache(&input, &filter)?;
        let mut patterns = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = cache
                .get(&format!("blocks.{l}.attn.hook_pattern"))?
                .squeeze(0)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec3::<f32>()?;
            patterns.push(
                p.into_iter()
                    .map(|head| {
                        head.into_iter()
                            .map(|row| row.into_iter().map(|x| (x * 1e4).round() / 1e4).collect())
                            .collect()
                    })
                    .collect(),
            );
        }
        Ok(Patterns {
            model: source.to_string(),
            tokens,
            n_layers: cfg.n_layers,
            n_heads: cfg.n_heads,
            patterns,
        })
    }
}
