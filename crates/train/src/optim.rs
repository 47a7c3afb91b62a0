//! Fused in-place AdamW.
