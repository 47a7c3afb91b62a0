//! Loaders: GGUF files (`llama`, `gemma3`) and Hugging Face directories (GPT-2, GPT-NeoX,
//! Llama, Gemma 3) into a [`ModelConfig`] and [`Weights`] for the hooked transformer.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::config::{Activation, Architecture, ModelConfig, NormKind, Positions};
use crate::gguf::GgufFile;
use crate::model::weights::{Matrix, UnembedBlocks};
use crate::model::{AttnWeights, BlockWeights, MlpWeights, NormWeights, Weights};
use crate::safetensors_file::SafetensorsFile;
use crate::{Error, Result};

/// Tensors by name, taken out one at a time with clear errors for missing ones.
struct TensorBag {
    path: PathBuf,
    map: HashMap<String, Tensor>,
}

impl TensorBag {
    fn take(&mut self, name: &str) -> Result<Tensor> {
        self.map
            .remove(name)
            .ok_or_else(|| Error::malformed(&self.path, format!("missing tensor `{name}`")))
    }

    fn take_opt(&mut self, name: &str) -> Option<Tensor> {
        self.map.remove(name)
    }

    /// A PyTorch `[out, in]` linear weight as `[in, out]`.
    fn linear(&mut self, name: &str) -> Result<Tensor> {
        Ok(self.take(name)?.t()?.contiguous()?)
    }
}

/// How a GGUF model's block matrices (`W_Q`, `W_K`, `W_V`, `W_O`, `W_in`, `W_gate`, `W_out`)
/// are held in memory. `Dense` and `Quantized` give the same f32 values to every computation;
/// `Bf16` rounds them (and the inputs of their products) to bf16.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightStorage {
    /// Dequantised to f32 once at load: fastest per forward.
    #[default]
    Dense,
    /// Kept as the file's GGML blocks and dequantised layer by layer in every forward: SmolLM2's
    /// block matrices take 66 MB instead of 424 MB, each forward pays one dequantisation of the
    /// model (cheap beside a large batch, dominant for a handful of tokens). Processing weights
    /// or training makes them dense.
    Quantized,
    /// Dequantised at load, then the block matrices and the unembedding rounded to bf16 and
    /// packed for [`crate::bf16`]'s products (Intel AMX where the CPU has it): opt-in, for
    /// speed; each product's inputs are rounded to bf16 and summed in f32, so logits move by
    /// about 1e-2 against the dense forward (measured in `docs/performance.md`). Gradients, and
    /// every other use of a weight, see the rounded weights in f32.
    Bf16,
}

/// The GGUF names of the per-block matrices [`WeightStorage::Quantized`] keeps as blocks.
const BLOCK_MATRICES: [&str; 7] = [
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_up.weight",
    "ffn_gate.weight",
    "ffn_down.weight",
];

