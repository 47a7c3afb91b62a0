//! The measurements behind `interplab bench`: load time, forward and `run_with_cache` tokens/s
//! with peak memory, patching and head-detector times, generation tokens/s (batch 1 and a batch), on the same workload as
//! `scripts/peer/bench_peer.py` (batch × seq token ids from a fixed-seed stream). Peak RSS is the
//! process's, so the CLI runs each measurement in a fresh child process.

use std::time::Instant;

use anyhow::bail;
use candle_core::Tensor;
use interplab_analysis::heads::{
    head_scores, random_token_pool, repeated_random_tokens, HeadKind, HeadScoreOptions,
};
use interplab_analysis::patching::{Metric, PatchingSetup, PositionSite};
use interplab_core::loader::{LoadedModel, WeightStorage};
use interplab_core::model::{GenerateOptions, NameFilter};
use serde_json::json;

/// Prompt tokens per row of the generation benchmark.
pub const GENERATE_PROMPT: usize = 16;
/// New tokens per row of the generation benchmark.
pub const GENERATE_NEW: usize = 128;

/// What a benchmark runs on.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Model source.
    pub model: String,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Timed runs per measurement (the median is reported).
    pub runs: usize,
}

/// The median (mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process in bytes (`VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The peer script's tokens: a fixed-seed stream of ids in [1000, 40000).
pub fn bench_tokens(batch: usize, seq: usize) -> Vec<u32> {
    let mut state = 0x5eed_u64;
    (0..batch * seq)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            1000 + ((state >> 33) % 39_000) as u32
        })
        .collect()
}

