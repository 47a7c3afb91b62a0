//! Attention-only transformers trained to form induction heads (Olsson et al. 2022).
