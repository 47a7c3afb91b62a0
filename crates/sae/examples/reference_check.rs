//! The Rust half of the reference check (docs/sae.md §Reference check).
//!
//! ```sh
//! cargo run --release -p interplab-sae --example reference_check -- RUN_DIR ARCH STEPS [ACTS.safetensors]
//! .venv-peer/bin/python scripts/reference/sae_train_reference.py RUN_DIR
//! .venv-peer/bin/python scripts/reference/compare_sae_reference.py RUN_DIR
//! ```
//!
//! `scripts/reference/sae_reference_check.sh [STEPS]` runs all four architectures.
//!
//! Writes `config.json`, `init.safetensors`, `train.safetensors` and `heldout.safetensors`
//! into RUN_DIR (the reference trainer's inputs), trains the same steps with
//! [`interplab_sae::Trainer`] from the same initial weights on the same rows (step t reads rows
//! `(t·B + j) mod N`), and writes `rust.json` (per-step losses, held-out FVU and L0) and
//! `rust_final.safetensors`. Activations come from ACTS (tensor `x` `[N, d]`, e.g. harvested
//! from SmolLM2 by `interplab sae harvest`) or, without it, from a planted sparse dictionary.
//! The last 4,096 rows are held out.

use std::path::PathBuf;

use interplab_core::rng::SplitMix;
use interplab_sae::io::{read_shaped, write_shaped};
use interplab_sae::metrics::Accumulator;
use interplab_sae::{Architecture, TrainConfig, Trainer};

