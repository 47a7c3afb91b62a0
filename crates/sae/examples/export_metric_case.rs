//! Exports a small evaluation case for the metrics cross-check (docs/sae.md §Metrics): rows `x`,
//! their reconstructions `x_hat` and the dense codes `codes` of a TopK SAE trained briefly on a
//! planted dictionary, as f32 safetensors.
//!
//! ```sh
//! cargo run --release -p interplab-sae --example export_metric_case -- \
//!     crates/sae/tests/fixtures/metrics/case.safetensors
//! .venv-peer/bin/python scripts/reference/make_sae_metric_reference.py \
//!     crates/sae/tests/fixtures/metrics/case.safetensors crates/sae/tests/fixtures/metrics/case.json
//! ```
//!
//! `crates/sae/tests/metrics_reference.rs` recomputes the metrics from the same file with
//! [`interplab_sae::metrics::Accumulator`] and compares them with the numpy values.
//!
//! The case is chosen to exercise every metric: 24 planted directions in 16 dimensions with
//! Zipf-like frequencies (some latents fire on more than 10% of rows, some rarely), 64 latents
//! (so some never fire: `dead` > 0), and a constant offset on every row (so the FVU about the mean
//! differs from the variance about zero).

use interplab_core::rng::SplitMix;
use interplab_sae::io::write_shaped;
use interplab_sae::{Architecture, TrainConfig, Trainer};

const D: usize = 16;
const FEATURES: usize = 24;
const D_SAE: usize = 64;
const ROWS: usize = 256;

struct Planted {
    dirs: Vec<f32>,
    offset: Vec<f32>,
    /// Cumulative feature probabilities, ∝ 1/(i+1).
    cdf: Vec<f64>,
    rng: SplitMix,
}

impl Planted {
    fn new(seed: u64) -> Planted {
        let mut rng = SplitMix::new(seed);
        let mut dirs = vec![0.0f32; FEATURES * D];
        for r in dirs.chunks_exact_mut(D) {
            let v: Vec<f64> = (0..D).map(|_| rng.normal()).collect();
            let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            for (o, a) in r.iter_mut().zip(&v) {
                *o = (a / n) as f32;
            }
        }
        let offset: Vec<f32> = (0..D).map(|_| 0.5 * rng.normal() as f32).collect();
        let w: Vec<f64> = (0..FEATURES).map(|i| 1.0 / (i + 1) as f64).collect();
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        let cdf = w
            .iter()
            .map(|v| {
                acc += v / total;
                acc
            })
            .collect();
        Planted {
            dirs,
            offset,
            cdf,
            rng,
        }
    }

    fn batch(&mut self, n: usize) -> Vec<f32> {
        let mut x = vec![0.0f32; n * D];
        for row in x.chunks_exact_mut(D) {
            row.copy_from_slice(&self.offset);
            // 1 to 3 active directions.
            let active = 1 + self.rng.below(3) as usize;
            for _ in 0..active {
                let u = self.rng.next_f64();
                let f = self.cdf.iter().position(|&c| u < c).unwrap_or(FEATURES - 1);
                let a = 0.5 + self.rng.next_f32();
                for (o, w) in row.iter_mut().zip(&self.dirs[f * D..(f + 1) * D]) {
                    *o += a * w;
                }
            }
            for o in row.iter_mut() {
                *o += 0.02 * self.rng.normal() as f32;
            }
        }
        x
    }
}

fn main() -> anyhow::Result<()> {
    let path = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("usage: export_metric_case OUT.safetensors"))?,
    );
    let mut data = Planted::new(21);
    let steps = 400;
    let cfg = TrainConfig {
        arch: Architecture::Topk,
        d_in: D,
        d_sae: D_SAE,
        k: 3,
        batch_size: 256,
        steps,
        lr: 3e-3,
        lr_warmup_steps: 20,
        lr_decay_steps: steps / 5,
        dead_tokens: 1_000_000,
        seed: 5,
        ..Default::default()
    };
    let init = data.batch(4096);
    let mut tr = Trainer::new(cfg, &init)?;
    for _ in 0..steps {
        let x = data.batch(256);
        tr.step(&x, None);
    }
    let sae = tr.inference_sae(None);
    let x = data.batch(ROWS);
    let (codes, x_hat) = sae.forward(&x);
    let dense = codes.to_dense(D_SAE);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_shaped(
        &path,
        &[
            ("x".into(), vec![ROWS, D], &x),
            ("x_hat".into(), vec![ROWS, D], &x_hat),
            ("codes".into(), vec![ROWS, D_SAE], &dense),
        ],
        &[(
            "source",
            "interplab-sae example export_metric_case: TopK (k = 3, 64 latents) trained 400 steps \
             on a planted dictionary (24 Zipf-weighted directions in 16 dimensions, offset rows)"
                .to_string(),
        )],
    )?;
    println!(
        "wrote {} ({ROWS} rows, d = {D}, d_sae = {D_SAE})",
        path.display()
    );
    Ok(())
}
