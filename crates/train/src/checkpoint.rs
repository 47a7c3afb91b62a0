//! Training state on disk, written atomically, for resuming an interrupted run.
//!
//! A trainer's whole state (weights, optimiser moments, step, metric history; data streams are
//! functions of (seed, step), so no generator state is needed) is one serde value, saved as JSON:
//! serde_json writes every f32 in its shortest round-tripping form, so a save and load are
//! bit-exact, and a resumed run ends with the same weights as an uninterrupted one. The file is
//! written to a temporary name in the same directory and renamed: an interruption mid-write
//! leaves the previous checkpoint intact.

use std::path::Path;

use interplab_core::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};

/// Save `state` to `path` atomically.
pub fn save<T: Serialize>(path: &Path, state: &T) -> Result<()> {
    let bytes = serde_json::to_vec(state)
        .map_err(|e| Error::Input(format!("serialising checkpoint: {e}")))?;
    interplab_core::atomic::write_atomic(path, &bytes)
}

/// Load a checkpoint; a missing, truncated or foreign file is an error.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
        path: path.to_path_buf(),
        reason: format!("not a checkpoint of this run: {e}"),
    })
}
