//! Interplab core: a hooked transformer runtime on candle.
//!
//! Where things live:
//! - [`error`]: the one error type of the crate.
//! - [`config`]: the architecture-neutral model config (TransformerLens' `HookedTransformerConfig`).
//! - [`corpus`]: documents from text or JSONL files, and the shipped English corpus.
//! - [`gguf`]: a bounds-checked GGUF reader and dequantiser.
//! - [`qmatmul`]: products of a few activation rows with GGML blocks (the decode step).
//! - [`tokenizer`]: tokenizers from `tokenizer.json` or GGUF metadata, and chat templates.
//! - [`source`]: model sources (`path`, `pip:`, `sdist:`, `hf:`), aliases and the local cache.
//! - [`rng`]: the seeded generator every random choice uses (splitmix64).
//! - [`model`]: the hooked transformer itself, its hook points and activation cache.

pub mod atomic;
pub mod bf16;
pub mod config;
pub mod corpus;
pub mod error;
pub mod gguf;
pub mod kernels;
pub mod loader;
pub mod model;
pub mod qmatmul;
pub mod rng;
pub mod safetensors_file;
pub mod source;
pub mod threads;
pub mod tokenizer;

pub use error::{Error, Result};
