//! `interplab toy induction`: attention-only transformers of 1–4 layers trained from scratch,
//! watched for induction heads forming (RESEARCH.md §3). The experiment is
//! `interplab_lab::induction`; this file parses flags and prints.

use clap::{Args, ValueEnum};
use interplab_lab::induction::{Config, DataKind, Norm, Stopped};

use crate::exec::OutArgs;

/// `--data`: random tokens, a chunk repeated, or byte-level text (--corpus).
#[derive(Clone, Copy, ValueEnum)]
enum DataArg {
    Repeated,
    Corpus,
}

/// `--norm`.
#[derive(Clone, Copy, ValueEnum)]
enum NormArg {
    Layernorm,
    None,
}

/// Arguments of `interplab toy induction`.
#[derive(Args)]
pub struct InductionArgs {
    /// Depths to train, one model each (1 to 4 layers).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    layers: Vec<usize>,
    /// Training data: `repeated` (random tokens repeated) or `corpus` (byte-level text).
    #[arg(long, value_enum, default_value = "repeated")]
    data: DataArg,
    /// The text for `--data corpus`: `sonnets` (shipped) or a path to a text or JSONL file.
    #[arg(long, default_value = "sonnets")]
    corpus: String,
    #[arg(long, default_value_t = Config::default().d_model)]
    d_model: usize,
    #[arg(long, default_value_t = Config::default().heads)]
    heads: usize,
    /// Vocabulary size (text data needs 128: byte-level ASCII).
    #[arg(long, default_value_t = Config::default().vocab)]
    vocab: usize,
    /// Longest repeated chunk (repeated data).
    #[arg(long, default_value_t = Config::default().seq_len)]
    seq_len: usize,
    /// Shortest repeated chunk: each training sequence draws its chunk length from
    /// MIN..=seq_len, so the distance to the earlier copy varies (a fixed period lets a
    /// positional head fake induction).
    #[arg(long, default_value_t = Config::default().min_seq_len)]
    min_seq_len: usize,
    /// Copies of the chunk; the context is seq_len × repeats (repeated data).
    #[arg(long, default_value_t = Config::default().repeats)]
    repeats: usize,
    /// Context length for text data.
    #[arg(long, default_value_t = Config::default().n_ctx)]
    n_ctx: usize,
    /// Normalisation before each attention layer and the unembedding.
    #[arg(long, value_enum, default_value = "layernorm")]
    norm: NormArg,
    #[arg(long, default_value_t = Config::default().steps)]
    steps: usize,
    #[arg(long, default_value_t = Config::default().batch)]
    batch: usize,
    #[arg(long, default_value_t = Config::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = Config::default().weight_decay)]
    weight_decay: f64,
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// Analyse, snapshot the weights and save the training state every this many steps.
    #[arg(long, default_value_t = Config::default().checkpoint_every)]
    checkpoint_every: usize,
    /// Sequences in the evaluation batch (head scores, in-context learning).
    #[arg(long, default_value_t = Config::default().eval_seqs)]
    eval_seqs: usize,
    /// Continue from the run directory's checkpoints (needs --out).
    #[arg(long, requires = "out")]
    resume: bool,
    /// Stop after this many steps as if interrupted (for testing --resume).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    #[command(flatten)]
    out: OutArgs,
}

impl InductionArgs {
    fn config(&self) -> Config {
        Config {
            layers: self.layers.clone(),
            data: match self.data {
                DataArg::Repeated => DataKind::Repeated,
                DataArg::Corpus => DataKind::Corpus,
            },
            corpus: self.corpus.clone(),
            d_model: self.d_model,
            heads: self.heads,
            vocab: self.vocab,
            seq_len: self.seq_len,
            min_seq_len: self.min_seq_len,
            repeats: self.repeats,
            n_ctx: self.n_ctx,
            norm: match self.norm {
                NormArg::Layernorm => Norm::Layernorm,
                NormArg::None => Norm::None,
            },
            steps: self.steps,
            batch: self.batch,
            lr: self.lr,
            weight_decay: self.weight_decay,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            eval_seqs: self.eval_seqs,
            stop_after: self.stop_after,
        }
    }
}

/// Train, write the run directory and print what each depth formed.
pub fn run(a: InductionArgs) -> anyhow::Result<()> {
    let cfg = a.out.config_or(|| a.config())?;
    let (outcome, dir) = match crate::exec::execute(&cfg, &a.out, a.out.existing(a.resume)) {
        Err(e) if e.downcast_ref::<Stopped>().is_some() => {
            eprintln!("{e}");
            return Ok(());
        }
        r => r?,
    };
    let phases = interplab_lab::manifest::read(&dir.join("manifest.json"))?.phases;
    for s in &outcome.results.depths {
        let name = format!("train L{}", s.layers);
        let secs: f64 = phases
            .iter()
            .filter(|p| p.name == name)
            .map(|p| p.seconds)
            .sum();
        println!(
            "L{}: final loss {:.3}, {} ({secs:.1} s)",
            s.layers,
            s.final_loss,
            s.describe()
        );
    }
    println!("wrote {}", dir.display());
    Ok(())
}