/// Load a GGUF model (architectures `llama`, `qwen2` and `gemma3`) with f32 computation; `storage` says
/// whether the block matrices are dequantised now or at each use.
pub fn load_gguf(
    gguf: &GgufFile,
    path: &Path,
    device: &Device,
    storage: WeightStorage,
) -> Result<(ModelConfig, Weights)> {
    let arch = gguf.architecture()?.to_string();
    let kept: HashSet<&str> = gguf
        .tensors
        .iter()
        .filter(|t| {
            storage == WeightStorage::Quantized
                && t.dims.len() == 2
                && t.ggml_type != 0 // f32: nothing to save
                && t.name.starts_with("blk.")
                && BLOCK_MATRICES.iter().any(|m| t.name.ends_with(m))
        })
        .map(|t| t.name.as_str())
        .collect();
    let names: Vec<&str> = gguf
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !kept.contains(n))
        .collect();
    let tensors = gguf.tensors_f32(&names, device)?;
    let map = names
        .iter()
        .map(|s| s.to_string())
        .zip(tensors)
        .collect::<HashMap<_, _>>();
    let mut bag = TensorBag {
        path: path.to_path_buf(),
        map,
    };
    let key = |k: &str| format!("{arch}.{k}");
    let d_model = gguf.meta_u64(&key("embedding_length"))? as usize;
    let n_layers = gguf.meta_u64(&key("block_count"))? as usize;
    let n_heads = gguf.meta_u64(&key("attention.head_count"))? as usize;
    let n_kv_heads = gguf
        .meta_u64(&key("attention.head_count_kv"))
        .map(|x| x as usize)
        .unwrap_or(n_heads);
    let d_mlp = gguf.meta_u64(&key("feed_forward_length"))? as usize;
    let n_ctx = gguf.meta_u64(&key("context_length"))? as usize;
    let eps = gguf.meta_f64(&key("attention.layer_norm_rms_epsilon"))?;
    let base = gguf.meta_f64(&key("rope.freq_base")).unwrap_or(10_000.0);
    let d_head = gguf
        .meta_u64(&key("attention.key_length"))
        .map(|x| x as usize)
        .unwrap_or(d_model / n_heads);
    let rot_dim = gguf
        .meta_u64(&key("rope.dimension_count"))
        .map(|x| x as usize)
        .unwrap_or(d_head);
    let w_e = bag.take("token_embd.weight")?;
    let d_vocab = w_e.dim(0)?;
    let w_u = bag
        .take_opt("output.weight")
        .map(|w| w.t()?.contiguous())
        .transpose()?;
    let tied = w_u.is_none();

    let (architecture, act, qk_norm, post_norms, layer_windows, embed_scale, local_base, bos) =
        match arch.as_str() {
            "llama" => (
                Architecture::Llama,
                Activation::Silu,
                false,
                false,
                vec![None; n_layers],
                None,
                None,
                false,
            ),
            "qwen2" => (
                Architecture::Qwen2,
                Activation::Silu,
                false,
                false,
                vec![None; n_layers],
                None,
                None,
                false,
            ),
            "gemma3" => {
                let window = gguf.meta_u64(&key("attention.sliding_window"))? as usize;
                // llama.cpp and Hugging Face: every sixth layer is global, the rest slide.
                let windows = (0..n_layers)
                    .map(|l| if (l + 1) % 6 == 0 { None } else { Some(window) })
                    .collect();
                (
                    Architecture::Gemma3,
                    Activation::GeluNew,
                    true,
                    true,
                    windows,
                    Some((d_model as f64).sqrt()),
                    Some(10_000.0),
                    true,
                )
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "GGUF architecture `{other}` (supported: llama, qwen2, gemma3)"
                )))
            }
        };
    let attn_scale = match arch.as_str() {
        "gemma3" => (d_head as f64).sqrt(),
        _ => (d_head as f64).sqrt(),
    };
    let cfg = ModelConfig {
        architecture,
        d_model,
        n_layers,
        n_heads,
        n_kv_heads,
        d_head,
        d_mlp,
        d_vocab,
        n_ctx,
        norm: NormKind::RmsNorm,
        norm_eps: eps,
        positions: Positions::Rotary {
            dim: rot_dim,
            base,
            local_base,
        },
        act,
        gated_mlp: true,
        parallel_attn_mlp: false,
        attn_only: false,
        qk_norm,
        post_norms,
        layer_windows,
        embed_scale,
        attn_scale,
        attn_logit_softcap: None,
        final_logit_softcap: None,
        tied_embeddings: tied,
        default_prepend_bos: bos,
    };
    // llama.cpp interleaves the rotary halves of Q and K for `llama` only (its converter
    // permutes them for the GGML rotation); `qwen2` and `gemma3` keep Hugging Face's layout.
    let llama = architecture == Architecture::Llama;
    let qkv_bias = architecture == Architecture::Qwen2;
    // A block matrix as `[in, out]`; `rotary_heads` undoes llama.cpp's interleaving of the
    // rotary halves of Q and K so the weights (and the q/k hooks) match Hugging Face and
    // TransformerLens.
    let matrix = |bag: &mut TensorBag, name: &str, rotary_heads: Option<usize>| -> Result<Matrix> {
        if kept.contains(name) {
            if let Some(mut q) = gguf.tensor_quantized(name, device)? {
                if let Some(n) = rotary_heads {
                    q = q.select_rows(&rotary_row_order(q.dims().0, n))?;
                }
                return Ok(Matrix::Quantized(Arc::new(q)));
            }
        }
        let mut w = bag.take(name)?;
        if let Some(n) = rotary_heads {
            let order: Vec<u32> = rotary_row_order(w.dim(0)?, n)
                .into_iter()
                .map(|r| r as u32)
                .collect();
            w = w.index_select(&Tensor::new(order, w.device())?, 0)?;
        }
        Ok(Matrix::Dense(w.t()?.contiguous()?))
    };
    let norm = |bag: &mut TensorBag, name: &str| -> Result<NormWeights> {
        Ok(NormWeights {
            w: Some(bag.take(name)?),
            b: None,
        })
    };
    let mut blocks = Vec::with_capacity(n_layers);
    for l in 0..n_layers {
        let p = format!("blk.{l}");
        let attn = AttnWeights {
            w_q: matrix(
                &mut bag,
                &format!("{p}.attn_q.weight"),
                llama.then_some(n_heads),
            )?,
            w_k: matrix(
                &mut bag,
                &format!("{p}.attn_k.weight"),
                llama.then_some(n_kv_heads),
            )?,
            w_v: matrix(&mut bag, &format!("{p}.attn_v.weight"), None)?,
            w_o: matrix(&mut bag, &format!("{p}.attn_output.weight"), None)?,
            b_q: qkv_bias
                .then(|| bag.take(&format!("{p}.attn_q.bias")))
                .transpose()?,
            b_k: qkv_bias
                .then(|| bag.take(&format!("{p}.attn_k.bias")))
                .transpose()?,
            b_v: qkv_bias
                .then(|| bag.take(&format!("{p}.attn_v.bias")))
                .transpose()?,
            b_o: None,
            q_norm: if qk_norm {
                Some(norm(&mut bag, &format!("{p}.attn_q_norm.weight"))?)
            } else {
                None
            },
            k_norm: if qk_norm {
                Some(norm(&mut bag, &format!("{p}.attn_k_norm.weight"))?)
            } else {
                None
            },
        };
        let mlp = MlpWeights {
            w_in: matrix(&mut bag, &format!("{p}.ffn_up.weight"), None)?,
            b_in: None,
            w_gate: Some(matrix(&mut bag, &format!("{p}.ffn_gate.weight"), None)?),
            b_gate: None,
            w_out: matrix(&mut bag, &format!("{p}.ffn_down.weight"), None)?,
            b_out: None,
        };
        blocks.push(BlockWeights {
            ln1: norm(&mut bag, &format!("{p}.attn_norm.weight"))?,
            attn,
            ln1_post: if post_norms {
                Some(norm(&mut bag, &format!("{p}.post_attention_norm.weight"))?)
            } else {
                None
            },
            ln2: norm(&mut bag, &format!("{p}.ffn_norm.weight"))?,
            mlp: Some(mlp),
            ln2_post: if post_norms {
                Some(norm(&mut bag, &format!("{p}.post_ffw_norm.weight"))?)
            } else {
                None
            },
        });
    }
    // The unembedding's blocks for decode steps (see `UnembedBlocks`).
    let unembed_blocks = if storage == WeightStorage::Quantized {
        let (name, source) = match &w_u {
            Some(u) => ("output.weight", u.id()),
            None => ("token_embd.weight", w_e.id()),
        };
        gguf.tensor_quantized(name, device)?.map(|q| UnembedBlocks {
            blocks: Arc::new(q),
            source,
        })
    } else {
        None
    };
    let weights = Weights {
        w_e,
        w_pos: None,
        blocks,
        ln_final: norm(&mut bag, "output_norm.weight")?,
        w_u,
        b_u: None,
        unembed_blocks,
        unembed_bf16: None,
    };
    Ok((cfg, weights))
}

