//! `sae-eval`: saved SAEs (SAELens layout, from `sae-train` or SAELens) evaluated on a
//! corpus' held-out documents — the reconstruction metrics and CE recovered / KL of
//! [`interplab_sae::evaluate`]. Every SAE must read the same hook.

use std::path::PathBuf;

use anyhow::bail;
use interplab_report::Report;
use interplab_sae::evaluate::{check_widths, downstream, reconstruction, Evaluation};
use interplab_sae::saelens::load;
use interplab_sae::store::{HarvestSpec, Harvester};
use interplab_sae::Sae;
use serde::{Deserialize, Serialize};

use crate::sae_train::{frontier, held_out_sequences, take_tokens, Trained, Variant};
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The config of `sae-eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// SAE folders (`cfg.json` + `sae_weights.safetensors`).
    pub saes: Vec<PathBuf>,
    /// The corpus whose held-out documents are read.
    pub corpus: String,
    /// Every `held_out_every`-th document is held out (as in `sae-train`).
    pub held_out_every: usize,
    /// Tokens per sequence.
    pub context: usize,
    /// Leave special-token positions out of the reconstruction metrics.
    pub exclude_special: bool,
    /// Held-out tokens for the reconstruction metrics.
    pub eval_tokens: u64,
    /// Held-out tokens for CE recovered and KL.
    pub ce_tokens: u64,
    /// Sequences per forward pass.
    pub batch_sequences: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            saes: Vec::new(),
            corpus: "docs-and-plays".into(),
            held_out_every: 20,
            context: 128,
            exclude_special: true,
            eval_tokens: 65_536,
            ce_tokens: 8_192,
            batch_sequences: 32,
        }
    }
}

/// One SAE's evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluated {
    /// The folder as given.
    pub path: String,
    pub arch: String,
    pub d_sae: usize,
    pub eval: Evaluation,
}

/// The results of `sae-eval`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub hook: String,
    pub hook_out: Option<String>,
    /// Where the mean for mean ablation came from.
    pub mean_from: String,
    pub saes: Vec<Evaluated>,
}

impl Experiment for Config {
    const NAME: &'static str = "sae-eval";
    const QUESTION: &'static str =
        "How much of the activation's variance and of the model's next-token loss does a saved \
         SAE recover on held-out text?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model must be given")
            .check(
                !self.saes.is_empty(),
                "at least one SAE folder must be given",
            )
            .positive("held_out_every", self.held_out_every)
            .positive("batch_sequences", self.batch_sequences)
            .check(self.context >= 2, "context must be at least 2 tokens");
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            saes: vec![quick_sae()],
            eval_tokens: 4096,
            ce_tokens: 1024,
            context: 64,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// The SAE of the quick configs: a TopK SAE (k = 16, 256 latents) on SmolLM2-135M's
/// `blocks.3.hook_resid_post`, committed as a test fixture by `scripts/make_quick_sae.sh`.
/// Where the source tree is, its folder; elsewhere (an installed binary) the copy compiled into
/// the binary, written once to `<cache>/saes/quick-smollm2-l3-topk` (each file written to a
/// temporary name, then renamed). Errors fall back to the source path, so loading it reports
/// the problem.
pub fn quick_sae() -> PathBuf {
    let source = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sae/tests/fixtures/smollm2_l3_topk"
    ));
    if source.join("sae_weights.safetensors").is_file() {
        return source;
    }
    interplab_core::source::FetchConfig::from_env()
        .map_err(anyhow::Error::from)
        .and_then(|f| materialise_quick_sae(&f.cache_dir))
        .unwrap_or(source)
}

/// Write the compiled-in quick SAE under `cache` (unless an identical copy is there).
fn materialise_quick_sae(cache: &std::path::Path) -> anyhow::Result<PathBuf> {
    const FILES: [(&str, &[u8]); 2] = [
        (
            "cfg.json",
            include_bytes!("../../sae/tests/fixtures/smollm2_l3_topk/cfg.json"),
        ),
        (
            "sae_weights.safetensors",
            include_bytes!("../../sae/tests/fixtures/smollm2_l3_topk/sae_weights.safetensors"),
        ),
    ];
    let dir = cache.join("saes").join("quick-smollm2-l3-topk");
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in FILES {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(bytes) {
            let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
        }
    }
    Ok(dir)
}

/// Run `sae-eval`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let mut saes: Vec<Sae> = Vec::new();
    let mut hooks: Option<(String, Option<String>)> = None;
    let mut mean: Option<Vec<f32>> = None;
    for dir in &cfg.saes {
        let l = load(dir)?;
        let hook = l.hook_name.clone().ok_or_else(|| {
            anyhow::anyhow!("{}: cfg.json names no hook (`hook_name`)", dir.display())
        })?;
        let pair = (hook, l.hook_name_out.clone());
        match &hooks {
            None => hooks = Some(pair),
            Some(h) if *h != pair => bail!(
                "{} reads `{}` but the first SAE reads `{}`; evaluate SAEs of one hook together",
                dir.display(),
                pair.0,
                h.0
            ),
            Some(_) => {}
        }
        if mean.is_none() {
            mean = l.cfg["interplab"]["mean_activation"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect());
        }
        saes.push(l.sae);
    }
    let (hook, hook_out) = hooks.expect("validated: at least one SAE");
    let spec = HarvestSpec {
        hook: hook.clone(),
        hook_out: hook_out.clone(),
        exclude_special: cfg.exclude_special,
        batch_sequences: cfg.batch_sequences,
    };
    let h = Harvester::new(m, spec.clone())?;
    for (s, dir) in saes.iter().zip(&cfg.saes) {
        check_widths(s, h.d_in, h.d_out, &spec)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    }
    progress.phase("tokenising");
    let held = held_out_sequences(m, &cfg.corpus, cfg.context, cfg.held_out_every)?;
    let eval_seqs = take_tokens(m, &held, cfg.eval_tokens, cfg.exclude_special);
    let ce_seqs = take_tokens(m, &held, cfg.ce_tokens, false);
    if eval_seqs.is_empty() {
        bail!(
            "corpus {} has no held-out sequence of {} tokens",
            cfg.corpus,
            cfg.context
        );
    }
    progress.phase("evaluating");
    let refs: Vec<&Sae> = saes.iter().collect();
    let (metrics, eval_mean) = reconstruction(m, &refs, &spec, &eval_seqs)?;
    let (mean, mean_from) = match mean {
        Some(v) => (v, "the training activations (cfg.json)".to_string()),
        None => (eval_mean, "the evaluated held-out activations".to_string()),
    };
    progress.message("CE loss with the SAEs spliced in");
    let ds = downstream(m, &refs, &spec, &ce_seqs, &mean, 8)?;
    let evaluated: Vec<Evaluated> = cfg
        .saes
        .iter()
        .zip(&saes)
        .zip(metrics.into_iter().zip(ds))
        .map(|((p, s), (metrics, downstream))| Evaluated {
            path: p.display().to_string(),
            arch: s.arch.name().to_string(),
            d_sae: s.d_sae,
            eval: Evaluation {
                metrics,
                downstream,
            },
        })
        .collect();
    let mut rep = Report::new(format!("SAE evaluation on {} at {hook}", cfg.model));
    rep.paragraph(format!(
        "Held-out documents of {} (every {}th); mean ablation uses the mean of {mean_from}.",
        cfg.corpus, cfg.held_out_every
    ));
    rep.table(
        &[
            "SAE",
            "arch",
            "latents",
            "L0",
            "FVU",
            "FVU w/o outliers",
            "dead",
            "dense",
            "CE rec. (zero)",
            "CE rec. (mean)",
            "KL",
        ],
        evaluated
            .iter()
            .map(|e| {
                let (mm, d) = (&e.eval.metrics, &e.eval.downstream);
                vec![
                    e.path.clone(),
                    e.arch.clone(),
                    e.d_sae.to_string(),
                    format!("{:.2}", mm.l0),
                    format!("{:.4}", mm.fvu),
                    crate::sae_train::fmt_fvu_without_outliers(mm),
                    format!("{:.2}%", 100.0 * mm.dead),
                    format!("{:.2}%", 100.0 * mm.dense),
                    format!("{:.3}", d.ce_recovered_zero),
                    format!("{:.3}", d.ce_recovered_mean),
                    format!("{:.4}", d.kl_sae),
                ]
            })
            .collect(),
    );
    let as_trained: Vec<Trained> = evaluated
        .iter()
        .map(|e| Trained {
            name: e.path.clone(),
            variant: Variant {
                arch: e.arch.clone(),
                k: 0,
                coefficient: 0.0,
            },
            dir: e.path.clone(),
            eval: e.eval.clone(),
            threshold: None,
            curve: Vec::new(),
        })
        .collect();
    let f = frontier(&as_trained);
    rep.figure("Each SAE's L0 and FVU on held-out tokens.", &f);
    let mut outcome = Outcome::new(
        Results {
            hook,
            hook_out,
            mean_from,
            saes: evaluated,
        },
        rep,
    );
    outcome.figure("frontier", f);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An installed binary writes the compiled-in quick SAE to the cache: it loads, and a second
    /// call leaves the identical copy alone.
    #[test]
    fn quick_sae_materialises_from_the_binary() {
        let cache = tempfile::tempdir().unwrap();
        let dir = materialise_quick_sae(cache.path()).unwrap();
        let loaded = interplab_sae::saelens::load(&dir).unwrap();
        assert_eq!((loaded.sae.d_in, loaded.sae.d_sae), (576, 256));
        let before = std::fs::metadata(dir.join("sae_weights.safetensors"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(materialise_quick_sae(cache.path()).unwrap(), dir);
        let after = std::fs::metadata(dir.join("sae_weights.safetensors"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    }
}
