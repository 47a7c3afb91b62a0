//! `sae-features`: feature cards for an SAE's latents, read on a corpus' held-out documents.
//!
//! For each latent: its density (fraction of held-out tokens on which it is active), a histogram
//! of its non-zero activations, the top activating contexts (± `window` tokens, each token shaded
//! by the latent's activation there) and samples from four activation intervals (0–¼, ¼–½, ½–¾
//! and ¾–1 of its maximum, drawn uniformly by `seed`), its top and bottom logit effects, and the
//! nearest latents by decoder cosine. The index lists every latent by density.
//!
//! Logit effects: `(γ ⊙ W_dec[i]) · W_U`, γ the final norm's weight; the norm's division by the
//! residual's RMS is left out (a positive factor common to every token, so the ranking holds).
//! They are given for SAEs that write into the residual stream (`hook_resid_*`,
//! `hook_mlp_out`, `hook_attn_out`, and transcoders onto `hook_mlp_out`).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::bail;
use candle_core::DType;
use interplab_core::rng::SplitMix;
use interplab_report::{BarChart, Figure, Report};
use interplab_sae::saelens::load;
use interplab_sae::store::{HarvestSpec, Harvester};
use serde::{Deserialize, Serialize};

use crate::sae_train::held_out_sequences;
use crate::{Context, Experiment, Outcome, Problems, Progress};

/// The config of `sae-features`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model: alias, path, pip:… or hf:….
    pub model: String,
    /// The SAE folder (SAELens layout).
    pub sae: PathBuf,
    /// Latents to make cards for (empty: `cards` latents spread evenly over the density ranks
    /// of the latents that fired).
    pub latents: Vec<usize>,
    /// Cards when `latents` is empty.
    pub cards: usize,
    /// Held-out tokens read.
    pub tokens: u64,
    /// The corpus whose held-out documents are read.
    pub corpus: String,
    /// Every `held_out_every`-th document is held out (as in `sae-train`).
    pub held_out_every: usize,
    /// Tokens per sequence.
    pub context: usize,
    /// Tokens shown on each side of an activating token.
    pub window: usize,
    /// Top activating contexts per card.
    pub top: usize,
    /// Samples per activation interval.
    pub samples: usize,
    /// Tokens in each logit-effect list.
    pub logits: usize,
    /// Nearest latents per card.
    pub nearest: usize,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: String::new(),
            sae: PathBuf::new(),
            latents: Vec::new(),
            cards: 24,
            tokens: 131_072,
            corpus: "docs-and-plays".into(),
            held_out_every: 20,
            context: 128,
            window: 8,
            top: 10,
            samples: 3,
            logits: 10,
            nearest: 5,
            seed: 0,
        }
    }
}

/// One context: tokens around the activating one with the latent's activation on each.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub tokens: Vec<String>,
    pub acts: Vec<f32>,
    /// Index of the activating token in `tokens`.
    pub focus: usize,
    pub value: f32,
}

/// One latent's card.
#[derive(Debug, Clone, Serialize)]
pub struct Card {
    pub latent: usize,
    /// Fraction of the tokens read on which it is active.
    pub density: f64,
    pub max_activation: f64,
    /// Mean of the non-zero activations.
    pub mean_activation: f64,
    /// Counts of non-zero activations in 20 equal bins from 0 to the maximum.
    pub histogram: Vec<u64>,
    pub top: Vec<Example>,
    /// Per interval (label, samples), lowest first.
    pub intervals: Vec<(String, Vec<Example>)>,
    /// Tokens whose logit the decoder direction raises most, with the effect.
    pub top_logits: Vec<(String, f64)>,
    /// Tokens it lowers most.
    pub bottom_logits: Vec<(String, f64)>,
    /// (latent, decoder cosine), highest first.
    pub nearest: Vec<(usize, f64)>,
}

/// The results of `sae-features`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub hook: String,
    pub d_sae: usize,
    /// Held-out tokens read.
    pub tokens: u64,
    /// Latents active at least once.
    pub alive: usize,
    /// Every latent's density (the index), by latent.
    pub density: Vec<f64>,
    pub cards: Vec<Card>,
}

