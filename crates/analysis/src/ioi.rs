//! Indirect-object identification: prompt generation, logit difference, head patching.
