//! Every integration test of this crate in one binary: one link instead of one per file
//! (smaller target directory, faster CI), and a model loaded by `common` is shared by all.
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod analysis;
mod cli;
mod commands;
mod common;
mod diff;
mod lab;
mod sae;
mod toy_grokking;
mod toy_induction;
mod toy_superposition;
mod trace;
mod whispers;
