//! Dictionary learning on a model's activations: sparse autoencoders (ReLU + L1, TopK,
//! BatchTopK, JumpReLU) and transcoders.
//!
//! Every definition (architectures, the training step, the metrics) is written out in
//! `docs/sae.md`; each module's doc says which part it implements.
//!
//! - [`sae`]: the [`Sae`] value, encoding and decoding;
//! - [`train`]: the training step, initialisation, checkpoints;
//! - [`metrics`]: L0, FVU, dead and dense latents, shrinkage;
//! - [`kernels`]: the CPU products with sparse codes;
//! - [`io`]: safetensors reading and writing;
//! - [`saelens`]: SAEs on disk in SAELens' layout;
//! - [`store`]: sequences, harvesting, the shuffle buffer, activation shards;
//! - [`evaluate`]: reconstruction metrics and CE recovered / KL with the SAE spliced in;
//! - [`hooked`]: SAEs attached to a model as hook points, steering directions.

pub mod evaluate;
pub mod hooked;
pub mod io;
pub mod kernels;
pub mod metrics;
pub mod sae;
pub mod saelens;
pub mod store;
pub mod train;

pub use sae::{Architecture, Codes, Sae};
pub use train::{StepStats, TrainConfig, Trainer};