/// One measurement (`what`: load, forward, cache, forward-q, cache-q, patch, heads) of `w`,
/// loading the model through `load` (fetching is the caller's: a timed load must not download).
pub fn measure(
    w: &Workload,
    what: &str,
    load: &mut dyn FnMut(&str, WeightStorage) -> anyhow::Result<LoadedModel>,
) -> anyhow::Result<serde_json::Value> {
    let a = w;
    let runs = a.runs.max(1);
    match what {
        "load" => {
            // Fetch first (not timed), then time loads.
            let _ = load(&a.model, WeightStorage::default())?;
            let mut times = Vec::new();
            for _ in 0..runs {
                let t0 = Instant::now();
                let m = load(&a.model, WeightStorage::default())?;
                times.push(t0.elapsed().as_secs_f64());
                drop(m);
            }
            Ok(json!({"name": "interplab_load", "median_s": median(times), "runs": runs}))
        }
        "forward" | "cache" | "forward-q" | "cache-q" | "forward-bf16" | "cache-bf16" => {
            let quantized = what.ends_with("-q");
            let bf16 = what.ends_with("-bf16");
            let storage = if quantized {
                WeightStorage::Quantized
            } else if bf16 {
                WeightStorage::Bf16
            } else {
                WeightStorage::Dense
            };
            let m = load(&a.model, storage)?;
            let forward_only = what.starts_with("forward");
            let ids = bench_tokens(a.batch, a.seq);
            let tokens = Tensor::from_vec(ids, (a.batch, a.seq), m.model.device())?;
            let all = NameFilter::all();
            let mut cache_bytes = 0usize;
            let mut step = || -> anyhow::Result<()> {
                if forward_only {
                    m.model.forward(&tokens)?;
                } else {
                    let (_, cache) = m.model.run_with_cache(&tokens, &all)?;
                    cache_bytes = cache.size_bytes();
                }
                Ok(())
            };
            step()?; // warm-up
            let mut times = Vec::new();
            for _ in 0..runs {
                let t0 = Instant::now();
                step()?;
                times.push(t0.elapsed().as_secs_f64());
            }
            let med = median(times);
            let mut v = json!({
                "name": format!(
                    "interplab_{}{}",
                    if forward_only { "forward" } else { "run_with_cache" },
                    if quantized { "_quantized" } else if bf16 { "_bf16" } else { "" }
                ),
                "median_s": med,
                "tokens_per_s": (a.batch * a.seq) as f64 / med,
                "batch": a.batch, "seq": a.seq, "runs": runs,
                "peak_rss_bytes": peak_rss(),
            });
            if !forward_only {
                v["cache_bytes"] = json!(cache_bytes);
            }
            Ok(v)
        }
        "patch" => {
            // scripts/peer/bench_peer.py `tl_patching_resid_pre`: the IOI pair without BOS,
            // 30 layers x 14 positions of resid_pre, normalised logit difference.
            let m = load(&a.model, WeightStorage::default())?;
            let enc = |s: &str| m.tokenizer.encode(s, false);
            let clean = enc("When Mary and John went to the store, John gave a drink to")?;
            let corrupted = enc("When Mary and John went to the store, Mary gave a drink to")?;
            let (answer, wrong) = (enc(" Mary")?, enc(" John")?);
            let metric = Metric::LogitDiff {
                answer: answer[0],
                wrong: wrong[0],
            };
            let mut times = Vec::new();
            let mut forwards = 0;
            for i in 0..=runs {
                // Setup (the clean and corrupted runs) is part of the timed work, as in TL's
                // measurement which receives a clean cache but runs every patched forward.
                let t0 = Instant::now();
                let s = PatchingSetup::new(&m.model, &clean, &corrupted, metric)?;
                let sweep = s.sweep_positions(PositionSite::ResidPre)?;
                forwards = sweep.patched_forwards;
                if i > 0 {
                    times.push(t0.elapsed().as_secs_f64());
                }
            }
            Ok(
                json!({"name": "interplab_patching_resid_pre", "median_s": median(times),
                      "runs": runs, "patched_forwards": forwards, "positions": clean.len()}),
            )
        }
        "heads" => {
            // scripts/peer/bench_peer.py `tl_head_detector`: 4 sequences of BOS + 50 random
            // single-word tokens repeated twice, three head types.
            let m = load(&a.model, WeightStorage::default())?;
            let pool = random_token_pool(&m.tokenizer, m.model.cfg.d_vocab, 50);
            let bos = m.tokenizer.encode("", true)?.first().copied();
            let seqs = repeated_random_tokens(&pool, 50, 4, 0, bos)?;
            let mut times = Vec::new();
            for i in 0..=runs {
                let t0 = Instant::now();
                head_scores(&m.model, &seqs, &HeadKind::ALL, HeadScoreOptions::default())?;
                if i > 0 {
                    times.push(t0.elapsed().as_secs_f64());
                }
            }
            Ok(
                json!({"name": "interplab_head_detector", "median_s": median(times), "runs": runs,
                      "sequences": seqs.len(), "seq_len": seqs[0].len()}),
            )
        }
        "generate" | "generate-q" | "generate-batch" | "generate-batch-q" => {
            // scripts/peer/bench_peer.py `hf_generate`: greedy, GENERATE_PROMPT prompt tokens
            // per row, exactly GENERATE_NEW new tokens (no stop ids), prefill included.
            let quantized = what.ends_with("-q");
            let storage = if quantized {
                WeightStorage::Quantized
            } else {
                WeightStorage::Dense
            };
            let batch = if what.starts_with("generate-batch") {
                a.batch
            } else {
                1
            };
            let mut m = load(&a.model, storage)?;
            if quantized {
                // As `interplab generate` decodes: Q4_1/Q8_0/Q5_0/Q4_K/Q6_K from their blocks, the rest dense.
                m.model.weights.dense_where_inexact()?;
            }
            let ids = bench_tokens(batch, GENERATE_PROMPT);
            let prompts: Vec<Vec<u32>> = ids.chunks(GENERATE_PROMPT).map(<[u32]>::to_vec).collect();
            let opts = GenerateOptions {
                max_new_tokens: GENERATE_NEW,
                ..Default::default()
            };
            m.model.generate_batch(&prompts, &opts, None)?; // warm-up
            let mut times = Vec::new();
            for _ in 0..runs {
                let t0 = Instant::now();
                let out = m.model.generate_batch(&prompts, &opts, None)?;
                times.push(t0.elapsed().as_secs_f64());
                if out.iter().any(|o| o.len() != GENERATE_NEW) {
                    bail!("generation stopped early");
                }
            }
            let med = median(times);
            Ok(json!({
                "name": format!("interplab_generate_b{batch}{}", if quantized { "_quantized" } else { "" }),
                "median_s": med,
                "tokens_per_s": (batch * GENERATE_NEW) as f64 / med,
                "batch": batch, "prompt_tokens": GENERATE_PROMPT, "new_tokens": GENERATE_NEW,
                "runs": runs, "peak_rss_bytes": peak_rss(),
            }))
        }
        "probe" => probe_fit(a, load),
        "sae-topk" | "sae-relu" | "sae-relu-sparse" | "sae-batchtopk" | "sae-jumprelu" => {
            sae_step(a, &what[4..], false)
        }
        "sae-topk-bf16" | "sae-relu-bf16" | "sae-relu-sparse-bf16" => {
            sae_step(a, &what[4..what.len() - 5], true)
        }
        "harvest" | "harvest-last" | "harvest-bf16" => harvest(
            a,
            what == "harvest-last",
            what == "harvest-bf16",
            load,
        ),
        "finetune" => finetune_step(a, false, load),
        "finetune-bf16" => finetune_step(a, true, load),
        other => bail!(
            "unknown measurement `{other}` (load, forward, cache, forward-q, cache-q, forward-bf16, cache-bf16, patch, heads, \
             generate, generate-q, generate-batch, generate-batch-q, probe, finetune, finetune-bf16, sae-topk, \
             sae-relu, sae-relu-sparse, sae-batchtopk, sae-jumprelu, sae-topk-bf16, sae-relu-bf16, \
             sae-relu-sparse-bf16, harvest, harvest-last, harvest-bf16)"
        ),
    }
}

