//! Interplab train: small models trained from scratch on a CPU, and the glue to train them.
//! Errors are [`interplab_core::Error`].
//!
//! Where things live:
//! - [`optim`]: fused, in-place AdamW.
//! - [`checkpoint`]: atomic JSON checkpoints of a trainer's whole state, for bit-exact resume.
//! - [`superposition`]: Toy Models of Superposition (Elhage et al. 2022).
//! - [`inverter`]: activation inverter ("ML Chinese whispers"): input tokens from a layer's activations.

pub mod checkpoint;
pub mod inverter;
pub mod optim;
pub mod superposition;