impl Experiment for Config {
    const NAME: &'static str = "sae-features";
    const QUESTION: &'static str =
        "What does each SAE latent respond to — on which tokens and contexts is it most active, \
         and which next tokens does its decoder direction promote?";
    type Results = Results;
    fn validate(&self) -> anyhow::Result<()> {
        let mut p = Problems::new(Self::NAME);
        p.check(!self.model.is_empty(), "model must be given")
            .check(
                !self.sae.as_os_str().is_empty(),
                "sae (a folder) must be given",
            )
            .positive("held_out_every", self.held_out_every)
            .check(self.context >= 2, "context must be at least 2 tokens")
            .check(self.tokens > 0, "tokens must be positive")
            .check(
                !self.latents.is_empty() || self.cards > 0,
                "give latents or a positive number of cards",
            );
        p.finish()
    }
    fn models(&self) -> Vec<String> {
        vec![self.model.clone()]
    }
    fn quick() -> Self {
        Config {
            model: "smollm2-135m".into(),
            sae: crate::sae_eval::quick_sae(),
            cards: 4,
            tokens: 4096,
            context: 64,
            ..Default::default()
        }
    }
    fn run(&self, ctx: &Context, progress: &mut dyn Progress) -> anyhow::Result<Outcome<Results>> {
        run(ctx, self, progress)
    }
}

/// Whether an SAE at `hook` (predicting `hook_out`) writes into the residual stream.
fn writes_residual(hook: &str, hook_out: Option<&str>) -> bool {
    let h = hook_out.unwrap_or(hook);
    [
        "hook_resid_pre",
        "hook_resid_mid",
        "hook_resid_post",
        "hook_mlp_out",
        "hook_attn_out",
    ]
    .iter()
    .any(|s| h.ends_with(s))
}