/// `finetune`: one full fine-tuning step (forward, next-token loss, backward, fused AdamW) of
/// batch × seq tokens, as `interplab finetune` takes it and as `hf_train_step` of the peer
/// script does (lr 1e-5, no weight decay); one warm-up step, then `runs` timed steps.
/// `finetune-bf16`: the same with bf16 products (`--bf16-products`; the peer's
/// `hf_train_step_bf16` runs under bf16 autocast).
fn finetune_step(
    a: &Workload,
    bf16_products: bool,
    load: &mut dyn FnMut(&str, WeightStorage) -> anyhow::Result<LoadedModel>,
) -> anyhow::Result<serde_json::Value> {
    use interplab_train::finetune::{FinetuneConfig, Finetuner};
    let m = load(&a.model, WeightStorage::default())?;
    let stream = bench_tokens(64, a.seq);
    let runs = a.runs.max(1);
    let mut ft = Finetuner::new(
        &m.model,
        FinetuneConfig {
            steps: runs + 1,
            batch: a.batch,
            seq_len: a.seq,
            lr: 1e-5,
            warmup: 0,
            weight_decay: 0.0,
            seed: 0,
            bf16_products,
        },
    )?;
    let mut times = Vec::new();
    for i in 0..=runs {
        let t = Instant::now();
        ft.train_step(&stream)?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let med = median(times);
    Ok(json!({
        "name": if bf16_products { "interplab_finetune_step_bf16" } else { "interplab_finetune_step" },
        "median_s": med, "runs": runs,
        "tokens_per_s": (a.batch * a.seq) as f64 / med,
        "batch": a.batch, "seq_len": a.seq, "peak_rss_bytes": peak_rss(),
    }))
}

/// Examples of the `probe` measurement.
pub const PROBE_EXAMPLES: usize = 10_000;

/// `probe`: logistic (and control) and mean-difference probes on every layer's resid_post for
/// [`PROBE_EXAMPLES`] token positions of the shipped sonnets (label: the next token holds a
/// line break; whole sonnets held out), as `interplab probe` fits them. The activations are
/// harvested once, untimed; the timed part is fitting and scoring every layer.
fn probe_fit(
    a: &Workload,
    load: &mut dyn FnMut(&str, WeightStorage) -> anyhow::Result<LoadedModel>,
) -> anyhow::Result<serde_json::Value> {
    use interplab_analysis::probe::{probe_set, Features, LogisticOptions, Split};
    use rayon::prelude::*;
    let m = load(&a.model, WeightStorage::default())?;
    let n_layers = m.model.cfg.n_layers;
    let hooks: Vec<String> = (0..n_layers)
        .map(|l| format!("blocks.{l}.hook_resid_post"))
        .collect();
    let filter = NameFilter::new(&hooks);
    let bos = m.tokenizer.add_bos_default();
    let mut feats: Vec<Vec<f32>> = vec![Vec::new(); n_layers];
    let (mut labels, mut groups) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    for (doc, text) in interplab_core::corpus::load_corpus("sonnets")?
        .iter()
        .enumerate()
    {
        if labels.len() >= PROBE_EXAMPLES {
            break;
        }
        let toks = m.tokenizer.encode(text, bos)?;
        let first = usize::from(bos);
        if toks.len() < first + 2 {
            continue;
        }
        let take = (toks.len() - 1 - first).min(PROBE_EXAMPLES - labels.len());
        let input = Tensor::new(toks.as_slice(), m.model.device())?.unsqueeze(0)?;
        let (_, cache) = m.model.run_with_cache(&input, &filter)?;
        for (l, h) in hooks.iter().enumerate() {
            let t = cache.get(h)?.get(0)?.narrow(0, first, take)?;
            feats[l].extend(t.flatten_all()?.to_vec1::<f32>()?);
        }
        for p in first..first + take {
            labels.push(m.tokenizer.decode(&[toks[p + 1]])?.contains('\n'));
            groups.push(doc as u64);
        }
    }
    let harvest_s = t0.elapsed().as_secs_f64();
    let d = m.model.cfg.d_model;
    let split = Split::new(&labels, &groups, 0.25, 0);
    let opts = LogisticOptions::default();
    let mut times = Vec::new();
    let mut accuracy = Vec::new();
    let mut iterations = Vec::new();
    for i in 0..=a.runs.max(1) {
        let t = Instant::now();
        let sets: Vec<_> = feats
            .par_iter()
            .map(|f| probe_set(Features::new(f, d).expect("rows"), &split, &opts))
            .collect();
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
        accuracy = sets
            .iter()
            .map(|s| s.as_ref().map_or(f64::NAN, |s| s.logistic.accuracy))
            .collect();
        iterations = sets
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| s.fit.iterations))
            .collect();
    }
    Ok(json!({
        "name": "interplab_probe_fit", "median_s": median(times), "runs": a.runs.max(1),
        "examples": labels.len(), "layers": n_layers, "d": d, "harvest_s": harvest_s,
        "positives": labels.iter().filter(|&&l| l).count(),
        "held_out_accuracy_first_last": [accuracy.first(), accuracy.last()],
        "logistic_iterations": iterations,
    }))
}

