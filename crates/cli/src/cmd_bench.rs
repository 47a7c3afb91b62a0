//! `interplab bench MODEL`: load time, forward tokens/s and `run_with_cache` tokens/s with peak
//! memory, on the same workload as `scripts/peer/bench_peer.py` (batch × seq random token ids).
//!
//! Each measurement runs in a fresh child process so its peak RSS is its own.

use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;
use interplab_lab::bench::{measure, Workload};

use crate::ui::{load_model, load_model_with};

/// Arguments of `interplab bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Model: alias, path, pip:... or hf:...
    #[arg(default_value = "smollm2-135m")]
    model: String,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Timed runs per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Comma-separated: load, forward, cache (run_with_cache of every hook), forward-q and
    /// cache-q (the same with --quantized-weights), forward-bf16 and cache-bf16 (the same with
    /// --dtype bf16), patch (IOI resid_pre sweep), heads (head
    /// detector), generate and generate-q (batch 1, 16 prompt + 128 new tokens, greedy),
    /// generate-batch and generate-batch-q (the same for --batch rows), probe (fitting probes
    /// on every layer for 10,000 token positions), finetune and finetune-bf16 (one full
    /// fine-tuning step of --batch × --seq tokens, f32 or with bf16 products), sae-topk,
    /// sae-relu, sae-relu-sparse, sae-batchtopk, sae-jumprelu (one SAE training step; sae-topk-bf16,
    /// sae-relu-bf16 and sae-relu-sparse-bf16 with bf16 products), harvest,
    /// harvest-last and harvest-bf16 (collecting SAE training activations; bf16: with --dtype bf16
    /// weights).
    #[arg(long, default_value = "load,forward,cache,forward-q,cache-q")]
    what: String,
    /// Also write the results as a JSON array here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Internal: run one measurement in this process.
    #[arg(long, hide = true)]
    child: bool,
}

/// Run the benchmark: one child process per measurement, one JSON line each.
pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    if a.child {
        let w = Workload {
            model: a.model.clone(),
            batch: a.batch,
            seq: a.seq,
            runs: a.runs,
        };
        let v = measure(&w, &a.what, &mut |m, s| load_model_with(m, s))?;
        println!("{v}");
        return Ok(());
    }
    // Fetch once up front so no child times a download.
    let _ = load_model(&a.model)?;
    let exe = std::env::current_exe().context("finding the interplab binary")?;
    let mut results = Vec::new();
    for what in a.what.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut cmd = Command::new(&exe);
        if let Ok(t) = std::env::var("RAYON_NUM_THREADS") {
            cmd.args(["--threads", &t]);
        }
        cmd.args(["bench", &a.model, "--child", "--what", what])
            .args(["--batch", &a.batch.to_string(), "--seq", &a.seq.to_string()])
            .args(["--runs", &a.runs.to_string()]);
        let out = cmd
            .output()
            .with_context(|| format!("running the {what} measurement"))?;
        if !out.status.success() {
            bail!(
                "the {what} measurement failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("parsing the {what} measurement's output"))?;
        println!("{v}");
        results.push(v);
    }
    if let Some(p) = &a.json {
        interplab_core::atomic::write_atomic(p, serde_json::to_string_pretty(&results)?.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