/// Run `sae-features`.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome<Results>> {
    let m = ctx.model()?;
    let loaded = load(&cfg.sae)?;
    let sae = loaded.sae;
    let hook = loaded.hook_name.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: cfg.json names no hook (`hook_name`)",
            cfg.sae.display()
        )
    })?;
    for &l in &cfg.latents {
        if l >= sae.d_sae {
            bail!(
                "latent {l} does not exist: the SAE has {} latents",
                sae.d_sae
            );
        }
    }
    let spec = HarvestSpec {
        hook: hook.clone(),
        hook_out: None,
        exclude_special: true,
        batch_sequences: 32,
    };
    let h = Harvester::new(m, spec)?;
    anyhow::ensure!(
        h.d_in == sae.d_in,
        "the SAE reads {} dimensions but `{hook}` has {}",
        sae.d_in,
        h.d_in
    );
    progress.phase("tokenising");
    let held = held_out_sequences(m, &cfg.corpus, cfg.context, cfg.held_out_every)?;
    let seqs: Vec<Vec<u32>> = held
        .iter()
        .take(cfg.tokens.div_ceil(cfg.context as u64) as usize)
        .cloned()
        .collect();
    if seqs.is_empty() {
        bail!(
            "corpus {} has no held-out sequence of {} tokens",
            cfg.corpus,
            cfg.context
        );
    }
    // Every non-zero activation: per latent, (value, sequence, position).
    progress.phase("encoding");
    progress.total(seqs.len() as u64, "sequences");
    let mut fired: Vec<Vec<(f32, u32, u16)>> = vec![Vec::new(); sae.d_sae];
    let mut tokens = 0u64;
    let mut stored = 0usize;
    let budget = interplab_core::model::mem_available().unwrap_or(u64::MAX) / 4;
    for (i, chunk) in seqs.chunks(32).enumerate() {
        let rows = h.harvest(chunk, i * 32)?;
        tokens += rows.len() as u64;
        let codes = sae.encode(&rows.x);
        for (r, &(s, p)) in rows.at.iter().enumerate() {
            for (l, v) in codes.row(r) {
                if v != 0.0 {
                    fired[l].push((v, s, p as u16));
                    stored += 1;
                }
            }
        }
        if (stored * 12) as u64 > budget {
            bail!(
                "{stored} activations after {tokens} tokens exceed a quarter of the available memory; read fewer tokens"
            );
        }
        progress.position(((i + 1) * 32).min(seqs.len()) as u64);
    }
    let density: Vec<f64> = fired
        .iter()
        .map(|f| f.len() as f64 / tokens.max(1) as f64)
        .collect();
    let alive: Vec<usize> = (0..sae.d_sae).filter(|&l| !fired[l].is_empty()).collect();
    let chosen: Vec<usize> = if cfg.latents.is_empty() {
        let mut by_density = alive.clone();
        by_density.sort_by(|&a, &b| density[b].total_cmp(&density[a]).then(a.cmp(&b)));
        let n = cfg.cards.min(by_density.len());
        (0..n)
            .map(|i| by_density[i * by_density.len() / n.max(1)])
            .collect()
    } else {
        cfg.latents.clone()
    };

    // Logit effects and decoder cosines.
    progress.phase("cards");
    let d = sae.d_out;
    let unembed: Option<(Vec<f32>, usize)> =
        if writes_residual(&hook, loaded.hook_name_out.as_deref()) && d == m.model.cfg.d_model {
            let w_u = m.model.weights.unembed()?.to_dtype(DType::F32)?;
            let vocab = w_u.dims()[1];
            Some((w_u.flatten_all()?.to_vec1()?, vocab))
        } else {
            None
        };
    let gamma: Vec<f32> = match &m.model.weights.ln_final.w {
        Some(w) => w.to_dtype(DType::F32)?.to_vec1()?,
        None => vec![1.0; d],
    };
    let norms = sae.decoder_norms();
    let show = |id: u32| -> String {
        m.tokenizer
            .decode(&[id])
            .unwrap_or_else(|_| format!("<{id}>"))
    };
    let mut rng = SplitMix::new(cfg.seed ^ 0xCA4D);
    let mut cards = Vec::new();
    for &l in &chosen {
        let mut f = fired[l].clone();
        f.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let max = f.first().map_or(0.0, |e| e.0 as f64);
        let mean = if f.is_empty() {
            0.0
        } else {
            f.iter().map(|e| e.0 as f64).sum::<f64>() / f.len() as f64
        };
        let mut histogram = vec![0u64; 20];
        for e in &f {
            let b = ((e.0 as f64 / max.max(1e-30)) * 20.0) as usize;
            histogram[b.min(19)] += 1;
        }
        let at: HashMap<(u32, u16), f32> = f.iter().map(|e| ((e.1, e.2), e.0)).collect();
        let example = |e: &(f32, u32, u16)| -> Example {
            let seq = &seqs[e.1 as usize];
            let p = e.2 as usize;
            let lo = p.saturating_sub(cfg.window);
            let hi = (p + cfg.window + 1).min(seq.len());
            Example {
                tokens: seq[lo..hi].iter().map(|&t| show(t)).collect(),
                acts: (lo..hi)
                    .map(|q| at.get(&(e.1, q as u16)).copied().unwrap_or(0.0))
                    .collect(),
                focus: p - lo,
                value: e.0,
            }
        };
        let top: Vec<Example> = f.iter().take(cfg.top).map(example).collect();
        let mut intervals = Vec::new();
        for q in 0..4 {
            let (a, b) = (max * q as f64 / 4.0, max * (q + 1) as f64 / 4.0);
            let pool: Vec<&(f32, u32, u16)> = f
                .iter()
                .filter(|e| (e.0 as f64) > a && (e.0 as f64) <= b)
                .collect();
            let mut idx: Vec<usize> = (0..pool.len()).collect();
            rng.shuffle(&mut idx);
            let mut picked: Vec<usize> = idx.into_iter().take(cfg.samples).collect();
            picked.sort();
            intervals.push((
                format!("{:.3}–{:.3}", a, b),
                picked.into_iter().map(|i| example(pool[i])).collect(),
            ));
        }
        let row = &sae.w_dec[l * d..(l + 1) * d];
        let (top_logits, bottom_logits) = match &unembed {
            Some((w_u, vocab)) => {
                let mut eff = vec![0.0f64; *vocab];
                for (k, (&w, &g)) in row.iter().zip(&gamma).enumerate() {
                    let a = (w * g) as f64;
                    for (e, &u) in eff.iter_mut().zip(&w_u[k * vocab..(k + 1) * vocab]) {
                        *e += a * u as f64;
                    }
                }
                let mut order: Vec<usize> = (0..*vocab).collect();
                order.sort_by(|&a, &b| eff[b].total_cmp(&eff[a]));
                let pick = |ids: &mut dyn Iterator<Item = &usize>| -> Vec<(String, f64)> {
                    ids.take(cfg.logits)
                        .map(|&t| (show(t as u32), eff[t]))
                        .collect()
                };
                (pick(&mut order.iter()), pick(&mut order.iter().rev()))
            }
            None => (Vec::new(), Vec::new()),
        };
        let mut cos: Vec<(usize, f64)> = (0..sae.d_sae)
            .filter(|&o| o != l)
            .map(|o| {
                let other = &sae.w_dec[o * d..(o + 1) * d];
                let dot: f64 = row
                    .iter()
                    .zip(other)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                (o, dot / (norms[l] as f64 * norms[o] as f64).max(1e-30))
            })
            .collect();
        cos.sort_by(|a, b| b.1.total_cmp(&a.1));
        cos.truncate(cfg.nearest);
        cards.push(Card {
            latent: l,
            density: density[l],
            max_activation: max,
            mean_activation: mean,
            histogram,
            top,
            intervals,
            top_logits,
            bottom_logits,
            nearest: cos,
        });
    }
    let results = Results {
        hook: hook.clone(),
        d_sae: sae.d_sae,
        tokens,
        alive: alive.len(),
        density,
        cards,
    };
    let report = render(&results, cfg);
    let mut out = Outcome::new(results, report);
    out.figure("density", density_figure(&out.results));
    Ok(out)
}