/// The row order that undoes llama.cpp's per-head interleaving of rotary halves on a
/// `[n * d_head, d_model]` weight: within each head, row `i * d_head/2 + j` comes from row
/// `2j + i` (`i` the half, `j` the pair).
fn rotary_row_order(rows: usize, n: usize) -> Vec<usize> {
    let half = rows / n / 2;
    (0..n)
        .flat_map(|h| (0..2).flat_map(move |i| (0..half).map(move |j| h * 2 * half + 2 * j + i)))
        .collect()
}

fn get<'a>(cfg: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter()
        .find_map(|k| cfg.get(*k).filter(|v| !v.is_null()))
}

fn get_usize(cfg: &Value, path: &Path, keys: &[&str]) -> Result<usize> {
    get(cfg, keys)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| Error::malformed(path, format!("config.json lacks `{}`", keys[0])))
}

fn get_f64(cfg: &Value, keys: &[&str], default: f64) -> f64 {
    get(cfg, keys).and_then(Value::as_f64).unwrap_or(default)
}

fn get_bool(cfg: &Value, keys: &[&str], default: bool) -> bool {
    get(cfg, keys).and_then(Value::as_bool).unwrap_or(default)
}

fn activation(name: &str) -> Result<Activation> {
    Ok(match name {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluNew,
        "relu" => Activation::Relu,
        "silu" | "swish" => Activation::Silu,
        other => return Err(Error::Unsupported(format!("activation `{other}`"))),
    })
}

