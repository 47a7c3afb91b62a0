//! Per-token loss of two models that share a tokenizer, and where they differ most.