/// `"tok" +1.234, …`
fn logit_list(l: &[(String, f64)]) -> String {
    l.iter()
        .map(|t| format!("{:?} {:+.3}", t.0, t.1))
        .collect::<Vec<_>>()
        .join(", ")
}

fn density_figure(r: &Results) -> Figure {
    // log10 density in bins of 0.25 from −6 to 0.
    let mut counts = vec![0.0f64; 24];
    for &d in r.density.iter().filter(|&&d| d > 0.0) {
        let b = ((d.log10() + 6.0) / 0.25).floor().clamp(0.0, 23.0) as usize;
        counts[b] += 1.0;
    }
    Figure::Bar(BarChart {
        title: "Latent density (held-out tokens)".into(),
        x_label: "log10(fraction of tokens active)".into(),
        y_label: "latents".into(),
        labels: (0..24)
            .map(|i| format!("{:.2}", -6.0 + 0.25 * i as f64))
            .collect(),
        values: counts,
        ..Default::default()
    })
}

fn render(r: &Results, cfg: &Config) -> Report {
    let mut rep = Report::new(format!(
        "Feature cards: {} at {}",
        cfg.sae.display(),
        r.hook
    ));
    rep.paragraph(format!(
        "{} held-out tokens of {} read; {} of {} latents active at least once ({} dead on these tokens). \
         Hover a token to see the latent's activation on it; the activating token is outlined.",
        r.tokens,
        cfg.corpus,
        r.alive,
        r.d_sae,
        r.d_sae - r.alive
    ));
    rep.figure("Density of every latent.", &density_figure(r));
    rep.heading("Index (cards by density)");
    let mut idx: Vec<&Card> = r.cards.iter().collect();
    idx.sort_by(|a, b| b.density.total_cmp(&a.density));
    rep.table(
        &[
            "latent",
            "density",
            "max",
            "top contexts' tokens",
            "top logits",
        ],
        idx.iter()
            .map(|c| {
                vec![
                    c.latent.to_string(),
                    format!("{:.2e}", c.density),
                    format!("{:.3}", c.max_activation),
                    c.top
                        .iter()
                        .take(5)
                        .map(|e| format!("{:?}", e.tokens[e.focus]))
                        .collect::<Vec<_>>()
                        .join(" "),
                    c.top_logits
                        .iter()
                        .take(5)
                        .map(|t| format!("{:?}", t.0))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
            .collect(),
    );
    for c in &r.cards {
        rep.heading(format!("Latent {}", c.latent));
        rep.key_values(&[
            (
                "density",
                format!("{:.3e} ({:.4}% of tokens)", c.density, 100.0 * c.density),
            ),
            ("max activation", format!("{:.4}", c.max_activation)),
            ("mean when active", format!("{:.4}", c.mean_activation)),
            (
                "activation histogram (20 bins, 0 → max)",
                c.histogram
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            ("top logits", logit_list(&c.top_logits)),
            ("bottom logits", logit_list(&c.bottom_logits)),
            (
                "nearest latents (decoder cosine)",
                c.nearest
                    .iter()
                    .map(|n| format!("{} ({:.3})", n.0, n.1))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ]);
        let shown = c.top.iter().map(|e| (format!("{:.3}", e.value), e));
        let sampled = c
            .intervals
            .iter()
            .flat_map(|(label, ex)| ex.iter().map(move |e| (format!("[{label}]"), e)));
        for (label, e) in shown.chain(sampled) {
            let tokens = e.tokens.iter().cloned();
            let acts = e.acts.iter().map(|&v| v as f64);
            rep.tokens(
                label,
                tokens.zip(acts).collect(),
                c.max_activation,
                Some(e.focus),
            );
        }
    }
    rep
}
