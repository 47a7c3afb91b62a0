//! Causal tracing (Meng et al. 2022, ROME): corrupt the subject, restore states.