/// Rope base from either the old flat keys or transformers 5's `rope_parameters`.
fn rope_theta(cfg: &Value, kind: &str, default: f64) -> f64 {
    if let Some(rp) = cfg.get("rope_parameters") {
        if let Some(t) = rp
            .get(kind)
            .and_then(|k| k.get("rope_theta"))
            .and_then(Value::as_f64)
        {
            return t;
        }
        if let Some(t) = rp.get("rope_theta").and_then(Value::as_f64) {
            return t;
        }
    }
    default
}

/// Load a Hugging Face directory: `config.json`, `*.safetensors` (memory-mapped).
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<(ModelConfig, Weights)> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| Error::malformed(&cfg_path, format!("invalid JSON: {e}")))?;
    let model_type = cfg
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::malformed(&cfg_path, "config.json lacks `model_type`"))?
        .to_string();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        // Weights are `model.safetensors` or its shards `model-0000N-of-0000M.safetensors`.
        .filter(|p| {
            p.extension().is_some_and(|x| x == "safetensors")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("model"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::malformed(dir, "no model*.safetensors weight files"));
    }
    let st = SafetensorsFile::open_many(&files)?;
    let mut map = HashMap::new();
    for name in st.names() {
        map.insert(name.to_string(), st.tensor_f32(name, device)?);
    }
    let mut bag = TensorBag {
        path: dir.to_path_buf(),
        map,
    };
    match model_type.as_str() {
        "gpt2" => load_gpt2(&cfg, &cfg_path, &mut bag),
        "gpt_neox" => load_neox(&cfg, &cfg_path, &mut bag),
        "llama" | "mistral" => load_llama_like(&cfg, &cfg_path, &mut bag, false),
        "qwen2" => load_llama_like(&cfg, &cfg_path, &mut bag, false).map(|(mut c, w)| {
            c.architecture = Architecture::Qwen2;
            (c, w)
        }),
        "gemma3_text" | "gemma3" => {
            let text_cfg = cfg.get("text_config").cloned().unwrap_or(cfg.clone());
            load_llama_like(&text_cfg, &cfg_path, &mut bag, true)
        }
        other => Err(Error::Unsupported(format!(
            "Hugging Face model_type `{other}` (supported: gpt2, gpt_neox, llama, gemma3_text)"
        ))),
    }
}

fn strip_prefix(bag: &mut TensorBag, prefixes: &[&str]) {
    let keys: Vec<String> = bag.map.keys().cloned().collect();
    for k in keys {
        for p in prefixes {
            if let Some(rest) = k.strip_prefix(p) {
                if let Some(t) = bag.map.remove(&k) {
                    bag.map.insert(rest.to_string(), t);
                }
                break;
            }
        }
    }
}

fn base_config(architecture: Architecture) -> ModelConfig {
    ModelConfig {
        architecture,
        d_model: 0,
        n_layers: 0,
        n_heads: 0,
        n_kv_heads: 0,
        d_head: 0,
        d_mlp: 0,
        d_vocab: 0,
        n_ctx: 0,
        norm: NormKind::LayerNorm,
        norm_eps: 1e-5,
        positions: Positions::Learned,
        act: Activation::GeluNew,
        gated_mlp: false,
        parallel_attn_mlp: false,
        attn_only: false,
        qk_norm: false,
        post_norms: false,
        layer_windows: vec![],
        embed_scale: None,
        attn_scale: 1.0,
        attn_logit_softcap: None,
        final_logit_softcap: None,
        tied_embeddings: false,
        default_prepend_bos: false,
    }
}

fn layer_norm_weights(bag: &mut TensorBag, prefix: &str) -> Result<NormWeights> {
    Ok(NormWeights {
        w: Some(bag.take(&format!("{prefix}.weight"))?),
        b: bag.take_opt(&format!("{prefix}.bias")),
    })
}