/// L0 of the `sae-relu-sparse` measurement: about where ReLU-L1 SAEs on SmolLM2's layer 15
/// settle (docs/sae.md §Results: λ = 5 ended at 56).
pub const SAE_RELU_SPARSE_L0: usize = 64;

/// `sae-<arch>`: one SAE training step as `interplab sae train` takes it, on the problem of
/// `scripts/peer/sae_bench.py`: d_in 576 → 4,608 latents, a batch of 4,096 rows of N(0, 1)
/// data each scaled to norm √576, k = 32; two warm-up steps, then `runs` timed steps.
///
/// `sae-relu` times the step from initialisation, where half the latents fire; `sae-relu-sparse`
/// times it in the state training reaches, where a few dozen do: each latent's `b_enc` is set so
/// that it fires on [`SAE_RELU_SPARSE_L0`] / 4,608 of the batch's rows (the peer script builds the
/// same state with `--relu-l0`). With `bf16_products` (`sae-…-bf16`), the dense products take
/// bf16 inputs (`TrainConfig::bf16_products`; the peer's `--impl saelens_bf16` runs SAELens
/// under bf16 autocast).
fn sae_step(a: &Workload, arch: &str, bf16_products: bool) -> anyhow::Result<serde_json::Value> {
    let (arch, sparse) = match arch.strip_suffix("-sparse") {
        Some("relu") => ("relu", true),
        _ => (arch, false),
    };
    use interplab_sae::{Architecture, TrainConfig, Trainer};
    let (d, m, b) = (576usize, 4608usize, 4096usize);
    let mut rng = interplab_core::rng::SplitMix::new(0);
    let mut x: Vec<f32> = (0..b * d).map(|_| rng.normal() as f32).collect();
    for row in x.chunks_exact_mut(d) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v *= (d as f32).sqrt() / n);
    }
    let cfg = TrainConfig {
        arch: Architecture::parse(arch)?,
        d_in: d,
        d_sae: m,
        k: 32,
        batch_size: b,
        steps: 1000,
        sparsity_coefficient: if arch == "jumprelu" { 1e-3 } else { 5.0 },
        bf16_products,
        ..Default::default()
    };
    let mut tr = Trainer::new(cfg, &x)?;
    if sparse {
        tr.sae.b_enc = sparse_relu_bias(&tr.sae, &x, SAE_RELU_SPARSE_L0);
    }
    for _ in 0..2 {
        tr.step(&x, None);
    }
    let mut times = Vec::new();
    let mut l0 = Vec::new();
    for _ in 0..a.runs.max(1) {
        let t0 = Instant::now();
        let st = tr.step(&x, None);
        times.push(t0.elapsed().as_secs_f64());
        l0.push(st.l0);
    }
    let name = format!(
        "interplab_sae_step_{arch}{}{}",
        if sparse { "_sparse" } else { "" },
        if bf16_products { "_bf16" } else { "" }
    );
    Ok(json!({"name": name, "median_s": median(times), "l0": l0,
              "runs": a.runs.max(1), "d_in": d, "d_sae": m, "batch": b, "k": 32,
              "peak_rss_bytes": peak_rss()}))
}

