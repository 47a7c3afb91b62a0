//! SAEs on disk in SAELens' layout (checked against SAELens 6.54.12): a directory holding
//! `cfg.json` and `sae_weights.safetensors` with `W_enc [d_in, d_sae]`, `b_enc [d_sae]`,
//! `W_dec [d_sae, d_out]`, `b_dec [d_out]` and, for JumpReLU forms, `threshold [d_sae]`.
//!
//! Architectures map as SAELens names them: `relu` ↔ `standard` (`transcoder` for a
//! transcoder), `topk` ↔ `topk`, `jumprelu` ↔ `jumprelu` (`jumprelu_transcoder`), and
//! `batchtopk` is saved in its inference form, `jumprelu` with every threshold equal to the
//! trained estimate (as SAELens does). A loaded `topk` SAE with
//! `rescale_acts_by_decoder_norm: true` is folded on loading (encoder rows and `b_enc` times
//! the decoder row norms, decoder rows divided by them): the same latents' values and the same
//! reconstructions. Weights are written already folded with any normalisation scale, so
//! `normalize_activations` is `none`. SAELens requires `dtype` and a PEP 440
//! `metadata.sae_lens_version`; both are written.

use std::path::Path;

use serde_json::{json, Value};

use crate::io::{read_shaped, write_shaped};
use crate::sae::{Architecture, Sae};

/// The SAELens version whose layout this module writes.
pub const SAELENS_VERSION: &str = "6.54.12";

/// Extra facts written into `cfg.json`'s `metadata` (hook names, model).
#[derive(Debug, Clone, Default)]
pub struct SaveInfo {
    pub model_name: Option<String>,
    pub hook_name: Option<String>,
    /// A transcoder's output hook.
    pub hook_name_out: Option<String>,
    /// Anything else (training config, metrics) under `metadata.interplab`.
    pub interplab: Option<Value>,
}

/// Write `sae` into the new directory `dir` (refused if it exists and is not empty). Files are
/// written to temporary names and renamed.
pub fn save(sae: &Sae, dir: &Path, info: &SaveInfo) -> anyhow::Result<()> {
    sae.check()?;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!(
            "{} exists and is not empty; an SAE is saved into a new directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let arch = match (sae.arch, sae.transcoder) {
        (Architecture::Relu, false) => "standard",
        (Architecture::Relu, true) => "transcoder",
        (Architecture::Topk, false) => "topk",
        (Architecture::Topk, true) => anyhow::bail!(
            "SAELens has no TopK transcoder architecture; save it as a JumpReLU transcoder \
             by training with --arch batchtopk or jumprelu"
        ),
        (Architecture::Jumprelu | Architecture::Batchtopk, false) => "jumprelu",
        (Architecture::Jumprelu | Architecture::Batchtopk, true) => "jumprelu_transcoder",
    };
    let mut metadata = json!({ "sae_lens_version": SAELENS_VERSION });
    if let Some(m) = &info.model_name {
        metadata["model_name"] = json!(m);
    }
    if let Some(h) = &info.hook_name {
        metadata["hook_name"] = json!(h);
    }
    if let Some(h) = &info.hook_name_out {
        metadata["hook_name_out"] = json!(h);
    }
    if sae.arch == Architecture::Batchtopk {
        metadata["training_architecture"] = json!("batchtopk");
    }
    if let Some(v) = &info.interplab {
        metadata["interplab"] = v.clone();
    }
    let mut cfg = json!({
        "architecture": arch,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    });
    if sae.transcoder {
        cfg["d_out"] = json!(sae.d_out);
    }
    if sae.arch == Architecture::Topk {
        cfg["k"] = json!(sae.k);
        cfg["rescale_acts_by_decoder_norm"] = json!(false);
    }
    let w_enc = sae.w_enc();
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = vec![
        ("W_enc".into(), vec![sae.d_in, sae.d_sae], &w_enc),
        ("b_enc".into(), vec![sae.d_sae], &sae.b_enc),
        ("W_dec".into(), vec![sae.d_sae, sae.d_out], &sae.w_dec),
        ("b_dec".into(), vec![sae.d_out], &sae.b_dec),
    ];
    if matches!(sae.arch, Architecture::Jumprelu | Architecture::Batchtopk) {
        tensors.push(("threshold".into(), vec![sae.d_sae], &sae.threshold));
    }
    write_shaped(&dir.join("sae_weights.safetensors"), &tensors, &[])?;
    interplab_core::atomic::write_atomic(
        &dir.join("cfg.json"),
        serde_json::to_string_pretty(&cfg)?.as_bytes(),
    )?;
    Ok(())
}