fn load_gpt2(cfg: &Value, path: &Path, bag: &mut TensorBag) -> Result<(ModelConfig, Weights)> {
    strip_prefix(bag, &["transformer."]);
    let d = get_usize(cfg, path, &["n_embd", "hidden_size"])?;
    let n_layers = get_usize(cfg, path, &["n_layer", "num_hidden_layers"])?;
    let h = get_usize(cfg, path, &["n_head", "num_attention_heads"])?;
    let d_mlp = get(cfg, &["n_inner"])
        .and_then(Value::as_u64)
        .map_or(4 * d, |x| x as usize);
    let act = activation(
        get(cfg, &["activation_function"])
            .and_then(Value::as_str)
            .unwrap_or("gelu_new"),
    )?;
    let w_e = bag.take("wte.weight")?;
    let mut c = base_config(Architecture::Gpt2);
    c.d_model = d;
    c.n_layers = n_layers;
    c.n_heads = h;
    c.n_kv_heads = h;
    c.d_head = d / h;
    c.d_mlp = d_mlp;
    c.d_vocab = w_e.dim(0)?;
    c.n_ctx = get_usize(
        cfg,
        path,
        &["n_positions", "n_ctx", "max_position_embeddings"],
    )?;
    c.norm_eps = get_f64(cfg, &["layer_norm_epsilon"], 1e-5);
    c.act = act;
    c.layer_windows = vec![None; n_layers];
    c.attn_scale = ((d / h) as f64).sqrt();
    c.tied_embeddings = get_bool(cfg, &["tie_word_embeddings"], true);
    let mut blocks = Vec::new();
    for l in 0..n_layers {
        let p = format!("h.{l}");
        // GPT-2 uses Conv1D: weights are already [in, out].
        let c_attn = bag.take(&format!("{p}.attn.c_attn.weight"))?;
        let c_attn_b = bag.take(&format!("{p}.attn.c_attn.bias"))?;
        let split = |t: &Tensor, dim: usize, i: usize| -> Result<Tensor> {
            Ok(t.narrow(dim, i * d, d)?.contiguous()?)
        };
        let attn = AttnWeights {
            w_q: split(&c_attn, 1, 0)?.into(),
            w_k: split(&c_attn, 1, 1)?.into(),
            w_v: split(&c_attn, 1, 2)?.into(),
            w_o: bag.take(&format!("{p}.attn.c_proj.weight"))?.into(),
            b_q: Some(split(&c_attn_b, 0, 0)?),
            b_k: Some(split(&c_attn_b, 0, 1)?),
            b_v: Some(split(&c_attn_b, 0, 2)?),
            b_o: Some(bag.take(&format!("{p}.attn.c_proj.bias"))?),
            q_norm: None,
            k_norm: None,
        };
        let mlp = MlpWeights {
            w_in: bag.take(&format!("{p}.mlp.c_fc.weight"))?.into(),
            b_in: Some(bag.take(&format!("{p}.mlp.c_fc.bias"))?),
            w_gate: None,
            b_gate: None,
            w_out: bag.take(&format!("{p}.mlp.c_proj.weight"))?.into(),
            b_out: Some(bag.take(&format!("{p}.mlp.c_proj.bias"))?),
        };
        blocks.push(BlockWeights {
            ln1: layer_norm_weights(bag, &format!("{p}.ln_1"))?,
            attn,
            ln1_post: None,
            ln2: layer_norm_weights(bag, &format!("{p}.ln_2"))?,
            mlp: Some(mlp),
            ln2_post: None,
        });
    }
    let w_u = match bag.take_opt("lm_head.weight") {
        Some(w) if !c.tied_embeddings => Some(w.t()?.contiguous()?),
        _ => None,
    };
    c.tied_embeddings = w_u.is_none();
    let weights = Weights {
        w_e,
        w_pos: Some(bag.take("wpe.weight")?),
        blocks,
        ln_final: layer_norm_weights(bag, "ln_f")?,
        w_u,
        b_u: None,
        unembed_blocks: None,
        unembed_bf16: None,
    };
    Ok((c, weights))
}

