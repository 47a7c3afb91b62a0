//! Interplab train: small models trained from scratch on a CPU, and the glue to train them.
//! Errors are [`interplab_core::Error`].
//!
//! Where things live:
//! - [`optim`]: fused, in-place AdamW; [`optim_var`]: the same over candle `Var`s (models
//!   trained with autograd).
//! - [`checkpoint`]: atomic JSON checkpoints of a trainer's whole state, for bit-exact resume.
//! - [`linalg`]: row-major f32 matrix products (the `gemm` crate) for hand-written loops.
//! - [`superposition`]: Toy Models of Superposition (Elhage et al. 2022).
//! - [`grokking`]: modular addition and a one-layer transformer (Nanda et al. 2023).
//! - [`induction`]: attention-only transformers on repeated tokens or text (induction heads).
//! - [`finetune`]: full fine-tuning of a loaded model with binary checkpoints and resume.
//! - [`inverter`]: activation inverter ("ML Chinese whispers"): input tokens from a layer's
//!   activations.

pub mod checkpoint;
pub mod finetune;
pub mod grokking;
pub mod induction;
pub mod inverter;
pub mod linalg;
pub mod optim;
pub mod optim_var;
pub mod superposition;
