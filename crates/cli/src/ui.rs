//! Process-wide settings of the CLI (set once in main from the global flags), model loading
//! for the commands that are not experiments, and the fetch progress display.

use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use interplab_core::loader::WeightStorage;
use interplab_core::source::FetchEvent;

/// How every command loads weights: the global `--quantized-weights` and `--dtype` flags.
static WEIGHT_STORAGE: OnceLock<WeightStorage> = OnceLock::new();

/// Set the weight storage for this process (main does it once, from the flags).
pub fn set_weight_storage(storage: WeightStorage) {
    let _ = WEIGHT_STORAGE.set(storage);
}

/// The weight storage the flags asked for.
pub fn weight_storage() -> WeightStorage {
    WEIGHT_STORAGE.get().copied().unwrap_or_default()
}

/// Resolve (fetching if needed) and load a model for a command that is not an experiment
/// (`info`, `bench`, `generate`), with progress on stderr.
pub fn load_model(source: &str) -> anyhow::Result<interplab_core::loader::LoadedModel> {
    load_model_with(source, weight_storage())
}

/// [`load_model`] with an explicit weight storage.
pub fn load_model_with(
    source: &str,
    storage: WeightStorage,
) -> anyhow::Result<interplab_core::loader::LoadedModel> {
    let mut bar = None;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("loading {source}"));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let loaded =
        interplab_lab::context::load_model(source, &candle_core::Device::Cpu, storage, &mut |e| {
            show_progress(&mut bar, e)
        });
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    spinner.finish_and_clear();
    loaded
}

/// Turns one fetch event into progress-bar updates; the bar is made on the first event that
/// means work.
pub fn show_progress(bar: &mut Option<ProgressBar>, event: FetchEvent) {
    if event == FetchEvent::Done {
        if let Some(bar) = bar.take() {
            bar.finish_and_clear();
        }
        return;
    }
    let bar = bar.get_or_insert_with(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(spinner_style());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    match event {
        FetchEvent::Started { what } => bar.set_message(format!("fetching {what}")),
        FetchEvent::Downloading { package } => {
            bar.set_style(spinner_style());
            bar.set_message(format!("downloading {package}"));
        }
        FetchEvent::Extracting { bytes_done, total } => {
            if bar.length() != Some(total) {
                bar.set_message("extracting");
                bar.set_length(total);
                bar.set_style(bytes_style());
            }
            bar.set_position(bytes_done);
        }
        FetchEvent::Verifying => {
            bar.set_style(spinner_style());
            bar.set_message("verifying sha256");
        }
        FetchEvent::Done => {}
    }
}

/// A spinner with a message and the elapsed time.
fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template")
}

/// A bar counting bytes.
fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})")
        .expect("valid template")
        .progress_chars("=> ")
}

/// Process-wide settings made before anything else runs: the default SIGPIPE, mimalloc's
/// options, candle's thread-pool spin limit.
pub fn set_up_process() {
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
        // Back the heap with 2 MiB pages: the kernel otherwise faults and zeroes transparent
        // huge pages afresh for the multi-megabyte packing buffers `gemm` allocates on every
        // call (a quarter of a grokking epoch's CPU time went to `clear_page`).
        libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1);
    }
    // candle's elementwise ops run on their own thread pool, whose idle workers spin before
    // parking; on two cores a spinning worker takes a core from the gemm threads that run
    // next. Parking at once was faster everywhere measured (AMD EPYC, 2 threads: TruthfulQA
    // 2-shot scoring 10.9 → 9.9 s, generation 48 → 52 tokens/s, batch forward 600 → 624
    // tokens/s). The environment variable, when set, wins.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
    // Better still, no second pool: with `CANDLE_NUM_THREADS=1` candle's element-wise ops run
    // on the calling thread, and the cores belong to rayon (our kernels, gemm, the bf16
    // products). Intel Xeon (AMX), 2 threads, `interplab bench`, two alternating runs each:
    // forward 734/665 → 763/778 tokens/s, `--dtype bf16` forward 1,145/1,055 → 1,277/1,253,
    // run_with_cache 615/633 → 669/657, generation unchanged (41/39, batch 8 163/162).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}
