//! The error type of `interplab-core`.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the core crate, each with enough context for a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model, tokenizer or config file is malformed (bad magic, truncated, out-of-range offsets, ...).
    #[error("{path}: malformed file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// A downloaded or cached file does not have the expected sha256.
    #[error("{path}: sha256 mismatch: expected {expected}, found {actual}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The file is well formed but describes something Interplab does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A hook name or names filter that the model does not have.
    #[error("hook: {0}")]
    Hook(String),
    /// Bad input to a model call: token ids out of vocabulary, prompt too long, shapes that disagree.
    #[error("invalid input: {0}")]
    Input(String),
    /// Tokenizer construction or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Fetching a model (pip, hub) failed.
    #[error("fetch: {0}")]
    Fetch(String),
    /// Work that would not fit in its memory budget, refused before it starts.
    #[error(
        "{what} needs {needed} bytes ({}), but {available} bytes ({}) are available ({budget}); {hint}",
        human_bytes(*.needed),
        human_bytes(*.available)
    )]
    TooLarge {
        /// What was refused (`an activation cache of 700 hook points over 1×5000 tokens`).
        what: String,
        /// Bytes it would need.
        needed: u64,
        /// Bytes the budget allows.
        available: u64,
        /// Where the budget came from (`MemAvailable in /proc/meminfo`).
        budget: String,
        /// How to make it fit.
        hint: String,
    },
    /// An error from the tensor library.
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Malformed`] for `path`.
    pub fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// `1.5 GiB`, `3.2 MiB`, `800 B`: a byte count for people.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{b} B"),
        _ => format!("{v:.1} {}", UNITS[u]),
    }
}
