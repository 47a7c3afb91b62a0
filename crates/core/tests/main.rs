//! Every integration test of this crate in one binary: one link instead of one per file
//! (smaller target directory, faster CI), and a model loaded by `common` is shared by all.
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod bf16_weights;
mod candle_patches;
mod common;
mod corpus_docs;
mod gemma3;
mod gguf_fuzz;
mod gradients;
mod hf_tiny;
mod hook_names;
mod quantized_weights;
mod qwen2;
mod safetensors_fuzz;
mod smollm2;
mod tokenizer;
mod weight_processing;
