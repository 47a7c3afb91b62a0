//! Where the compute runs: the global rayon pool that the kernels, gemm and the bf16 products
//! share.

/// Runs `f` on a worker of the global rayon pool and returns its result.
///
/// A parallel op started from a pool worker begins at once on that thread; one started from any
/// other thread hands its work to the pool and sleeps until it is done — two context switches
/// per op, a fifth of a batch-1 decode step (`docs/performance.md`, Intel section: generation
/// 22.1 → 27.5 tokens/s on one thread, 41.2 → 48.8 on two, from this alone). Callers that run a
/// whole experiment (the CLI's commands, the workbench's started runs) wrap it in this. Build
/// the global pool first if its size or stack matters: this uses whatever pool exists.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Builds the global pool with `threads` workers (`None`: rayon's default, one per CPU) and
/// the main thread's 8 MiB stack, since [`on_pool`] runs whole commands on them. Also sets
/// `RAYON_NUM_THREADS`, which candle reads at each parallel op. A pool already built stays.
pub fn build_global_pool(threads: Option<usize>) {
    if let Some(n) = threads {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .stack_size(8 << 20)
        .build_global();
}

#[cfg(test)]
mod tests {
    #[test]
    fn on_pool_runs_on_a_worker_and_returns_the_result() {
        assert!(rayon::current_thread_index().is_none());
        let (inside, value) = super::on_pool(|| (rayon::current_thread_index(), 6 * 7));
        assert!(inside.is_some());
        assert_eq!(value, 42);
    }
}