/// `b_enc` such that latent i fires on the `l0 / d_sae` fraction of `x`'s rows with the largest
/// pre-activation `(x − b_dec)·W_enc[:, i]`: minus the `(1 − l0/d_sae)` quantile (the row at
/// index ⌊n·(1 − l0/d_sae)⌋ in ascending order).
fn sparse_relu_bias(sae: &interplab_sae::Sae, x: &[f32], l0: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let (d, m) = (sae.d_in, sae.d_sae);
    let n = x.len() / d;
    let at = ((n as f64 * (1.0 - l0 as f64 / m as f64)) as usize).min(n - 1);
    let xc: Vec<f32> = x
        .chunks_exact(d)
        .flat_map(|r| r.iter().zip(&sae.b_dec).map(|(a, b)| a - b))
        .collect();
    let mut pre = vec![0.0f32; n * m];
    interplab_sae::kernels::matmul(&mut pre, &xc, &sae.w_enc_t, n, d, m, false, true, false);
    let pre_t = interplab_sae::kernels::transpose(&pre, n, m);
    pre_t
        .par_chunks(n)
        .map(|col| {
            let mut col = col.to_vec();
            let (_, q, _) = col.select_nth_unstable_by(at, f32::total_cmp);
            -*q
        })
        .collect()
}

/// `harvest` / `harvest-last`: activations of `blocks.15.hook_resid_post` (the default SAE hook;
/// the model stops after block 15) or of the last block's `hook_resid_post` (a full-depth pass
/// without the unembedding), as `interplab sae train` harvests them, over the forward
/// benchmark's batch × seq tokens: rows per second. `harvest-bf16` is `harvest` with
/// `--dtype bf16` weights.
fn harvest(
    a: &Workload,
    last: bool,
    bf16: bool,
    load: &mut dyn FnMut(&str, WeightStorage) -> anyhow::Result<LoadedModel>,
) -> anyhow::Result<serde_json::Value> {
    use interplab_sae::store::{HarvestSpec, Harvester};
    let storage = if bf16 {
        WeightStorage::Bf16
    } else {
        WeightStorage::Dense
    };
    let m = load(&a.model, storage)?;
    let layer = if last {
        m.model.cfg.n_layers - 1
    } else {
        15.min(m.model.cfg.n_layers - 1)
    };
    let hook = format!("blocks.{layer}.hook_resid_post");
    let h = Harvester::new(
        &m,
        HarvestSpec {
            hook: hook.clone(),
            hook_out: None,
            exclude_special: false,
            batch_sequences: a.batch,
        },
    )?;
    let ids = bench_tokens(a.batch, a.seq);
    let seqs: Vec<Vec<u32>> = ids.chunks(a.seq).map(<[u32]>::to_vec).collect();
    h.harvest(&seqs, 0)?; // warm-up
    let mut times = Vec::new();
    for _ in 0..a.runs.max(1) {
        let t0 = Instant::now();
        let rows = h.harvest(&seqs, 0)?;
        times.push(t0.elapsed().as_secs_f64());
        if rows.len() != a.batch * a.seq {
            bail!(
                "harvested {} rows, expected {}",
                rows.len(),
                a.batch * a.seq
            );
        }
    }
    let med = median(times);
    Ok(
        json!({"name": format!("interplab_harvest_{}{}", if last { "last" } else { "l15" },
                               if bf16 { "_bf16" } else { "" }),
              "hook": hook, "median_s": med, "tokens_per_s": (a.batch * a.seq) as f64 / med,
              "batch": a.batch, "seq": a.seq, "runs": a.runs.max(1), "peak_rss_bytes": peak_rss()}),
    )
}