fn load_neox(cfg: &Value, path: &Path, bag: &mut TensorBag) -> Result<(ModelConfig, Weights)> {
    strip_prefix(bag, &["gpt_neox."]);
    let d = get_usize(cfg, path, &["hidden_size"])?;
    let n_layers = get_usize(cfg, path, &["num_hidden_layers"])?;
    let h = get_usize(cfg, path, &["num_attention_heads"])?;
    let dh = d / h;
    let pct = get(cfg, &["rotary_pct", "partial_rotary_factor"])
        .and_then(Value::as_f64)
        .or_else(|| {
            cfg.get("rope_parameters")
                .and_then(|r| r.get("partial_rotary_factor"))
                .and_then(Value::as_f64)
        })
        .unwrap_or(1.0);
    let base = rope_theta(
        cfg,
        "",
        get_f64(cfg, &["rotary_emb_base", "rope_theta"], 10_000.0),
    );
    let w_e = bag.take("embed_in.weight")?;
    let mut c = base_config(Architecture::GptNeox);
    c.d_model = d;
    c.n_layers = n_layers;
    c.n_heads = h;
    c.n_kv_heads = h;
    c.d_head = dh;
    c.d_mlp = get_usize(cfg, path, &["intermediate_size"])?;
    c.d_vocab = w_e.dim(0)?;
    c.n_ctx = get_usize(cfg, path, &["max_position_embeddings"])?;
    c.norm_eps = get_f64(cfg, &["layer_norm_eps"], 1e-5);
    c.positions = Positions::Rotary {
        dim: ((dh as f64) * pct) as usize,
        base,
        local_base: None,
    };
    c.act = activation(
        get(cfg, &["hidden_act"])
            .and_then(Value::as_str)
            .unwrap_or("gelu"),
    )?;
    c.parallel_attn_mlp = get_bool(cfg, &["use_parallel_residual"], true);
    c.layer_windows = vec![None; n_layers];
    c.attn_scale = (dh as f64).sqrt();
    c.tied_embeddings = get_bool(cfg, &["tie_word_embeddings"], false);
    let mut blocks = Vec::new();
    for l in 0..n_layers {
        let p = format!("layers.{l}");
        // query_key_value rows are [head, (q|k|v), d_head].
        let qkv = bag.take(&format!("{p}.attention.query_key_value.weight"))?; // [3d, d]
        let qkv_b = bag.take(&format!("{p}.attention.query_key_value.bias"))?; // [3d]
        let qkv = qkv.reshape((h, 3, dh, d))?;
        let qkv_b = qkv_b.reshape((h, 3, dh))?;
        let pick_w = |i: usize| -> Result<Tensor> {
            Ok(qkv.narrow(1, i, 1)?.reshape((d, d))?.t()?.contiguous()?)
        };
        let pick_b =
            |i: usize| -> Result<Tensor> { Ok(qkv_b.narrow(1, i, 1)?.reshape(d)?.contiguous()?) };
        let attn = AttnWeights {
            w_q: pick_w(0)?.into(),
            w_k: pick_w(1)?.into(),
            w_v: pick_w(2)?.into(),
            w_o: bag.linear(&format!("{p}.attention.dense.weight"))?.into(),
            b_q: Some(pick_b(0)?),
            b_k: Some(pick_b(1)?),
            b_v: Some(pick_b(2)?),
            b_o: Some(bag.take(&format!("{p}.attention.dense.bias"))?),
            q_norm: None,
            k_norm: None,
        };
        let mlp = MlpWeights {
            w_in: bag.linear(&format!("{p}.mlp.dense_h_to_4h.weight"))?.into(),
            b_in: Some(bag.take(&format!("{p}.mlp.dense_h_to_4h.bias"))?),
            w_gate: None,
            b_gate: None,
            w_out: bag.linear(&format!("{p}.mlp.dense_4h_to_h.weight"))?.into(),
            b_out: Some(bag.take(&format!("{p}.mlp.dense_4h_to_h.bias"))?),
        };
        blocks.push(BlockWeights {
            ln1: layer_norm_weights(bag, &format!("{p}.input_layernorm"))?,
            attn,
            ln1_post: None,
            ln2: layer_norm_weights(bag, &format!("{p}.post_attention_layernorm"))?,
            mlp: Some(mlp),
            ln2_post: None,
        });
    }
    let w_u = match bag.take_opt("embed_out.weight") {
        Some(w) if !c.tied_embeddings => Some(w.t()?.contiguous()?),
        _ => None,
    };
    c.tied_embeddings = w_u.is_none();
    let weights = Weights {
        w_e,
        w_pos: None,
        blocks,
        ln_final: layer_norm_weights(bag, "final_layer_norm")?,
        w_u,
        b_u: None,
        unembed_blocks: None,
        unembed_bf16: None,
    };
    Ok((c, weights))
}

