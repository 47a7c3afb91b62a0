#![allow(clippy::needless_range_loop)]
//! Interplab analysis: the instruments of circuit research, as library functions on a
//! [`interplab_core::model::HookedTransformer`]. Errors are [`interplab_core::Error`].
//!
//! Where things live:
//! - [`toy`]: hand-built models whose circuits are known by construction (test subjects).
//! - [`heads`]: previous-token, duplicate-token and induction scores (TransformerLens "mul").
//! - [`composition`]: OV/QK circuits and Q-, K-, V-composition scores.
//! - [`ablation`]: zero, mean and resample ablation of heads over a corpus.
//! - [`lens`]: logit lens and direct logit attribution.
//! - [`patching`]: activation patching sweeps and their metrics.
//! - [`attribution`]: attribution patching (the gradient approximation).
//! - [`ioi`]: indirect-object-identification prompts and analysis.
//! - [`trace`]: ROME's causal tracing.
//! - [`stats`]: next-token losses, means and standard errors, correlations, shared by the above;
//!   and the statistics of behavioural evals (clustered standard errors, bootstrap intervals,
//!   McNemar, paired t and paired bootstrap comparisons, minimum detectable effects).
//! - [`diff`]: per-token loss differences between two models.
//! - [`probe`]: linear probes (logistic, mean difference), AUROC and confidence intervals.
//! - [`steer`]: steering vectors (contrastive activation addition) and directional ablation.
//! - [`w2s`]: weak-to-strong generalisation with linear heads, PGR.
//! - [`memorise`]: verbatim-recall scores (prefix, edit distance) and model-to-model comparison.

pub mod ablation;
pub mod attribution;
pub mod composition;
pub mod diff;
pub mod final_patching;
pub mod heads;
pub mod ioi;
pub mod lens;
pub mod memorise;
pub mod patching;
pub mod probe;
pub mod stats;
pub mod steer;
pub mod toy;
pub mod trace;
pub mod w2s;
