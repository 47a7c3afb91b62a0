//! Grokking modular addition (Power et al. 2022; Nanda et al. 2023).