fn load_llama_like(
    cfg: &Value,
    path: &Path,
    bag: &mut TensorBag,
    gemma: bool,
) -> Result<(ModelConfig, Weights)> {
    strip_prefix(
        bag,
        &["model.language_model.", "language_model.model.", "model."],
    );
    let d = get_usize(cfg, path, &["hidden_size"])?;
    let n_layers = get_usize(cfg, path, &["num_hidden_layers"])?;
    let h = get_usize(cfg, path, &["num_attention_heads"])?;
    let kvh = get(cfg, &["num_key_value_heads"])
        .and_then(Value::as_u64)
        .map_or(h, |x| x as usize);
    let dh = get(cfg, &["head_dim"])
        .and_then(Value::as_u64)
        .map_or(d / h, |x| x as usize);
    let w_e = bag.take("embed_tokens.weight")?;
    let mut c = base_config(if gemma {
        Architecture::Gemma3
    } else {
        Architecture::Llama
    });
    c.d_model = d;
    c.n_layers = n_layers;
    c.n_heads = h;
    c.n_kv_heads = kvh;
    c.d_head = dh;
    c.d_mlp = get_usize(cfg, path, &["intermediate_size"])?;
    c.d_vocab = w_e.dim(0)?;
    c.n_ctx = get_usize(cfg, path, &["max_position_embeddings"])?;
    c.norm = NormKind::RmsNorm;
    c.norm_eps = get_f64(cfg, &["rms_norm_eps"], 1e-6);
    c.gated_mlp = true;
    c.act = activation(
        get(cfg, &["hidden_activation", "hidden_act"])
            .and_then(Value::as_str)
            .unwrap_or("silu"),
    )?;
    c.tied_embeddings = get_bool(cfg, &["tie_word_embeddings"], gemma);
    c.attn_scale = (dh as f64).sqrt();
    c.layer_windows = vec![None; n_layers];
    if gemma {
        c.qk_norm = true;
        c.post_norms = true;
        c.embed_scale = Some((d as f64).sqrt());
        c.default_prepend_bos = true;
        c.attn_scale = get_f64(cfg, &["query_pre_attn_scalar"], dh as f64).sqrt();
        c.attn_logit_softcap = get(cfg, &["attn_logit_softcapping"]).and_then(Value::as_f64);
        c.final_logit_softcap = get(cfg, &["final_logit_softcapping"]).and_then(Value::as_f64);
        let window = get(cfg, &["sliding_window"])
            .and_then(Value::as_u64)
            .map(|x| x as usize);
        c.layer_windows = match cfg.get("layer_types").and_then(Value::as_array) {
            Some(types) => types
                .iter()
                .map(|t| {
                    if t.as_str() == Some("sliding_attention") {
                        window
                    } else {
                        None
                    }
                })
                .collect(),
            None => {
                let pattern = get(cfg, &["sliding_window_pattern"])
                    .and_then(Value::as_u64)
                    .unwrap_or(6) as usize;
                (0..n_layers)
                    .map(|l| if (l + 1) % pattern == 0 { None } else { window })
                    .collect()
            }
        };
        c.positions = Positions::Rotary {
            dim: dh,
            base: rope_theta(
                cfg,
                "full_attention",
                get_f64(cfg, &["rope_theta"], 1_000_000.0),
            ),
            local_base: Some(rope_theta(
                cfg,
                "sliding_attention",
                get_f64(cfg, &["rope_local_base_freq"], 10_000.0),
            )),
        };
    } else {
        c.positions = Positions::Rotary {
            dim: dh,
            base: rope_theta(cfg, "", get_f64(cfg, &["rope_theta"], 10_000.0)),
            local_base: None,
        };
    }
    // Gemma's RMSNorm multiplies by (1 + w); store the effective weight.
    let norm = |bag: &mut TensorBag, name: &str| -> Result<NormWeights> {
        let w = bag.take(name)?;
        Ok(NormWeights {
            w: Some(if gemma { (w + 1.0)? } else { w }),
            b: None,
        })
    };
    let mut blocks = Vec::new();
    for l in 0..n_layers {
        let p = format!("layers.{l}");
        let attn = AttnWeights {
            w_q: bag.linear(&format!("{p}.self_attn.q_proj.weight"))?.into(),
            w_k: bag.linear(&format!("{p}.self_attn.k_proj.weight"))?.into(),
            w_v: bag.linear(&format!("{p}.self_attn.v_proj.weight"))?.into(),
            w_o: bag.linear(&format!("{p}.self_attn.o_proj.weight"))?.into(),
            b_q: bag.take_opt(&format!("{p}.self_attn.q_proj.bias")),
            b_k: bag.take_opt(&format!("{p}.self_attn.k_proj.bias")),
            b_v: bag.take_opt(&format!("{p}.self_attn.v_proj.bias")),
            b_o: bag.take_opt(&format!("{p}.self_attn.o_proj.bias")),
            q_norm: if gemma {
                Some(norm(bag, &format!("{p}.self_attn.q_norm.weight"))?)
            } else {
                None
            },
            k_norm: if gemma {
                Some(norm(bag, &format!("{p}.self_attn.k_norm.weight"))?)
            } else {
                None
            },
        };
        let mlp = MlpWeights {
            w_in: bag.linear(&format!("{p}.mlp.up_proj.weight"))?.into(),
            b_in: None,
            w_gate: Some(bag.linear(&format!("{p}.mlp.gate_proj.weight"))?.into()),
            b_gate: None,
            w_out: bag.linear(&format!("{p}.mlp.down_proj.weight"))?.into(),
            b_out: None,
        };
        let (ln1_post, ln2, ln2_post) = if gemma {
            (
                Some(norm(bag, &format!("{p}.post_attention_layernorm.weight"))?),
                norm(bag, &format!("{p}.pre_feedforward_layernorm.weight"))?,
                Some(norm(
                    bag,
                    &format!("{p}.post_feedforward_layernorm.weight"),
                )?),
            )
        } else {
            (
                None,
                norm(bag, &format!("{p}.post_attention_layernorm.weight"))?,
                None,
            )
        };
        blocks.push(BlockWeights {
            ln1: norm(bag, &format!("{p}.input_layernorm.weight"))?,
            attn,
            ln1_post,
            ln2,
            mlp: Some(mlp),
            ln2_post,
        });
    }
    let w_u = match bag.take_opt("lm_head.weight") {
        Some(w) if !c.tied_embeddings => Some(w.t()?.contiguous()?),
        _ => None,
    };
    c.tied_embeddings = w_u.is_none();
    let weights = Weights {
        w_e,
        w_pos: None,
        blocks,
        ln_final: norm(bag, "norm.weight")?,
        w_u,
        b_u: None,
        unembed_blocks: None,
        unembed_bf16: None,
    };
    Ok((c, weights))
}