/// What a loaded `cfg.json` says besides the weights.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub sae: Sae,
    /// `metadata.hook_name`, if written.
    pub hook_name: Option<String>,
    /// `metadata.hook_name_out` (transcoders), if written.
    pub hook_name_out: Option<String>,
    /// `metadata.model_name`, if written.
    pub model_name: Option<String>,
    /// The whole `cfg.json`.
    pub cfg: Value,
}

/// Read an SAE directory in SAELens' layout. Every problem is one error naming the file.
pub fn load(dir: &Path) -> anyhow::Result<Loaded> {
    let cfg_path = dir.join("cfg.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cfg_path.display()))?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not valid JSON ({e})", cfg_path.display()))?;
    let bad = |what: String| anyhow::anyhow!("{}: {what}", cfg_path.display());
    let arch_name = cfg["architecture"].as_str().unwrap_or("standard");
    let (arch, transcoder) = match arch_name {
        "standard" => (Architecture::Relu, false),
        "transcoder" => (Architecture::Relu, true),
        "topk" => (Architecture::Topk, false),
        "jumprelu" => (Architecture::Jumprelu, false),
        "jumprelu_transcoder" => (Architecture::Jumprelu, true),
        other => {
            return Err(bad(format!(
                "architecture {other:?} is not supported (standard, topk, jumprelu, \
                 transcoder, jumprelu_transcoder)"
            )))
        }
    };
    let size = |k: &str| -> anyhow::Result<usize> {
        cfg[k]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("no positive integer {k:?}")))
    };
    let d_in = size("d_in")?;
    let d_sae = size("d_sae")?;
    let d_out = if transcoder { size("d_out")? } else { d_in };
    let k = if arch == Architecture::Topk {
        size("k")?
    } else {
        0
    };
    match cfg["normalize_activations"].as_str().unwrap_or("none") {
        "none" | "expected_average_only_in" => {}
        other => {
            return Err(bad(format!(
                "normalize_activations {other:?} is not supported (the weights must work on raw \
                 activations: none)"
            )))
        }
    }
    let apply_b_dec_to_input = cfg["apply_b_dec_to_input"].as_bool().unwrap_or(!transcoder);
    let weights = dir.join("sae_weights.safetensors");
    let (tensors, _) = read_shaped(&weights)?;
    let get = |name: &str, shape: &[usize]| -> anyhow::Result<Vec<f32>> {
        let t = tensors
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("{}: no tensor {name}", weights.display()))?;
        anyhow::ensure!(
            t.shape == shape,
            "{}: {name} has shape {:?}, but cfg.json's sizes make it {shape:?}",
            weights.display(),
            t.shape
        );
        Ok(t.data.clone())
    };
    let w_enc = get("W_enc", &[d_in, d_sae])?;
    let mut sae = Sae {
        arch,
        d_in,
        d_sae,
        d_out,
        k,
        transcoder,
        apply_b_dec_to_input,
        w_enc_t: crate::kernels::transpose(&w_enc, d_in, d_sae),
        b_enc: get("b_enc", &[d_sae])?,
        w_dec: get("W_dec", &[d_sae, d_out])?,
        b_dec: get("b_dec", &[d_out])?,
        threshold: if arch == Architecture::Jumprelu {
            get("threshold", &[d_sae])?
        } else {
            Vec::new()
        },
    };
    if arch == Architecture::Topk && cfg["rescale_acts_by_decoder_norm"].as_bool() == Some(true) {
        let norms = sae.decoder_norms();
        for (i, &n) in norms.iter().enumerate() {
            anyhow::ensure!(
                n > 0.0,
                "{}: latent {i} has a zero decoder row",
                weights.display()
            );
            for v in &mut sae.w_enc_t[i * d_in..(i + 1) * d_in] {
                *v *= n;
            }
            sae.b_enc[i] *= n;
            for v in &mut sae.w_dec[i * d_out..(i + 1) * d_out] {
                *v /= n;
            }
        }
    }
    let finite = [
        &sae.w_enc_t,
        &sae.b_enc,
        &sae.w_dec,
        &sae.b_dec,
        &sae.threshold,
    ]
    .iter()
    .all(|v| v.iter().all(|x| x.is_finite()));
    anyhow::ensure!(finite, "{}: holds non-finite weights", weights.display());
    sae.check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let meta = |k: &str| cfg["metadata"][k].as_str().map(str::to_string);
    Ok(Loaded {
        hook_name: meta("hook_name"),
        hook_name_out: meta("hook_name_out"),
        model_name: meta("model_name"),
        sae,
        cfg,
    })
}
