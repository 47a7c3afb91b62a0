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

/// The attention patterns a run cached (`interplab run --cache 'blocks.*.attn.hook_pattern'`):
/// every `blocks.L.attn.hook_pattern` in its `activations.safetensors` (f32, `[1, H, q, k]`),
/// tokens from its `results.json`. Layers the run did not cache are empty lists.
pub fn cached(dir: &std::path::Path) -> anyhow::Result<Patterns> {
    use safetensors::{Dtype, SafeTensors};
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json"))?)?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    let bytes = std::fs::read(dir.join("activations.safetensors"))?;
    let st = SafeTensors::deserialize(&bytes)?;
    let mut layers: Vec<(usize, Vec<Vec<Vec<f32>>>)> = Vec::new();
    for (name, view) in st.tensors() {
        let Some(l) = name
            .strip_prefix("blocks.")
            .and_then(|r| r.strip_suffix(".attn.hook_pattern"))
            .and_then(|l| l.parse::<usize>().ok())
        else {
            continue;
        };
        let shape = view.shape();
        if view.dtype() != Dtype::F32 || shape.len() != 4 || shape[2] != shape[3] {
            anyhow::bail!(
                "{name}: expected f32 [batch, heads, pos, pos], found {:?} {shape:?}",
                view.dtype()
            );
        }
        let (h, n) = (shape[1], shape[2]);
        if n > MAX_TOKENS {
            anyhow::bail!("{name} covers {n} positions; the view takes at most {MAX_TOKENS}");
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .take(h * n * n)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let heads = (0..h)
            .map(|hd| {
                (0..n)
                    .map(|q| {
                        data[(hd * n + q) * n..(hd * n + q + 1) * n]
                            .iter()
                            .map(|&x| round4(x))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        layers.push((l, heads));
    }
    if layers.is_empty() {
        anyhow::bail!("this run cached no attention pattern (blocks.*.attn.hook_pattern)");
    }
    let n_layers = manifest["models"][0]["config"]["n_layers"]
        .as_u64()
        .map(|n| n as usize)
        .unwrap_or(0)
        .max(layers.iter().map(|(l, _)| l + 1).max().unwrap_or(0));
    let n_heads = layers[0].1.len();
    let mut patterns = vec![Vec::new(); n_layers];
    for (l, p) in layers {
        patterns[l] = p;
    }
    let tokens = match results["tokens"].as_array() {
        Some(t) => t
            .iter()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect(),
        None => results["token_ids"]
            .as_array()
            .map(|ids| ids.iter().map(|x| format!("<{x}>")).collect())
            .unwrap_or_default(),
    };
    Ok(Patterns {
        model: manifest["models"][0]["source"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        tokens,
        n_layers,
        n_heads,
        patterns,
    })
}

/// Attention weights travel with 4 decimals (the page shows 4 significant digits).
fn round4(x: f32) -> f32 {
    (x * 1e4).round() / 1e4
}

/// Models loaded so far, by source.
#[derive(Default)]
pub struct Models {
    loaded: Mutex<HashMap<String, Arc<LoadedModel>>>,
}

impl Models {
    fn get(&self, source: &str) -> anyhow::Result<Arc<LoadedModel>> {
        if let Some(m) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(source)
        {
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
        let ids = m.tokenizer.encode(prompt, m.tokenizer.add_bos_default())?;
        if ids.len() > MAX_TOKENS {
            anyhow::bail!(
                "the prompt has {} tokens; the attention view takes at most {MAX_TOKENS}",
                ids.len()
            );
        }
        let tokens: Vec<String> = ids
            .iter()
            .map(|&id| interplab_lab::tokens::token_text(&m, id))
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
                            .map(|row| row.into_iter().map(round4).collect())
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