/// A model ready to use: the hooked transformer, its tokenizer, chat template and provenance.
pub struct LoadedModel {
    pub model: crate::model::HookedTransformer,
    pub tokenizer: crate::tokenizer::Tokenizer,
    /// The chat format, when the model has one.
    pub chat: Option<crate::tokenizer::ChatTemplate>,
    /// Where the model came from and its sha256.
    pub resolved: crate::source::ResolvedModel,
    /// `gguf` or `hf-dir`.
    pub format: &'static str,
    /// Seconds spent loading (after fetching).
    pub load_seconds: f64,
}

/// Load a model that is already local (see [`crate::source::resolve`]); `storage` applies to
/// GGUF files (Hugging Face directories are dense, or bf16 when asked).
pub fn load_resolved(
    resolved: crate::source::ResolvedModel,
    device: &Device,
    storage: WeightStorage,
) -> Result<LoadedModel> {
    use crate::tokenizer::{ChatTemplate, Tokenizer};
    let t0 = std::time::Instant::now();
    let path = resolved.path.clone();
    let (cfg, weights, tokenizer, chat, format) = if path.is_dir() {
        let (cfg, weights) = load_hf_dir(&path, device)?;
        let tok_path = path.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path)?;
        let chat = std::fs::read_to_string(path.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| {
                v.get("chat_template")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .and_then(|t| ChatTemplate::from_template_source(&t).ok());
        (cfg, weights, tokenizer, chat, "hf-dir")
    } else {
        let gguf = GgufFile::open(&path)?;
        let (cfg, weights) = load_gguf(&gguf, &path, device, storage)?;
        let tokenizer = Tokenizer::from_gguf_metadata(&gguf.metadata)?;
        let chat = ChatTemplate::for_model(&gguf.metadata).ok();
        (cfg, weights, tokenizer, chat, "gguf")
    };
    let mut weights = weights;
    if storage == WeightStorage::Bf16 {
        if !device.is_cpu() {
            return Err(Error::Unsupported(
                "bf16 weights are a CPU path; load f32 weights on the GPU".into(),
            ));
        }
        weights.pack_bf16()?;
    }
    let model = crate::model::HookedTransformer::new(cfg, weights, device.clone())?;
    Ok(LoadedModel {
        model,
        tokenizer,
        chat,
        resolved,
        format,
        load_seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Resolve (fetching into the cache if needed) and load a model source string: a path, an
/// alias such as `smollm2-135m`, `pip:...` or `hf:...`.
pub fn load(
    source: &str,
    device: &Device,
    progress: &mut dyn FnMut(crate::source::FetchEvent),
) -> Result<LoadedModel> {
    let src = crate::source::ModelSource::parse(source)?;
    let resolved = crate::source::resolve(&src, progress)?;
    load_resolved(resolved, device, WeightStorage::Dense)
}
