//! Every integration test of this crate in one binary: one link instead of one per file
//! (smaller target directory, faster CI), and a model loaded by `common` is shared by all.
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod ablate;
mod common;
mod compose;
mod diff;
mod eval;
mod eval_constitution;
mod eval_framing;
mod eval_password;
mod eval_persona;
mod eval_refusal;
mod eval_sensitivity;
mod eval_sycophancy;
mod finetune;
mod framework;
mod grokking;
mod heads;
mod induction;
mod ioi;
mod lens;
mod memorise;
mod patch;
mod probe;
mod prompt;
mod steer;
mod superposition;
mod trace;
mod w2s;
mod whispers;
