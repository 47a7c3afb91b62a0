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
