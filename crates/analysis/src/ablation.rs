//! Zero, mean and resample ablation of attention heads over a corpus.
