//! Every integration test of this crate in one binary: one link instead of one per file
//! (smaller target directory, faster CI), and a model loaded by `common` is shared by all.
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod checkpoint;
mod grokking;
mod induction;
mod inverter;
mod optim;
mod superposition;
