//! Interplab train: small models trained from scratch on a CPU, and the glue to train them.
//! Errors are [`interplab_core::Error`].
//!
//! Where things live:
//! - [`optim`]: fused, in-place AdamW.
//! - [`checkpoint`]: seeded, resumable training state (weights, optimiser moments, step, RNG).
//! - [`superposition`]: Toy Models of Superposition (Elhage et al. 2022).
//! - [`grokking`]: modular addition (Nanda et al. 2023).
//! - [`induction`]: attention-only transformers forming induction heads.
//! - [`whispers`]: an inverter reconstructing input tokens from a layer's activations.

pub mod checkpoint;
pub mod grokking;
pub mod induction;
pub mod optim;
pub mod superposition;
pub mod whispers;
