//! Logit lens and direct logit attribution.