fn planted(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix::new(seed);
    let f = 8 * d;
    let dirs: Vec<f32> = (0..f * d)
        .map(|_| rng.normal() as f32 / (d as f32).sqrt())
        .collect();
    let mut x = vec![0.0f32; n * d];
    for row in x.chunks_exact_mut(d) {
        for _ in 0..4 {
            let j = rng.below(f as u64) as usize;
            let a = 0.5 + rng.next_f32();
            for (o, w) in row.iter_mut().zip(&dirs[j * d..(j + 1) * d]) {
                *o += a * w;
            }
        }
        for o in row.iter_mut() {
            *o += 0.01 * rng.normal() as f32;
        }
    }
    x
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: reference_check RUN_DIR relu|topk|batchtopk|jumprelu STEPS [ACTS.safetensors]"
    );
    let dir = PathBuf::from(&args[0]);
    let arch = Architecture::parse(&args[1])?;
    let steps: u64 = args[2].parse()?;
    std::fs::create_dir_all(&dir)?;
    let (x, d) = match args.get(3) {
        Some(p) => {
            let (t, _) = read_shaped(std::path::Path::new(p))?;
            let x = t
                .get("x")
                .ok_or_else(|| anyhow::anyhow!("{p}: no tensor x"))?;
            anyhow::ensure!(x.shape.len() == 2, "{p}: x must be [N, d]");
            (x.data.clone(), x.shape[1])
        }
        None => (planted(20_480, 64, 3), 64),
    };
    let n = x.len() / d;
    let held = 4096.min(n / 4);
    let (train, heldout) = x.split_at((n - held) * d);
    let n_train = n - held;
    let d_sae = if d >= 512 { 8 * d } else { 16 * d };
    let batch = if d >= 512 { 1024 } else { 256 };
    let cfg = TrainConfig {
        arch,
        d_in: d,
        d_sae,
        k: if d >= 512 { 32 } else { 4 },
        batch_size: batch,
        steps,
        lr: 1e-3,
        lr_warmup_steps: steps / 10,
        lr_decay_steps: steps / 5,
        sparsity_coefficient: match arch {
            Architecture::Relu => 1.0,
            Architecture::Jumprelu => 0.01,
            _ => 0.0,
        },
        sparsity_warmup_steps: steps / 5,
        dead_tokens: 20 * batch as u64,
        ..Default::default()
    };
    let mut tr = Trainer::new(cfg.clone(), train)?;
    let sae = &tr.sae;
    let config = serde_json::json!({
        "architecture": arch.name(), "transcoder": false, "d_in": d, "d_sae": d_sae, "d_out": d,
        "k": cfg.k, "batch_size": batch, "steps": steps, "lr": cfg.lr,
        "lr_warmup_steps": cfg.lr_warmup_steps, "lr_decay_steps": cfg.lr_decay_steps,
        "sparsity_coefficient": cfg.sparsity_coefficient,
        "sparsity_warmup_steps": cfg.sparsity_warmup_steps, "dead_tokens": cfg.dead_tokens,
        "aux_alpha": cfg.aux_alpha, "jumprelu_bandwidth": cfg.jumprelu_bandwidth,
        "clip_grad": cfg.clip_grad, "threshold_beta": cfg.threshold_beta,
        "adam_beta1": cfg.adam_beta1, "adam_beta2": cfg.adam_beta2, "adam_eps": cfg.adam_eps,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let w_enc = sae.w_enc();
    let mut init: Vec<(String, Vec<usize>, &[f32])> = vec![
        ("W_enc".into(), vec![d, d_sae], &w_enc),
        ("b_enc".into(), vec![d_sae], &sae.b_enc),
        ("W_dec".into(), vec![d_sae, d], &sae.w_dec),
        ("b_dec".into(), vec![d], &sae.b_dec),
    ];
    if arch == Architecture::Jumprelu {
        init.push(("log_threshold".into(), vec![d_sae], &tr.log_threshold));
    }
    write_shaped(&dir.join("init.safetensors"), &init, &[])?;
    write_shaped(
        &dir.join("train.safetensors"),
        &[("x".into(), vec![n_train, d], train)],
        &[],
    )?;
    write_shaped(
        &dir.join("heldout.safetensors"),
        &[("x".into(), vec![held, d], heldout)],
        &[],
    )?;

    let mut log: Vec<serde_json::Value> = Vec::new();
    let t0 = std::time::Instant::now();
    for t in 0..steps as usize {
        let rows: Vec<f32> = (0..batch)
            .flat_map(|j| {
                let r = (t * batch + j) % n_train;
                train[r * d..(r + 1) * d].iter().copied()
            })
            .collect();
        let s = tr.step(&rows, None);
        log.push(serde_json::to_value(s)?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let sae = tr.inference_sae(None);
    let (codes, xh) = sae.forward(heldout);
    let mut acc = Accumulator::new(d, d_sae);
    acc.add(heldout, &xh, &codes);
    let m = acc.finish();
    let col = |k: &str| -> Vec<f64> { log.iter().map(|v| v[k].as_f64().unwrap()).collect() };
    let out = serde_json::json!({
        "loss": col("loss"), "mse": col("mse"), "sparsity": col("sparsity"), "aux": col("aux"),
        "dead": col("dead"), "lr": col("lr"),
        "heldout": {"fvu": m.fvu, "l0": m.l0, "n": held}, "train_seconds": secs,
    });
    std::fs::write(dir.join("rust.json"), serde_json::to_string_pretty(&out)?)?;
    let w_enc = sae.w_enc();
    let mut fin: Vec<(String, Vec<usize>, &[f32])> = vec![
        ("W_enc".into(), vec![d, d_sae], &w_enc),
        ("b_enc".into(), vec![d_sae], &sae.b_enc),
        ("W_dec".into(), vec![d_sae, d], &sae.w_dec),
        ("b_dec".into(), vec![d], &sae.b_dec),
    ];
    if arch == Architecture::Jumprelu {
        fin.push(("log_threshold".into(), vec![d_sae], &tr.log_threshold));
    }
    if arch == Architecture::Batchtopk {
        fin.push(("threshold".into(), vec![d_sae], &sae.threshold));
    }
    write_shaped(&dir.join("rust_final.safetensors"), &fin, &[])?;
    println!(
        "{} {} steps in {secs:.1} s: final loss {:.5}, held-out fvu {:.4}, l0 {:.2}",
        arch.name(),
        steps,
        log.last()
            .map(|v| v["loss"].as_f64().unwrap())
            .unwrap_or(f64::NAN),
        m.fvu,
        m.l0
    );
    Ok(())
}
